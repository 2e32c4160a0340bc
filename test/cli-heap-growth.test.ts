/**
 * The command bounds V8's old-generation growth where the hub's memory is a cache (EMQX mode on
 * PostgreSQL), and nowhere else; a `--heap-growing-percent` the operator gave node wins. The flag
 * setter is handed in, so this process's own V8 is left alone.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { boundHeapGrowth, BOUNDED_HEAP_GROWING_PERCENT } from '../src/cli/heap-growth.js'
import type { NodeFlags } from '../src/cli/node-flags.js'

const plainNode: NodeFlags = { execArgv: ['--max-semi-space-size=32'], nodeOptions: undefined }

function decide(config: { broker: 'embedded' | 'emqx'; store: 'sqlite' | 'postgres' }, node: NodeFlags = plainNode): { answer: number | null; set: string[] } {
  const set: string[] = []
  const answer = boundHeapGrowth(config, node, (flags) => set.push(flags))
  return { answer, set }
}

describe('the command bounds the heap where memory is a cache', () => {
  it('sets --heap-growing-percent for an EMQX-mode replica on PostgreSQL', () => {
    const { answer, set } = decide({ broker: 'emqx', store: 'postgres' })
    assert.equal(answer, BOUNDED_HEAP_GROWING_PERCENT)
    assert.deepEqual(set, [`--heap-growing-percent=${BOUNDED_HEAP_GROWING_PERCENT}`])
  })

  it('leaves V8 alone where the process holds the fleet (the embedded broker, SQLite)', () => {
    for (const config of [
      { broker: 'embedded', store: 'sqlite' },
      { broker: 'embedded', store: 'postgres' },
      { broker: 'emqx', store: 'sqlite' }
    ] as const) {
      assert.deepEqual(decide(config), { answer: null, set: [] }, JSON.stringify(config))
    }
  })

  it("keeps the operator's own flag, on node's command line or in NODE_OPTIONS, in either spelling", () => {
    const emqx = { broker: 'emqx', store: 'postgres' } as const
    assert.deepEqual(decide(emqx, { execArgv: ['--heap-growing-percent=20'], nodeOptions: undefined }), { answer: null, set: [] })
    assert.deepEqual(decide(emqx, { execArgv: [], nodeOptions: '--max-old-space-size=2048 --heap_growing_percent=80' }), { answer: null, set: [] })
  })
})
