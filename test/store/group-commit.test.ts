/**
 * Group commit's rule for a batch that may have committed: its COMMIT's answer was lost, so the
 * writer cannot say. Every caller hears so, and none is tried again alone — a decision made again
 * on rows that already hold its own result would answer its caller wrongly. (The PostgreSQL
 * writer raises StoreCommitUnknownError for exactly that case; a failure known to have stored
 * nothing is still retried caller by caller, so only the guilty caller is refused.)
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Device } from '../../src/domain/device.js'
import type { Decision } from '../../src/store/decision.js'
import { GroupCommitter, type BatchItem } from '../../src/store/group-commit.js'
import { StoredState } from '../../src/store/stored-state.js'
import { StoreCommitUnknownError } from '../../src/store/store.js'

/**
 * A writer over a map of devices that makes its batches' decisions, as the PostgreSQL writer
 * does. Its first batch fails with `failFirst`'s error — after storing (`storedThenLost`) or not.
 */
function devicesWriter(failFirst: (cause: Error) => Error, storedThenLost: boolean) {
  const stored = new Map<string, Device>()
  let batches = 0
  return {
    stored,
    get batches() {
      return batches
    },
    async writeBatch(items: readonly BatchItem[]) {
      batches++
      const view = new StoredState()
      for (const item of items) if ('decision' in item) for (const id of item.decision.reads.devices ?? []) view.putDevice(id, stored.get(id))
      const writes = new Map<string, Device>()
      const decisions = items.map((item) => {
        if (!('decision' in item)) return undefined
        try {
          const decided = item.decision.decide(view)
          view.apply(decided.mutations)
          for (const m of decided.mutations) if (m.op === 'device.put') writes.set(m.device.id, m.device)
          return { result: decided.result }
        } catch (error) {
          return { error: error as Error }
        }
      })
      if (batches > 1 || storedThenLost) for (const [id, device] of writes) stored.set(id, device)
      if (batches === 1) throw failFirst(new Error('Connection terminated unexpectedly'))
      return { decisions }
    }
  }
}

const create = (id: string): Decision<string> => ({
  reads: { devices: [id] },
  decide: (view) => {
    if (view.device(id) !== undefined) throw new Error(`duplicate ${id}`)
    return { mutations: [{ op: 'device.put', device: { id } as Device }], result: 'created' }
  }
})

describe('group commit, when a batch may have committed', () => {
  it('refuses every caller with "outcome unknown" and tries none again', async () => {
    const writer = devicesWriter((cause) => new StoreCommitUnknownError(cause), true)
    const committer = new GroupCommitter(writer, { timeoutMs: 5000 })
    const results = await Promise.allSettled([committer.decide(create('a')), committer.decide(create('b'))])
    assert.deepEqual(
      results.map((r) => (r.status === 'rejected' ? (r.reason as Error).name : r.value)),
      ['StoreCommitUnknownError', 'StoreCommitUnknownError']
    )
    assert.equal(writer.batches, 1, 'not run again')
    assert.deepEqual([...writer.stored.keys()], ['a', 'b'], 'what was stored stays stored')
  })

  it('tries each caller again alone after a failure that stored nothing', async () => {
    const writer = devicesWriter((cause) => cause, false)
    const committer = new GroupCommitter(writer, { timeoutMs: 5000 })
    const results = await Promise.allSettled([committer.decide(create('a')), committer.decide(create('b'))])
    assert.deepEqual(
      results.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
      ['created', 'created']
    )
    assert.equal(writer.batches, 3, 'the shared batch, then each caller alone')
  })
})
