/**
 * EMQX mode's replay of the push journal (src/emqx/push-replay.ts) decides whose pushes it
 * publishes: only those of runs that are over — an earlier run of its own node at once, a run no
 * longer listed live once its pushes are old enough — never this run's, never a live replica's;
 * a push EMQX refuses for good is dropped and counted, any other refusal leaves it and the rest
 * of its run for the next look. On a real SQLite store, with EMQX's side a recording publisher (the whole path through
 * EMQX's REST API: test/push-journal.test.ts).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { BrokerMessage } from '../../src/devices/dispatcher.js'
import { PushJournal } from '../../src/devices/push-journal.js'
import { EmqxApiError, publishRefusedForGood } from '../../src/emqx/emqx-rest.js'
import { PushReplay, PUSH_ORPHAN_AGE_MS } from '../../src/emqx/push-replay.js'
import { createLogger } from '../../src/observability/logger.js'
import { HubMetrics } from '../../src/observability/metrics.js'
import { Lease } from '../../src/replicas/lease.js'
import type { ReplicaView } from '../../src/replicas/replica-keeper.js'
import { replicaRunId } from '../../src/store/coordination.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { StoredPush } from '../../src/store/store.js'
import { eventually } from '../helpers/hub.js'
import { openTestStore } from '../helpers/sqlite-store.js'
import { asJournaled } from '../helpers/pushes.js'

const NOW = 100_000_000
const OLD = NOW - PUSH_ORPHAN_AGE_MS - 1
const YOUNG = NOW - 1000

const view = (node: string, startedAt: number, live: boolean): ReplicaView => ({ node, startedAt, live, self: false, address: null, lastSeen: live ? NOW : 0, logPosition: 0 })
const text = (p: { payload: Uint8Array }): string => Buffer.from(p.payload).toString()

const openStore = (t: { after: (fn: () => Promise<void> | void) => void }): Promise<SqliteStore> => openTestStore(t, 'iothub-push-replay-', { replica: replicaRunId('self', 5000) })

async function storedPayloads(store: SqliteStore): Promise<string[]> {
  const left: string[] = []
  for (const run of await store.pushRuns()) left.push(...(await store.readPushes(run, 0, 1000)).map(text))
  return left.sort()
}

describe("EMQX mode's replay of the push journal", () => {
  it('publishes and removes the pushes of runs that are over, and only those', async (t) => {
    const store = await openStore(t)
    const published: string[] = []
    let refusal: Error | undefined
    const publisher = {
      async publish(message: BrokerMessage) {
        if (refusal) throw refusal
        published.push(Buffer.from(message.payload).toString())
      }
    }
    const replicas = [view('live', 1000, true), view('restarted', 3000, true), view('gone', 2000, false), view('self', 4000, true), view('self', 6000, true)]
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const replay = new PushReplay(store, publisher, lease, async () => replicas, 'self', asJournaled, new HubMetrics(), createLogger('silent'))

    const push = (run: string, seq: number, at: number): StoredPush => ({ run, seq, topic: 'd/v1/devices/me/attributes', payload: Buffer.from(`${run.split('#')[0]}-${seq}`), qos: 1, at })
    await store.commit([
      { op: 'push.put', push: push(replicaRunId('live', 1000), 1, OLD) }, // a live replica's: may still be on its way
      { op: 'push.put', push: push(replicaRunId('restarted', 1000), 1, OLD) }, // its node runs again, as another run
      { op: 'push.put', push: push(replicaRunId('gone', 2000), 1, OLD) }, // not heard of lately
      { op: 'push.put', push: push(replicaRunId('gone', 2000), 2, YOUNG) }, // too young to tell
      { op: 'push.put', push: push(replicaRunId('unlisted', 4000), 1, OLD) }, // forgotten, or never listed
      { op: 'push.put', push: push('not-a-run-id', 1, OLD) },
      { op: 'push.put', push: push(replicaRunId('self', 4000), 1, YOUNG) }, // an earlier run of this node, listed live still
      { op: 'push.put', push: push(replicaRunId('self', 6000), 2, OLD) } // a later process misnamed as this node, live: not ours to publish
    ])
    // this run's own, recorded as the dispatcher does: never published by the replay
    const own = new PushJournal(store, createLogger('silent'))
    const record = own.record({ topic: 't', payload: Buffer.from('own-1'), qos: 1, retain: false })
    await store.commit([record.mutation])

    refusal = new EmqxApiError('EMQX answered 503', 503)
    assert.equal(await replay.publishLeft(NOW), 0, 'EMQX unavailable: nothing published')
    assert.equal((await storedPayloads(store)).length, 9, 'and nothing removed')
    refusal = undefined
    assert.equal(await replay.publishLeft(NOW), 5)
    assert.deepEqual(published.sort(), ['gone-1', 'not-a-run-id-1', 'restarted-1', 'self-1', 'unlisted-1'])
    assert.deepEqual(await storedPayloads(store), ['gone-2', 'live-1', 'own-1', 'self-2'])

    // later: the young one is old enough; the live replica still runs; this run's own is routed
    assert.equal(await replay.publishLeft(NOW + PUSH_ORPHAN_AGE_MS), 1)
    assert.deepEqual(published.sort(), ['gone-1', 'gone-2', 'not-a-run-id-1', 'restarted-1', 'self-1', 'unlisted-1'])
    own.routed(record.seq)
    await eventually(async () => (await storedPayloads(store)).length === 2, 5000, "this run's routed push removed")
    assert.deepEqual(await storedPayloads(store), ['live-1', 'self-2'])
  })

  it('holds a refused push\'s device back in the runs after it too, and ends a look after three refusals in a row, across runs', async (t) => {
    const store = await openStore(t)
    const tried: string[] = []
    let refusing: (payload: string) => boolean = () => true
    const publisher = {
      async publish(message: BrokerMessage) {
        const payload = Buffer.from(message.payload).toString()
        tried.push(payload)
        if (refusing(payload)) throw new EmqxApiError('EMQX answered 503', 503)
      }
    }
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const replay = new PushReplay(store, publisher, lease, async () => [], 'self', asJournaled, new HubMetrics(), createLogger('silent'))
    // four runs over, oldest first, each with one push to a device of its own and one to d0
    const pushes: StoredPush[] = []
    for (const [i, startedAt] of [1000, 2000, 3000, 4000].entries()) {
      const run = replicaRunId(`gone-${i}`, startedAt)
      pushes.push({ run, seq: 1, topic: 'd0/v1/devices/me/commands', payload: Buffer.from(`d0-${i}`), qos: 1, at: OLD - 10 + i })
      pushes.push({ run, seq: 2, topic: `d${i + 1}/v1/devices/me/commands`, payload: Buffer.from(`d${i + 1}`), qos: 1, at: OLD - 10 + i })
    }
    await store.commit(pushes.map((push) => ({ op: 'push.put' as const, push })))

    // EMQX refusing everything: three tries in all, not three per run
    assert.equal(await replay.publishLeft(NOW), 0)
    assert.deepEqual(tried, ['d0-0', 'd1', 'd2'])
    // EMQX refusing d0's oldest push only: d0's later ones, in the younger runs, wait behind it
    tried.length = 0
    refusing = (payload) => payload === 'd0-0'
    assert.equal(await replay.publishLeft(NOW), 4)
    assert.deepEqual(tried, ['d0-0', 'd1', 'd2', 'd3', 'd4'])
    assert.deepEqual(await storedPayloads(store), ['d0-0', 'd0-1', 'd0-2', 'd0-3'])
  })

  it("publishes a left command after a live replica's earlier one to its device has left the journal, never before", async (t) => {
    const store = await openStore(t)
    const published: string[] = []
    const publisher = { publish: async (message: BrokerMessage) => void published.push(text(message)) }
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const replay = new PushReplay(store, publisher, lease, async () => [view('live', 1000, true)], 'self', asJournaled, new HubMetrics(), createLogger('silent'))
    const command = (run: string, seq: number, device: string, name: string, at: number): StoredPush => ({ run, seq, topic: `${device}/v1/devices/me/commands`, payload: Buffer.from(name), qos: 1, at })
    const live = command(replicaRunId('live', 1000), 1, 'd1', 'live-earlier', OLD - 5)
    const gone = replicaRunId('gone', 2000)
    await store.commit([
      { op: 'push.put', push: live }, // a live replica's, its broker not having taken it yet
      { op: 'push.put', push: command(gone, 1, 'd1', 'left-1', OLD) },
      { op: 'push.put', push: command(gone, 2, 'd2', 'other-device', OLD) },
      { op: 'push.put', push: command(gone, 3, 'd1', 'left-2', OLD) }
    ])
    assert.equal(await replay.publishLeft(NOW), 1)
    assert.deepEqual(published, ['other-device'], "d1's wait behind the live replica's")
    await store.commit([{ op: 'push.delete', run: live.run, seq: live.seq }])
    assert.equal(await replay.publishLeft(NOW), 2)
    assert.deepEqual(published, ['other-device', 'left-1', 'left-2'])
    assert.deepEqual(await storedPayloads(store), [])
  })

  it('tries the devices EMQX refused at the last look after the others: three pushes it keeps refusing, first in the oldest run, keep no other run untold', async (t) => {
    const store = await openStore(t)
    const tried: string[] = []
    const publisher = {
      async publish(message: BrokerMessage) {
        const payload = Buffer.from(message.payload).toString()
        tried.push(payload)
        if (payload.startsWith('poison')) throw new EmqxApiError('EMQX answered 503', 503)
      }
    }
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const replay = new PushReplay(store, publisher, lease, async () => [], 'self', asJournaled, new HubMetrics(), createLogger('silent'))
    const older = replicaRunId('gone-old', 1000)
    const younger = replicaRunId('gone-young', 2000)
    const push = (run: string, seq: number, device: string, payload: string): StoredPush => ({ run, seq, topic: `${device}/v1/devices/me/commands`, payload: Buffer.from(payload), qos: 1, at: OLD })
    await store.commit(
      [push(older, 1, 'q1', 'poison-1'), push(older, 2, 'q2', 'poison-2'), push(older, 3, 'q3', 'poison-3'), push(older, 4, 'h1', 'fine-1'), push(younger, 1, 'h2', 'fine-2')].map((p) => ({ op: 'push.put' as const, push: p }))
    )

    assert.equal(await replay.publishLeft(NOW), 0, 'three refusals in a row end the first look')
    assert.deepEqual(tried, ['poison-1', 'poison-2', 'poison-3'])
    tried.length = 0
    assert.equal(await replay.publishLeft(NOW), 2)
    assert.deepEqual(tried, ['fine-1', 'poison-1', 'poison-2', 'poison-3', 'fine-2'], 'q1–q3 after the others of their run; their refusals end their own try, not the look')
    assert.deepEqual(await storedPayloads(store), ['poison-1', 'poison-2', 'poison-3'])
  })

  it('drops, logs and counts a push EMQX refuses for good, and goes on with the rest of the run', async (t) => {
    const store = await openStore(t)
    const published: string[] = []
    const publisher = {
      async publish(message: BrokerMessage) {
        const payload = Buffer.from(message.payload).toString()
        if (payload === 'gone-2') throw new EmqxApiError('EMQX refused the publish: packet too large', 400)
        published.push(payload)
      }
    }
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const metrics = new HubMetrics()
    const replay = new PushReplay(store, publisher, lease, async () => [], 'self', asJournaled, metrics, createLogger('silent'))
    const run = replicaRunId('gone', 2000)
    await store.commit([1, 2, 3].map((seq) => ({ op: 'push.put' as const, push: { run, seq, topic: 'gone/v1/devices/me/commands', payload: Buffer.from(`gone-${seq}`), qos: 1 as const, at: OLD } })))
    assert.equal(await replay.publishLeft(NOW), 2)
    assert.deepEqual(published, ['gone-1', 'gone-3'])
    assert.deepEqual(await storedPayloads(store), [])
    const counted = (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.find((v) => v.labels.property === 'commands' && v.labels.outcome === 'dropped')
    assert.equal(counted?.value, 1)
  })

  it('drops a left command older than IOTHUB_COMMAND_EXPIRY unpublished, counted, and publishes the rest of its device\'s; attributes do not expire', async (t) => {
    const store = await openStore(t)
    const published: string[] = []
    const publisher = { publish: async (message: BrokerMessage) => void published.push(text(message)) }
    const lease = new Lease(store.coordination, 'push-replay', store.replica, 15_000)
    t.after(() => lease.release())
    const metrics = new HubMetrics()
    const replay = new PushReplay(store, publisher, lease, async () => [], 'self', asJournaled, metrics, createLogger('silent'), { commandExpiryMs: 3_600_000 })
    // the expiry goes by this process' clock: pushes recorded a day, and a minute, before it
    const now = Date.now()
    const run = replicaRunId('gone', 2000)
    const push = (seq: number, property: 'attributes' | 'commands', name: string, at: number) => ({ op: 'push.put' as const, push: { run, seq, topic: `d/v1/devices/me/${property}`, payload: Buffer.from(name), qos: 1 as const, at } })
    await store.commit([push(1, 'commands', 'a-day-old', now - 86_400_000), push(2, 'attributes', 'day-old-attributes', now - 86_400_000), push(3, 'commands', 'a-minute-old', now - PUSH_ORPHAN_AGE_MS - 1)])
    assert.equal(await replay.publishLeft(now), 2)
    assert.deepEqual(published, ['day-old-attributes', 'a-minute-old'])
    assert.deepEqual(await storedPayloads(store), [], 'the expired one removed too')
    const expired = (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.filter((v) => v.labels.outcome === 'expired')
    assert.deepEqual(expired.map((v) => [v.labels.property, v.value]), [['commands', 1]])
  })

  it("tells EMQX's refusals for good from those another try may not get", () => {
    const forGood = [new EmqxApiError('bad request', 400), new EmqxApiError('too large', 413), new EmqxApiError('bad topic', 200, 115), new EmqxApiError('parameter', 200, 107)]
    const notForGood = [
      new EmqxApiError('unreachable', 0),
      new EmqxApiError('busy', 503),
      new EmqxApiError('credentials', 401),
      new EmqxApiError('wrong path', 404),
      new EmqxApiError('RPC error between its nodes', 200, 101),
      new EmqxApiError('unknown error', 200, 102),
      new EmqxApiError('a code that is not a number', 200),
      new Error('not EMQX at all')
    ]
    assert.deepEqual(forGood.map(publishRefusedForGood), [true, true, true, true])
    assert.deepEqual(notForGood.map(publishRefusedForGood), notForGood.map(() => false))
  })
})
