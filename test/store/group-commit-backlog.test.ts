/**
 * Group commit under a backlog: a caller whose deadline is too near for the writer to commit it
 * safely (`commitMarginMs`, PostgreSQL's guard before COMMIT) is refused as timed out when its
 * batch would begin, and never handed to the writer — so a writer that fell behind spends its
 * next batch on callers it can still commit, instead of beginning batches it must abandon.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { GroupCommitter, type BatchItem } from '../../src/store/group-commit.js'
import type { Mutation } from '../../src/store/store.js'
import { eventually } from '../helpers/hub.js'

const TIMEOUT_MS = 10_000
const MARGIN_MS = 4_000
/** How far inside the margin B is when its batch would begin: more than B's own commit() takes to stamp its deadline. */
const INSIDE_MS = 200

/** A writer that records its batches (by session id) and holds the first one until released. */
function heldWriter() {
  const batches: string[][] = []
  let release = (): void => undefined
  const held = new Promise<void>((resolve) => (release = resolve))
  return {
    batches,
    release: () => release(),
    async writeBatch(items: readonly BatchItem[]) {
      batches.push(items.flatMap((item) => ('mutations' in item ? item.mutations.map((m) => (m.op === 'session.delete' ? m.id : '?')) : [])))
      if (batches.length === 1) await held
      return {}
    }
  }
}

const end = (id: string): Mutation[] => [{ op: 'session.delete', id }]

/** A commits and is held; B queues behind it until less than the margin is left of its deadline; then D comes, and A is released. */
async function backlog(commitMarginMs: number) {
  const writer = heldWriter()
  const committer = new GroupCommitter(writer, { timeoutMs: TIMEOUT_MS, maxInFlight: 1, commitMarginMs })
  const a = committer.commit(end('a'))
  await eventually(() => writer.batches.length === 1, 10_000)
  // timed from B's own commit, however long the machine took to get here; B then still has
  // MARGIN_MS − INSIDE_MS (3.8 s) before its deadline, which a busy machine does not outrun
  const bAt = Date.now()
  const b = committer.commit(end('b'))
  b.catch(() => undefined)
  await eventually(() => Date.now() - bAt >= TIMEOUT_MS - MARGIN_MS + INSIDE_MS, 20_000)
  const d = committer.commit(end('d'))
  writer.release()
  const settled = await Promise.allSettled([a, b, d])
  return { batches: writer.batches, outcomes: settled.map((s) => (s.status === 'fulfilled' ? 'committed' : (s.reason as Error).name)) }
}

describe('group commit under a backlog', () => {
  it('refuses a caller with too little time left before its batch begins, and commits the ones after it', async () => {
    const [withMargin, without] = await Promise.all([backlog(MARGIN_MS), backlog(0)])
    assert.deepEqual(withMargin.outcomes, ['committed', 'StoreTimeoutError', 'committed'])
    assert.deepEqual(withMargin.batches, [['a'], ['d']], 'b never reached the writer')
    // the same backlog with no margin: b is handed over with the time it has left
    assert.deepEqual(without.outcomes, ['committed', 'committed', 'committed'])
    assert.deepEqual(without.batches, [['a'], ['b', 'd']])
  })
})
