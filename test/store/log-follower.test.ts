/**
 * The log follower's order: entries reach the caches once each, in log order, a replica's own
 * batch straight from its commit when it is next and after the others' entries before it when
 * it is not — told where each was committed — a log head it is asked to catch up with is read up
 * to without a notification, and a log pruned past the follower's position is reported, not
 * skipped over. The reader is a list standing for the change_log table (the
 * stores' own reading of it is in the store contract).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { LogEntry } from '../../src/store/change-log.js'
import { LogFollower, type LogOrigin } from '../../src/store/log-follower.js'

const entry = (seq: number): LogEntry => ({ seq, at: 1_700_000_000_000 + seq, change: { op: 'session.delete', id: `c${seq}` } })

function follower(log: LogEntry[]): { follower: LogFollower; applied: [number, LogOrigin][] } {
  const applied: [number, LogOrigin][] = []
  const f = new LogFollower({ readLog: async (after, limit) => log.filter((e) => e.seq > after).slice(0, limit) })
  return { follower: f, applied }
}

describe('LogFollower', () => {
  it("applies its own batch after the entries before it that other replicas committed, each told where it came from", async () => {
    const log = [1, 2, 3, 4, 5].map(entry)
    const { follower: f, applied } = follower(log)
    f.start(0, (entries, origin) => applied.push(...entries.map((e): [number, LogOrigin] => [e.seq, origin])))
    // our batch is 4–5; 1–3 are another replica's, not read yet
    await f.committed({ previous: 3, entries: [entry(4), entry(5)] })
    assert.deepEqual(applied, [
      [1, 'elsewhere'],
      [2, 'elsewhere'],
      [3, 'elsewhere'],
      [4, 'here'],
      [5, 'here']
    ])
    assert.equal(f.applied, 5)
    // the next batch of ours is next in order: applied at once, read from nowhere
    log.push(entry(6))
    await f.committed({ previous: 5, entries: [entry(6)] })
    assert.deepEqual(applied.at(-1), [6, 'here'])
    f.stop()
  })

  it('reads on up to a log head it is asked to catch up with, unnotified; gives up on one it cannot reach in time', async () => {
    const log = [1, 2].map(entry)
    const { follower: f, applied } = follower(log)
    f.start(2, (entries, origin) => applied.push(...entries.map((e): [number, LogOrigin] => [e.seq, origin])))
    // another replica commits 3–4 and its notification is lost: the head read after a query says 4
    log.push(entry(3), entry(4))
    assert.equal(await f.caughtUp(4, 60_000), true)
    assert.deepEqual(applied, [
      [3, 'elsewhere'],
      [4, 'elsewhere']
    ])
    assert.equal(await f.caughtUp(4, 60_000), true, 'a head applied already answers at once')
    // a head the log does not hold yet: false at the deadline, and the follower goes on as before
    assert.equal(await f.caughtUp(5, 20), false)
    log.push(entry(5))
    assert.equal(await f.caughtUp(5, 60_000), true)
    assert.equal(f.applied, 5)
    f.stop()
  })

  it('reports a log pruned past its position instead of skipping what it never applied', async () => {
    const { follower: f, applied } = follower([21, 22].map(entry))
    f.start(10, (entries) => applied.push(...entries.map((e): [number, LogOrigin] => [e.seq, 'here'])))
    for (let i = 0; i < 100 && f.lastError === null; i++) await new Promise((resolve) => setImmediate(resolve))
    assert.match(f.lastError?.message ?? '', /no longer holds entries 11–20/)
    assert.deepEqual(applied, [], 'nothing applied past the hole')
    assert.equal(f.applied, 10)
    f.stop()
  })
})
