/**
 * A run's pushes the broker refused are tried again while the run lasts (src/devices/kept-pushes.ts):
 * in the order they were recorded, one refused again holding back its device's later ones (three
 * refusals in a row ending the try); one it refuses for good is
 * dropped and counted; one with nothing left to say goes without a publish. The journal is a real
 * SQLite store; the broker is a publisher that refuses as it is told (the end-to-end case, through
 * EMQX's REST API, is in test/push-journal.test.ts).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { PUSH_WITHIN_MS } from '../src/config.js'
import { Dispatcher, PushHeldBack, type BrokerMessage, type PublishOptions } from '../src/devices/dispatcher.js'
import { KeptPushes } from '../src/devices/kept-pushes.js'
import { journaledMessage } from '../src/devices/left-pushes.js'
import { PushJournal } from '../src/devices/push-journal.js'
import { EmqxApiError, publishRefusedForGood } from '../src/emqx/emqx-rest.js'
import { createLogger } from '../src/observability/logger.js'
import { HubMetrics } from '../src/observability/metrics.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import type { FleetReads } from '../src/store/fleet-reads.js'
import { StoreError, type StoredPush } from '../src/store/store.js'
import { eventually } from './helpers/hub.js'
import { openTestStore } from './helpers/sqlite-store.js'
import { asJournaled } from './helpers/pushes.js'

const text = (payload: Uint8Array): string => Buffer.from(payload).toString()

/** A SQLite store of its own, loaded, and this run's journal of pushes in it. */
async function openJournal(t: { after: (fn: () => Promise<void> | void) => void }): Promise<{ store: SqliteStore; journal: PushJournal }> {
  const store = await openTestStore(t, 'iothub-kept-pushes-')
  return { store, journal: new PushJournal(store, createLogger('silent')) }
}

/** The store as this run's journal sees it, refusing every removal of records while `removals.refused` says so (the store down for them). */
function refusingRemovals(store: SqliteStore): { commits: SqliteStore; journal: PushJournal; removals: { refused: boolean } } {
  const removals = { refused: true }
  const commits = Object.assign(Object.create(store) as SqliteStore, {
    commit: (mutations: Parameters<SqliteStore['commit']>[0]) =>
      removals.refused && mutations.some((m) => m.op === 'push.delete') ? Promise.reject(new StoreError('the store is down')) : store.commit(mutations)
  })
  return { commits, journal: new PushJournal(commits, createLogger('silent'), { othersMayWait: true }), removals }
}

/** Every device has one session receiving its pushes, `{device}-session`. */
const ONE_SESSION_EACH = { receiving: async (deviceId: string) => [{ sessionId: `${deviceId}-session` }] as Awaited<ReturnType<FleetReads['receiving']>> }

/** The store, counting how often it is asked which other runs' pushes come first; refusing to answer after `answers` asks. */
function countingAsks(store: SqliteStore, answers = Infinity): { reads: SqliteStore; asked: () => number } {
  let asked = 0
  const reads = Object.assign(Object.create(store) as SqliteStore, {
    earliestPushElsewhere: (topic: string, than: Pick<StoredPush, 'run' | 'at'>) =>
      ++asked > answers ? Promise.reject(new StoreError('asked too often')) : store.earliestPushElsewhere(topic, than)
  })
  return { reads, asked: () => asked }
}

describe("a run's refused pushes, tried again", () => {
  it('publishes them in order until refused again, drops one refused for good, and leaves the pushes still on their way', async (t) => {
    const { store, journal } = await openJournal(t)
    const recorded: number[] = []
    const topics: string[] = []
    for (const name of ['a', 'b', 'too-large', 'c', 'on-its-way', 'quiet']) {
      const topic = `dev/v1/devices/me/${name === 'quiet' ? 'attributes' : 'commands'}`
      const record = journal.record({ topic, payload: Buffer.from(name), qos: 1, retain: false })
      await store.commit([record.mutation])
      recorded.push(record.seq)
      topics.push(topic)
    }
    // refused: all but the one still on its way (routed, or refused, later)
    for (const [i, seq] of recorded.entries()) if (i !== 4) journal.keep(seq, topics[i]!)

    let down = true
    const busyOnce = new Set(['c'])
    const published: string[] = []
    /** Each publish's bound: the device's own publishes wait for its turn (late-pushes.ts). */
    const bounds: (number | undefined)[] = []
    const broker = {
      async publish(message: BrokerMessage, options?: PublishOptions) {
        bounds.push(options?.withinMs)
        const name = text(message.payload)
        if (down) throw new EmqxApiError('EMQX unreachable', 0)
        if (name === 'too-large') throw new EmqxApiError('EMQX refused the publish: packet too large', 400)
        if (busyOnce.delete(name)) throw new EmqxApiError('EMQX busy', 503)
        published.push(name)
      }
    }
    // the quiet one has nothing left to say (a late attributes push whose keys are gone)
    const late = {
      ...asJournaled,
      async send(push: StoredPush, publish: (message: BrokerMessage) => Promise<void>) {
        if (text(push.payload) === 'quiet') return false
        await publish(journaledMessage(push))
        return true
      }
    }
    const metrics = new HubMetrics()
    const kept = new KeptPushes(journal, store, broker, late, metrics, createLogger('silent'), { refusedForGood: publishRefusedForGood })
    const left = async () => (await store.readPushes(store.replica, 0, 100)).map((p) => text(p.payload))
    const counted = async (outcome: string) => (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0

    assert.equal(await kept.retry(), 0, 'the broker still refuses')
    assert.deepEqual(await left(), ['a', 'b', 'too-large', 'c', 'on-its-way', 'quiet'])
    assert.equal(journal.kept.size, 5)

    down = false
    assert.equal(await kept.retry(), 2, 'in order, until the broker refuses c')
    assert.deepEqual(published, ['a', 'b'])
    assert.deepEqual(await left(), ['c', 'on-its-way', 'quiet'], 'the one refused for good removed, the rest from c on kept')
    assert.equal(await counted('dropped'), 1)
    assert.deepEqual([...journal.kept].map((seq) => recorded.indexOf(seq)), [3, 5])

    assert.equal(await kept.retry(), 1)
    assert.deepEqual(published, ['a', 'b', 'c'])
    assert.deepEqual(await left(), ['on-its-way'], 'the quiet one removed without a publish; the one on its way is not this retry\'s')
    assert.equal(journal.kept.size, 0)
    assert.equal(await counted('published'), 3, 'each push the broker took, counted')
    assert.ok(bounds.length > 0 && bounds.every((b) => b === PUSH_WITHIN_MS), JSON.stringify(bounds))
    assert.equal(await kept.retry(), 0, 'nothing kept: nothing read or published')
    assert.deepEqual(published, ['a', 'b', 'c'])
  })

  it("drops a kept command (raw push) older than `commandExpiryMs` at the next try, unpublished and counted, and sends its device's later ones; attributes do not expire", async (t) => {
    const { store, journal } = await openJournal(t)
    const expiryMs = 60_000
    /** A push of this run the broker refused, recorded `ageMs` ago. */
    const refusedOnce = async (device: string, property: 'attributes' | 'commands' | 'raw', name: string, ageMs: number) => {
      const topic = `${device}/v1/devices/me/${property}`
      const { seq, mutation } = journal.record({ topic, payload: Buffer.from(name), qos: 1, retain: false })
      assert.equal(mutation.op, 'push.put')
      if (mutation.op !== 'push.put') return
      await store.commit([{ op: 'push.put', push: { ...mutation.push, at: Date.now() - ageMs } }])
      journal.keep(seq, topic)
    }
    await refusedOnce('d1', 'commands', 'too-old', expiryMs + 1000)
    await refusedOnce('d1', 'attributes', 'old-attributes', 10 * expiryMs)
    await refusedOnce('d1', 'commands', 'recent', 1000)
    await refusedOnce('d2', 'raw', 'too-old-raw', expiryMs)
    assert.ok(journal.mustWait('d1/v1/devices/me/commands'))

    const published: string[] = []
    const broker = { publish: async (message: BrokerMessage) => void published.push(text(message.payload)) }
    const metrics = new HubMetrics()
    // the store fails the first drop of d1's (its mark and the records' removal, one commit)
    const dropsAsked: string[] = []
    const late = {
      ...asJournaled,
      expire: async (device: string) => {
        dropsAsked.push(device)
        if (device === 'd1' && dropsAsked.filter((d) => d === 'd1').length === 1) throw new StoreError('the store is down')
        return false
      }
    }
    const kept = new KeptPushes(journal, store, broker, late, metrics, createLogger('silent'), { commandExpiryMs: expiryMs })
    const counted = async (property: string, outcome: string) =>
      (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.find((v) => v.labels.property === property && v.labels.outcome === outcome)?.value ?? 0

    assert.equal(await kept.retry(), 2, 'the later command of d1 goes: the expired one is never published, whether dropped yet or not')
    assert.deepEqual(published, ['old-attributes', 'recent'])
    assert.deepEqual([await counted('commands', 'expired'), await counted('raw', 'expired')], [0, 1], "d1's drop failed: not counted")
    assert.equal(journal.kept.size, 1, 'it stays kept, for the next try')
    assert.deepEqual((await store.readPushes(store.replica, 0, 100)).map((p) => text(p.payload)), ['too-old'])

    assert.equal(await kept.retry(), 0)
    assert.deepEqual(dropsAsked.sort(), ['d1', 'd1', 'd2'])
    assert.deepEqual(published, ['old-attributes', 'recent'], 'the expired ones never published')
    assert.deepEqual([await counted('commands', 'expired'), await counted('raw', 'expired'), await counted('attributes', 'expired')], [1, 1, 0], 'each counted once')
    assert.equal(journal.kept.size, 0)
    assert.equal(journal.mustWait('d1/v1/devices/me/commands'), false, 'nothing of d1 waits any more')
    assert.deepEqual(await store.readPushes(store.replica, 0, 100), [], 'every record removed, the expired ones too')
  })

  it('a push the broker keeps refusing keeps only its own device waiting; three refusals in a row end the try', async (t) => {
    const { store, journal } = await openJournal(t)
    const keep = async (device: string, name: string) => {
      const topic = `${device}/v1/devices/me/commands`
      const record = journal.record({ topic, payload: Buffer.from(name), qos: 1, retain: false })
      await store.commit([record.mutation])
      journal.keep(record.seq, topic)
    }
    for (const [device, name] of [['d1', 'a1'], ['d1', 'a2'], ['d2', 'b1'], ['d3', 'c1'], ['d1', 'a3'], ['d2', 'b2']] as const) await keep(device, name)
    let down = false
    const tried: string[] = []
    const published: string[] = []
    const broker = {
      async publish(message: BrokerMessage) {
        const name = text(message.payload)
        tried.push(name)
        // a1: refused at every try, and not for good (EMQX busy, say)
        if (down || name === 'a1') throw new EmqxApiError('EMQX busy', 503)
        published.push(name)
      }
    }
    const kept = new KeptPushes(journal, store, broker, asJournaled, new HubMetrics(), createLogger('silent'), { refusedForGood: publishRefusedForGood })
    const left = async () => (await store.readPushes(store.replica, 0, 100)).map((p) => text(p.payload))

    assert.equal(await kept.retry(), 3)
    assert.deepEqual(tried, ['a1', 'b1', 'c1', 'b2'], "d1's later pushes wait behind a1, not tried before it")
    assert.deepEqual(published, ['b1', 'c1', 'b2'])
    assert.deepEqual(await left(), ['a1', 'a2', 'a3'])
    assert.equal(await kept.retry(), 0, 'a1 refused again: d1 still waits')
    assert.deepEqual(await left(), ['a1', 'a2', 'a3'])

    // the broker refusing every push: a try ends after three refusals, not after every device;
    // d1, refused at the try before, is tried after the others
    for (const device of ['d4', 'd5', 'd6', 'd7', 'd8']) await keep(device, `${device}-x`)
    down = true
    tried.length = 0
    assert.equal(await kept.retry(), 0)
    assert.deepEqual(tried, ['d4-x', 'd5-x', 'd6-x'])
    down = false
    published.length = 0
    tried.length = 0
    assert.equal(await kept.retry(), 5, 'the broker back: every device but d1 told')
    assert.deepEqual(tried, ['a1', 'd7-x', 'd8-x', 'd4-x', 'd5-x', 'd6-x'], 'those refused at the try before (d4–d6) after the others')
    assert.deepEqual(published, ['d7-x', 'd8-x', 'd4-x', 'd5-x', 'd6-x'])
    assert.deepEqual(await left(), ['a1', 'a2', 'a3'])

    // refusals with pushes taken between them are one device's trouble each, not an outage
    for (const [device, name] of [['e1', 'poison-1'], ['e2', 'fine-2'], ['e3', 'poison-3'], ['e4', 'fine-4'], ['e5', 'poison-5'], ['e6', 'fine-6']] as const) await keep(device, name)
    const poisoned = broker.publish.bind(broker)
    broker.publish = async (message: BrokerMessage) => {
      if (text(message.payload).startsWith('poison')) {
        tried.push(text(message.payload))
        throw new EmqxApiError('EMQX busy', 503)
      }
      return poisoned(message)
    }
    published.length = 0
    assert.equal(await kept.retry(), 3)
    assert.deepEqual(published, ['fine-2', 'fine-4', 'fine-6'], 'a1, poison-1, poison-3 and poison-5 refused, not three in a row')
  })

  it('tries the devices refused at the try before after the others: three pushes the broker keeps refusing, first in the run, keep no other device untold', async (t) => {
    const { store, journal } = await openJournal(t)
    for (const [device, name] of [['q1', 'poison-1'], ['q2', 'poison-2'], ['q3', 'poison-3'], ['h1', 'fine-1'], ['h2', 'fine-2']] as const) {
      const topic = `${device}/v1/devices/me/commands`
      const record = journal.record({ topic, payload: Buffer.from(name), qos: 1, retain: false })
      await store.commit([record.mutation])
      journal.keep(record.seq, topic)
    }
    const tried: string[] = []
    const broker = {
      async publish(message: BrokerMessage) {
        tried.push(text(message.payload))
        if (text(message.payload).startsWith('poison')) throw new EmqxApiError('EMQX busy', 503)
      }
    }
    const kept = new KeptPushes(journal, store, broker, asJournaled, new HubMetrics(), createLogger('silent'))
    assert.equal(await kept.retry(), 0, 'three refusals in a row end the first try')
    assert.deepEqual(tried, ['poison-1', 'poison-2', 'poison-3'])
    tried.length = 0
    assert.equal(await kept.retry(), 2)
    assert.deepEqual(tried, ['fine-1', 'fine-2', 'poison-1', 'poison-2', 'poison-3'])
    assert.equal(journal.kept.size, 3)
  })

  it('tries again by itself, every `retryMs` (IOTHUB_PUSH_RETRY_INTERVAL), once started', async (t) => {
    const { store, journal } = await openJournal(t)
    const topic = 'timed/v1/devices/me/commands'
    const record = journal.record({ topic, payload: Buffer.from('timed'), qos: 1, retain: false })
    await store.commit([record.mutation])
    journal.keep(record.seq, topic)
    let refusing = true
    const tried: string[] = []
    const broker = {
      async publish(message: BrokerMessage) {
        tried.push(text(message.payload))
        if (refusing) throw new EmqxApiError('EMQX busy', 503)
      }
    }
    const kept = new KeptPushes(journal, store, broker, asJournaled, new HubMetrics(), createLogger('silent'), { retryMs: 100 })
    kept.start()
    t.after(() => kept.stop())
    // a try that finds the broker still refusing, then one that finds it taking: the default's
    // 10 s would be twice as long as the wait allows
    await eventually(() => tried.length >= 1, 5000, 'a first try')
    refusing = false
    await eventually(() => journal.kept.size === 0, 5000, 'the push published at a later try')
    assert.ok(tried.length >= 2, String(tried.length))
    assert.ok(tried.every((payload) => payload === 'timed'))
  })

  it('keeps a push whose receivers could not be read, as one the broker refused', async (t) => {
    const { store, journal } = await openJournal(t)
    // where the store is shared, whom a push reaches is a read of it: here one that fails
    const fleet = { receiving: async () => Promise.reject(new StoreError('the store did not answer')) }
    const published: string[] = []
    const dispatcher = new Dispatcher(fleet, { publish: async (m: BrokerMessage) => void published.push(text(m.payload)) }, new HubMetrics(), journal)
    const prepared = dispatcher.prepare('dev', 'attributes', Buffer.from('{"mode":"eco"}'))
    await store.commit(prepared.storeWith)
    await assert.rejects(dispatcher.push(prepared), StoreError)
    assert.deepEqual([...journal.kept], [prepared.seq])
    assert.deepEqual(published, [])
  })

  it('forgets a kept push another replica published meanwhile, once a try has read the whole run', async (t) => {
    const { store, journal } = await openJournal(t)
    const records = ['gone', 'here'].map((name) => journal.record({ topic: 'dev/v1/devices/me/commands', payload: Buffer.from(name), qos: 1, retain: false }))
    await store.commit(records.map((r) => r.mutation))
    for (const r of records) journal.keep(r.seq, 'dev/v1/devices/me/commands')
    // the replica holding the replay took this run for over and published the first (push-replay.ts)
    await store.commit([{ op: 'push.delete', run: store.replica, seq: records[0]!.seq }])
    const published: string[] = []
    const kept = new KeptPushes(journal, store, { publish: async (m: BrokerMessage) => void published.push(text(m.payload)) }, asJournaled, new HubMetrics(), createLogger('silent'))
    assert.equal(await kept.retry(), 1)
    assert.deepEqual(published, ['here'])
    assert.equal(journal.kept.size, 0, 'nothing left to look for at every try')
  })

  it("lets a device's commands go again once its kept one is gone, though another device's is refused at that try", async (t) => {
    const { store, journal } = await openJournal(t)
    const records = [
      { topic: 'd1/v1/devices/me/commands', name: 'c1' },
      { topic: 'd2/v1/devices/me/commands', name: 'x1' }
    ].map(({ topic, name }) => ({ topic, ...journal.record({ topic, payload: Buffer.from(name), qos: 1, retain: false }) }))
    await store.commit(records.map((r) => r.mutation))
    for (const r of records) journal.keep(r.seq, r.topic)
    assert.ok(journal.mustWait('d1/v1/devices/me/commands'))
    // the replica holding the replay took this run for over and published c1 (push-replay.ts)
    await store.commit([{ op: 'push.delete', run: store.replica, seq: records[0]!.seq }])
    const refusesX1 = {
      async publish() {
        throw new EmqxApiError('EMQX busy', 503)
      }
    }
    const kept = new KeptPushes(journal, store, refusesX1, asJournaled, new HubMetrics(), createLogger('silent'))
    assert.equal(await kept.retry(), 0)
    assert.equal(journal.mustWait('d1/v1/devices/me/commands'), false, "d1's later commands do not wait for a push that is gone")
    assert.ok(journal.mustWait('d2/v1/devices/me/commands'), 'x1 is still kept')
    assert.deepEqual([...journal.kept], [records[1]!.seq])
  })

  it('bounds a live push as the retries are bounded: the device waits for its turn', async (t) => {
    const { store, journal } = await openJournal(t)
    const bounds: (number | undefined)[] = []
    const fleet = { receiving: async () => [{ sessionId: 'dev-session' }] as Awaited<ReturnType<FleetReads['receiving']>> }
    const dispatcher = new Dispatcher(fleet, { publish: async (_m: BrokerMessage, options?: PublishOptions) => void bounds.push(options?.withinMs) }, new HubMetrics(), journal)
    const prepared = dispatcher.prepare('dev', 'attributes', Buffer.from('{"mode":"eco"}'))
    await store.commit(prepared.storeWith)
    assert.deepEqual(await dispatcher.push(prepared), ['dev-session'])
    assert.deepEqual(bounds, [PUSH_WITHIN_MS])
  })

  it("keeps a device's later commands behind its command the broker refused, and sends them after it, in order", async (t) => {
    const { store, journal } = await openJournal(t)
    const fleet = ONE_SESSION_EACH
    let refusing = new Set(['c1'])
    const published: string[] = []
    const broker = {
      async publish(message: BrokerMessage) {
        const name = text(message.payload)
        if (refusing.has(name)) throw new EmqxApiError('EMQX busy', 503)
        published.push(name)
      }
    }
    const metrics = new HubMetrics()
    const dispatcher = new Dispatcher(fleet, broker, metrics, journal)
    /** A change of `property` of `device` stored, then pushed as the API pushes it. */
    const pushed = async (device: string, property: 'attributes' | 'commands' | 'raw', name: string) => {
      const prepared = dispatcher.prepare(device, property, Buffer.from(name))
      await store.commit(prepared.storeWith)
      return dispatcher.push(prepared)
    }
    const kept = new KeptPushes(journal, store, broker, asJournaled, metrics, createLogger('silent'))
    const held = async () => (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.find((v) => v.labels.outcome === 'held')?.value ?? 0

    await assert.rejects(pushed('d1', 'commands', 'c1'), EmqxApiError)
    await assert.rejects(pushed('d1', 'commands', 'c2'), (error: Error) => error instanceof PushHeldBack && /an earlier command to this device waits/.test(error.message))
    // the device's attributes, its raw bytes and other devices' commands do not wait
    assert.deepEqual(await pushed('d1', 'attributes', 'a1'), ['d1-session'])
    assert.deepEqual(await pushed('d1', 'raw', 'r1'), ['d1-session'])
    assert.deepEqual(await pushed('d2', 'commands', 'x1'), ['d2-session'])
    assert.deepEqual(published, ['a1', 'r1', 'x1'], 'c2 not published before c1')

    assert.equal(await kept.retry(), 0, 'c1 refused again: c2 waits behind it')
    await assert.rejects(pushed('d1', 'commands', 'c3'), PushHeldBack)
    assert.equal(await held(), 2)

    refusing = new Set()
    assert.equal(await kept.retry(), 3)
    assert.deepEqual(published, ['a1', 'r1', 'x1', 'c1', 'c2', 'c3'])
    assert.equal(journal.kept.size, 0)
    assert.deepEqual(await pushed('d1', 'commands', 'c4'), ['d1-session'], 'nothing kept: a command goes at once again')
    assert.deepEqual(published.slice(-1), ['c4'])
    await journal.flush()
    assert.deepEqual(await store.readPushes(store.replica, 0, 100), [], 'every record removed')
  })
  it("keeps a device's command behind another run's earlier one still in the journal, where other runs' may wait, and sends it once that one has left", async (t) => {
    const { store } = await openJournal(t)
    const journal = new PushJournal(store, createLogger('silent'), { othersMayWait: true })
    const fleet = ONE_SESSION_EACH
    const published: string[] = []
    const broker = {
      async publish(message: BrokerMessage) {
        published.push(text(message.payload))
      }
    }
    const metrics = new HubMetrics()
    // the other run's command is not on its way: it stays, so a live push gives up waiting for it soon
    const dispatcher = new Dispatcher(fleet, broker, metrics, journal, { withinMs: 100 })
    const pushed = async (device: string, property: 'attributes' | 'commands', name: string) => {
      const prepared = dispatcher.prepare(device, property, Buffer.from(name))
      await store.commit(prepared.storeWith)
      return dispatcher.push(prepared)
    }
    const kept = new KeptPushes(journal, store, broker, asJournaled, metrics, createLogger('silent'))
    const counted = async (outcome: string) => (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.find((v) => v.labels.outcome === outcome)?.value ?? 0
    // another replica's command to d1, recorded a moment ago, that its broker has not taken yet
    const other = { run: 'other-node#1.x', seq: 7, topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c0'), qos: 1 as const, at: Date.now() - 1 }
    await store.commit([{ op: 'push.put', push: other }])

    await assert.rejects(pushed('d1', 'commands', 'c1'), PushHeldBack)
    await assert.rejects(pushed('d1', 'commands', 'c2'), PushHeldBack, 'behind c1, kept in this run')
    assert.deepEqual(await pushed('d1', 'attributes', 'a1'), ['d1-session'], 'attributes never wait')
    assert.deepEqual(await pushed('d2', 'commands', 'x1'), ['d2-session'], "another device's commands go at once")
    assert.deepEqual([await counted('held'), await counted('failed')], [2, 0], 'held, never tried')
    assert.equal(await kept.retry(), 0, 'the other run\'s command is still in the journal')
    assert.deepEqual(published, ['a1', 'x1'])

    // that replica's broker took it: its record goes, and the held ones follow, in order
    await store.commit([{ op: 'push.delete', run: other.run, seq: other.seq }])
    assert.equal(await kept.retry(), 2)
    assert.deepEqual(published, ['a1', 'x1', 'c1', 'c2'])
    assert.deepEqual(await pushed('d1', 'commands', 'c3'), ['d1-session'], 'nothing waits: a command goes at once again')
    await journal.flush()
    assert.deepEqual(await store.readPushes(store.replica, 0, 100), [], 'every record of this run removed')
  })

  it("waits for another run's earlier command on its way to the device, and sends its own right after it has left", async (t) => {
    const { store } = await openJournal(t)
    const { reads, asked } = countingAsks(store)
    const journal = new PushJournal(reads, createLogger('silent'), { othersMayWait: true })
    const fleet = ONE_SESSION_EACH
    const published: string[] = []
    const given: (number | undefined)[] = []
    const broker = {
      publish: async (message: BrokerMessage, options?: PublishOptions) => {
        published.push(text(message.payload))
        given.push(options?.withinMs)
      }
    }
    const metrics = new HubMetrics()
    // long enough that only the other command's leaving ends the wait, on any machine
    const withinMs = 30_000
    const dispatcher = new Dispatcher(fleet, broker, metrics, journal, { withinMs })
    // another replica's command to d1, recorded a moment ago and being published there
    const other = { run: 'other-node#1.x', seq: 3, topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c0'), qos: 1 as const, at: Date.now() - 1 }
    await store.commit([{ op: 'push.put', push: other }])
    const prepared = dispatcher.prepare('d1', 'commands', Buffer.from('c1'))
    await store.commit(prepared.storeWith)
    const sent = dispatcher.push(prepared)
    await eventually(() => asked() >= 2, 10_000, 'asked about the other command again')
    assert.deepEqual(published, [], 'not sent while the earlier one is on its way')
    // that replica's broker took it: its record goes
    await store.commit([{ op: 'push.delete', run: other.run, seq: other.seq }])
    assert.deepEqual(await sent, ['d1-session'])
    assert.deepEqual(published, ['c1'])
    assert.ok(given[0]! >= withinMs / 2 && given[0]! < withinMs, `the publish got what the wait left of its time, at least half: ${given[0]} ms`)
    const held = (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.find((v) => v.labels.outcome === 'held')
    assert.equal(held?.value ?? 0, 0, 'never held')
    assert.deepEqual([...journal.kept], [], 'nothing kept for a retry')
  })

  it("waits for another run's command on its way at most half its own push time, though the wall clock steps back", async (t) => {
    const { store } = await openJournal(t)
    // a wait that goes on fails the push fast rather than after the minute the clock stepped back
    const { reads, asked } = countingAsks(store, 50)
    const journal = new PushJournal(reads, createLogger('silent'), { othersMayWait: true })
    const fleet = ONE_SESSION_EACH
    const published: string[] = []
    const broker = { publish: async (message: BrokerMessage) => void published.push(text(message.payload)) }
    const dispatcher = new Dispatcher(fleet, broker, new HubMetrics(), journal, { withinMs: 2_000 })
    // another replica's command recorded a moment ago, which stays: its broker refused it
    const other = { run: 'other-node#1.x', seq: 9, topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c0'), qos: 1 as const, at: Date.now() - 1 }
    await store.commit([{ op: 'push.put', push: other }])
    const prepared = dispatcher.prepare('d1', 'commands', Buffer.from('c1'))
    await store.commit(prepared.storeWith)
    // from the second question on, the wall clock reads a minute earlier (a step back by NTP, say)
    const wallClock = Date.now.bind(Date)
    t.mock.method(Date, 'now', () => wallClock() - (asked() >= 2 ? 60_000 : 0))
    await assert.rejects(dispatcher.push(prepared), PushHeldBack)
    t.mock.restoreAll()
    // asked at 0, 10, 30, 70, 150, 310, 510, 710, 910 and 1,000 ms (a busy machine asks fewer times);
    // waiting all of 2,000 ms would ask 15 times
    assert.ok(asked() <= 12, `gave up after half of 2,000 ms, having asked ${asked()} times`)
    assert.deepEqual(published, [])
    assert.deepEqual([...journal.kept], [prepared.seq], 'held, kept for the retry')
  })

  it("gives the publish after a wait at least half its time, though the store's last answer came late", async (t) => {
    const { store } = await openJournal(t)
    // another replica's command recorded a moment ago, on its way
    const other = { run: 'other-node#1.x', seq: 4, topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c0'), qos: 1 as const, at: Date.now() - 1 }
    await store.commit([{ op: 'push.put', push: other }])
    let asked = 0
    const reads = Object.assign(Object.create(store) as SqliteStore, {
      // the second question finds it gone, but answers after the whole push time has passed
      earliestPushElsewhere: async (topic: string, than: Pick<StoredPush, 'run' | 'at'>) => {
        if (++asked === 2) {
          await store.commit([{ op: 'push.delete', run: other.run, seq: other.seq }])
          await delay(400)
        }
        return store.earliestPushElsewhere(topic, than)
      }
    })
    const journal = new PushJournal(reads, createLogger('silent'), { othersMayWait: true })
    const given: (number | undefined)[] = []
    const broker = { publish: async (_message: BrokerMessage, options?: PublishOptions) => void given.push(options?.withinMs) }
    const dispatcher = new Dispatcher(ONE_SESSION_EACH, broker, new HubMetrics(), journal, { withinMs: 300 })
    const prepared = dispatcher.prepare('d1', 'commands', Buffer.from('c1'))
    await store.commit(prepared.storeWith)
    assert.deepEqual(await dispatcher.push(prepared), ['d1-session'])
    assert.equal(given[0], 150, 'half of 300 ms, not what was left of it (nothing)')
  })

  it("once a wait for another run's command was in vain, holds the next device's behind another run's at once (a fleet command does not wait per device)", async (t) => {
    const { store } = await openJournal(t)
    const { reads, asked } = countingAsks(store)
    const journal = new PushJournal(reads, createLogger('silent'), { othersMayWait: true })
    const published: string[] = []
    const broker = { publish: async (message: BrokerMessage) => void published.push(text(message.payload)) }
    // a wait of a second: a store read a busy machine stalls does not end it before it has waited
    const dispatcher = new Dispatcher(ONE_SESSION_EACH, broker, new HubMetrics(), journal, { withinMs: 2_000 })
    // another replica's commands to d1, d2 and d4, recorded a moment ago; those to d1 and d2 stay: its broker refused them
    const others = ['d1', 'd2', 'd4'].map((device, i) => ({ run: 'other-node#1.x', seq: i + 1, topic: `${device}/v1/devices/me/commands`, payload: Buffer.from(`${device}-c0`), qos: 1 as const, at: Date.now() - 1 }))
    await store.commit(others.map((push) => ({ op: 'push.put' as const, push })))
    const pushed = async (device: string) => {
      const prepared = dispatcher.prepare(device, 'commands', Buffer.from(`${device}-c1`))
      await store.commit(prepared.storeWith)
      return dispatcher.push(prepared)
    }
    await assert.rejects(pushed('d1'), PushHeldBack)
    const askedForD1 = asked()
    assert.ok(askedForD1 > 1, 'waited for the first')
    await assert.rejects(pushed('d2'), PushHeldBack)
    assert.equal(asked() - askedForD1, 1, 'the second asked once, not waited on')
    assert.deepEqual(await pushed('d3'), ['d3-session'], 'a device with nothing ahead of it goes at once')

    // ten seconds on, a push behind another run's waits again: d4's, which leaves while it waits
    const monotonic = performance.now.bind(performance)
    t.mock.method(performance, 'now', () => monotonic() + 10_001)
    const askedBeforeD4 = asked()
    const d4 = pushed('d4')
    await eventually(() => asked() - askedBeforeD4 >= 2, 10_000, 'waited for the command ahead of d4')
    await store.commit([{ op: 'push.delete', run: 'other-node#1.x', seq: 3 }])
    assert.deepEqual(await d4, ['d4-session'])
    t.mock.restoreAll()
    assert.deepEqual(published, ['d3-c1', 'd4-c1'])
  })

  it("holds a command at once behind another run's recorded longer ago than a publish takes: refused there, not on its way", async (t) => {
    const { store } = await openJournal(t)
    const { reads, asked } = countingAsks(store)
    const journal = new PushJournal(reads, createLogger('silent'), { othersMayWait: true })
    const fleet = ONE_SESSION_EACH
    const published: string[] = []
    const broker = { publish: async (message: BrokerMessage) => void published.push(text(message.payload)) }
    const withinMs = 30_000
    const dispatcher = new Dispatcher(fleet, broker, new HubMetrics(), journal, { withinMs })
    // recorded before a publish's time and a second ago: its replica's broker refused it, and it waits there
    const other = { run: 'other-node#1.x', seq: 5, topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c0'), qos: 1 as const, at: Date.now() - withinMs - 2_000 }
    await store.commit([{ op: 'push.put', push: other }])
    const prepared = dispatcher.prepare('d1', 'commands', Buffer.from('c1'))
    await store.commit(prepared.storeWith)
    await assert.rejects(dispatcher.push(prepared), PushHeldBack)
    assert.equal(asked(), 1, 'asked once, not waited on')
    assert.deepEqual(published, [])
    assert.deepEqual([...journal.kept], [prepared.seq], 'kept for the retry')

    // held without a wait: that says nothing of other runs' pushes on their way, and d2's is waited for
    await store.commit([{ op: 'push.put', push: { ...other, seq: 6, topic: 'd2/v1/devices/me/commands', at: Date.now() - 1 } }])
    const d2 = dispatcher.prepare('d2', 'commands', Buffer.from('d2-c1'))
    await store.commit(d2.storeWith)
    const sent = dispatcher.push(d2)
    await eventually(() => asked() >= 3, 10_000, 'waited for the command ahead of d2')
    await store.commit([{ op: 'push.delete', run: other.run, seq: 6 }])
    assert.deepEqual(await sent, ['d2-session'])
    assert.deepEqual(published, ['d2-c1'])
  })

  it("keeps a command whose place behind other runs' could not be read, as one the broker refused", async (t) => {
    const { store } = await openJournal(t)
    let storeDown = true
    const reads = Object.assign(Object.create(store) as SqliteStore, {
      earliestPushElsewhere: (topic: string, than: Pick<StoredPush, 'run' | 'at'>) => (storeDown ? Promise.reject(new StoreError('the store is down')) : store.earliestPushElsewhere(topic, than))
    })
    const journal = new PushJournal(reads, createLogger('silent'), { othersMayWait: true })
    const fleet = ONE_SESSION_EACH
    const published: string[] = []
    const broker = { publish: async (message: BrokerMessage) => void published.push(text(message.payload)) }
    const metrics = new HubMetrics()
    const dispatcher = new Dispatcher(fleet, broker, metrics, journal)
    const prepared = dispatcher.prepare('d1', 'commands', Buffer.from('c1'))
    await store.commit(prepared.storeWith)
    await assert.rejects(dispatcher.push(prepared), StoreError)
    assert.deepEqual([...journal.kept], [prepared.seq], 'kept for the retry')
    storeDown = false
    assert.equal(await new KeptPushes(journal, reads, broker, asJournaled, metrics, createLogger('silent')).retry(), 1)
    assert.deepEqual(published, ['c1'])
  })
  it("records its pushes in an order that never goes back, though the clock does: other runs' order them by it", async (t) => {
    const { store, journal } = await openJournal(t)
    let now = 10_000
    t.mock.method(Date, 'now', () => now)
    const message = (name: string): BrokerMessage => ({ topic: 'd1/v1/devices/me/commands', payload: Buffer.from(name), qos: 1, retain: false })
    const first = journal.record(message('c1'))
    now = 9_000 // the clock stepped back
    const second = journal.record(message('c2'))
    now = 11_000
    const third = journal.record(message('c3'))
    assert.deepEqual([first.at, second.at, third.at], [10_000, 10_000, 11_000])
    t.mock.restoreAll() // the store's deadlines read the clock
    await store.commit([first.mutation, second.mutation])
    // c2 is no earlier than c1: another run's push recorded between them waits behind both
    assert.equal(await store.earliestPushElsewhere('d1/v1/devices/me/commands', { run: 'zz-other#1.x', at: 10_000 }), 10_000)
  })

  it("asks again, at its next try, for the removal of a routed push's record the store refused: it would hold other runs' commands to its device", async (t) => {
    const { store } = await openJournal(t)
    const { commits, journal, removals } = refusingRemovals(store)
    const published: string[] = []
    const kept = new KeptPushes(journal, commits, { publish: async (message: BrokerMessage) => void published.push(text(message.payload)) }, asJournaled, new HubMetrics(), createLogger('silent'))
    const [routed, refused] = ['d1', 'd2'].map((device) => journal.record({ topic: `${device}/v1/devices/me/commands`, payload: Buffer.from(`${device}-c1`), qos: 1, retain: false }))
    await store.commit([routed!.mutation, refused!.mutation])
    journal.routed(routed!.seq)
    journal.keep(refused!.seq, 'd2/v1/devices/me/commands')
    // the kept one is published by a try whose removal of it fails
    assert.equal(await kept.retry(), 0, 'the try failed at the removal')
    assert.deepEqual(published, ['d2-c1'])
    // each removal tried three times, a second apart, then given up
    await eventually(() => journal.unremovedCount === 2, 10_000, 'the removals given up')
    const olderThanOthers = async (device: string) => (await store.earliestPushElsewhere(`${device}/v1/devices/me/commands`, { run: 'zz-other#1.x', at: Date.now() + 1 })) !== undefined
    assert.deepEqual([await olderThanOthers('d1'), await olderThanOthers('d2')], [true, true], "the records left hold another run's later commands")
    removals.refused = false
    assert.equal(await kept.retry(), 0, 'nothing kept to publish')
    await journal.flush()
    assert.equal(journal.unremovedCount, 0)
    assert.deepEqual([await olderThanOthers('d1'), await olderThanOthers('d2')], [false, false], 'removed at the next try: they hold nothing any more')
    assert.deepEqual(published, ['d2-c1'], 'published once')
  })

  it('asks again at a stop for the removals the store refused, so that nothing is published twice', async (t) => {
    const { store } = await openJournal(t)
    const { journal, removals } = refusingRemovals(store)
    const record = journal.record({ topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c1'), qos: 1, retain: false })
    await store.commit([record.mutation])
    journal.routed(record.seq)
    await eventually(() => journal.unremovedCount === 1, 10_000, 'the removal given up')
    removals.refused = false
    // the store is back, and the hub stops before the kept pushes' next try
    await journal.flush()
    assert.deepEqual(await store.readPushes(store.replica, 0, 10), [], 'nothing left for a replay to publish again')
  })
})
