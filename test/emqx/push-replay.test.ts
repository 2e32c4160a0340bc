/**
 * EMQX mode's replay of the push journal (src/emqx/push-replay.ts) decides whose pushes it
 * publishes: only those of runs that are over — never this run's, never a live replica's, never one younger than
 * a replica needs to appear in the list — on a real SQLite store, with the broker's side a
 * recording publisher (the whole path through EMQX's REST API: test/push-journal.test.ts).
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import type { BrokerMessage } from '../../src/devices/dispatcher.js'
import { PushJournal } from '../../src/devices/push-journal.js'
import { PushReplay, PUSH_ORPHAN_AGE_MS } from '../../src/emqx/push-replay.js'
import { createLogger } from '../../src/observability/logger.js'
import { Lease } from '../../src/replicas/lease.js'
import type { ReplicaView } from '../../src/replicas/replica-keeper.js'
import { replicaRunId } from '../../src/store/coordination.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { StoredPush } from '../../src/store/store.js'
import { eventually, tempDir } from '../helpers/hub.js'

const NOW = 10_000_000
const OLD = NOW - PUSH_ORPHAN_AGE_MS - 1

const view = (node: string, startedAt: number, live: boolean): ReplicaView => ({ node, startedAt, live, self: false, address: null, lastSeen: live ? NOW : 0, logPosition: 0 })

describe("EMQX mode's replay of the push journal", () => {
  it('publishes and deletes the pushes of runs that are over, and only those', async (t) => {
    const dataDir = tempDir('iothub-push-journal-unit-')
    const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000, replica: replicaRunId('self', 5000) })
    t.after(async () => {
      await store.close()
      rmSync(dataDir, { recursive: true, force: true })
    })
    await store.load()
    const published: string[] = []
    let refuse = false
    const publisher = {
      async publish(message: BrokerMessage) {
        if (refuse) throw new Error('EMQX answered 503')
        published.push(Buffer.from(message.payload).toString())
      }
    }
    const replicas = [view('live', 1000, true), view('restarted', 3000, true), view('gone', 2000, false), view('self', 4000, true)]
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const replay = new PushReplay(store, publisher, lease, async () => replicas, 'self', createLogger('silent'))
    const journal = new PushJournal(store, createLogger('silent'))

    const push = (run: string, seq: number, at: number): StoredPush => ({ run, seq, topic: 't', payload: Buffer.from(`${run.split('#')[0]}-${seq}`), qos: 1, at })
    const liveRun = replicaRunId('live', 1000)
    await store.commit([
      { op: 'push.put', push: push(liveRun, 1, OLD) }, // a live replica's: may still be on its way
      { op: 'push.put', push: push(replicaRunId('restarted', 1000), 1, OLD) }, // its node runs again, as another run
      { op: 'push.put', push: push(replicaRunId('gone', 2000), 1, OLD) }, // not heard of lately
      { op: 'push.put', push: push(replicaRunId('unlisted', 4000), 1, OLD) }, // forgotten, or never listed
      { op: 'push.put', push: push(replicaRunId('gone', 2000), 2, NOW - 10) }, // too young to tell
      { op: 'push.put', push: push('not-a-run-id', 1, OLD) },
      { op: 'push.put', push: push(replicaRunId('self', 4000), 1, OLD) } // an earlier run of this node, listed live still
    ])
    // this run's own, recorded as the dispatcher does: never published by the replay
    const own = journal.record({ topic: 't', payload: Buffer.from('own-1'), qos: 1, retain: false })
    await store.commit([own.mutation])

    refuse = true
    assert.equal(await replay.publishLeft(NOW), 0, 'EMQX refusing: nothing published')
    assert.equal((await store.readPushes(undefined, 100)).length, 8, 'and nothing deleted')
    refuse = false
    assert.equal(await replay.publishLeft(NOW), 5)
    assert.deepEqual(published.sort(), ['gone-1', 'not-a-run-id-1', 'restarted-1', 'self-1', 'unlisted-1'])
    const left = (await store.readPushes(undefined, 100)).map((p) => Buffer.from(p.payload).toString()).sort()
    assert.deepEqual(left, ['gone-2', 'live-1', 'own-1'])

    // later: the young one is old enough; the live replica still runs; this run's own is routed
    assert.equal(await replay.publishLeft(NOW + PUSH_ORPHAN_AGE_MS), 1)
    assert.deepEqual(published.sort(), ['gone-1', 'gone-2', 'not-a-run-id-1', 'restarted-1', 'self-1', 'unlisted-1'])
    journal.routed(own.seq)
    const remaining = async () => (await store.readPushes(undefined, 100)).map((p) => Buffer.from(p.payload).toString())
    await eventually(async () => (await remaining()).length === 1, 5000, "this run's routed push deleted")
    assert.deepEqual(await remaining(), ['live-1'])
  })
})
