/**
 * The command turns V8's concurrent marking off on a machine of at most two cpus, where its
 * helper threads would take the store's writer thread's cpu, and leaves V8's default on more; a
 * `--concurrent-marking` or `--no-concurrent-marking` the operator gave node wins. The flag setter
 * is handed in, so this process's own V8 is left alone.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FEW_CPUS, markingFlags, markWhereCpusAllow } from '../src/cli/gc-marking.js'
import type { NodeFlags } from '../src/cli/node-flags.js'

const plainNode: NodeFlags = { execArgv: ['--max-semi-space-size=32'], nodeOptions: undefined }

function decide(cpus: number, node: NodeFlags = plainNode): string[] {
  const set: string[] = []
  const answer = markWhereCpusAllow(cpus, node, (flags) => set.push(flags))
  assert.deepEqual(answer, set, 'answers exactly the flags it set')
  return set
}

describe('the command marks on the main thread where the cpus are few', () => {
  it('sets --no-concurrent-marking on one or two cpus', () => {
    for (const cpus of [1, FEW_CPUS]) assert.deepEqual(decide(cpus), ['--no-concurrent-marking'], `${cpus} cpus`)
  })

  it("leaves V8's default on more cpus", () => {
    for (const cpus of [FEW_CPUS + 1, 8, 64]) assert.deepEqual(decide(cpus), [], `${cpus} cpus`)
  })

  it("keeps the operator's own choice, either way, on node's command line or in NODE_OPTIONS, in either spelling", () => {
    assert.deepEqual(decide(2, { execArgv: ['--concurrent-marking'], nodeOptions: undefined }), [])
    assert.deepEqual(decide(2, { execArgv: ['--no-concurrent-marking'], nodeOptions: undefined }), [])
    assert.deepEqual(decide(2, { execArgv: [], nodeOptions: '--max-old-space-size=2048 --concurrent_marking' }), [])
    assert.deepEqual(decide(2, { execArgv: [], nodeOptions: '--no_concurrent_marking' }), [])
  })

  it('does not take a flag that only begins with the same words for the operator\'s choice', () => {
    assert.deepEqual(decide(2, { execArgv: ['--concurrent-marking-max-worker-num=1'], nodeOptions: undefined }), ['--no-concurrent-marking'])
  })

  it('is what the benchmarks start their hubs with on such a machine', () => {
    assert.deepEqual(markingFlags(2), ['--no-concurrent-marking'])
    assert.deepEqual(markingFlags(4), [])
  })
})
