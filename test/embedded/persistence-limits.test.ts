/**
 * The persistence's limits, on a real SQLite store in a temporary folder: retained messages per
 * device and hub-wide (count and bytes), each client's queue (count and bytes), what a restart
 * rebuilds, and what concurrent writes and a failed commit leave behind.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import Database from 'better-sqlite3'
import { StoreAedesPersistence, type BrokerPacket, type PersistenceOptions } from '../../src/embedded/aedes-persistence.js'
import { decodePacket } from '../../src/embedded/packet-codec.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'

interface Fixture {
  dataDir: string
  store: SqliteStore
  persistence: StoreAedesPersistence
  refused: { topic: string; limit: string }[]
  dropped: { clientId: string; count: number }[]
  /** A new persistence on the same store contents, as after a restart. */
  reopen(): Promise<StoreAedesPersistence>
}

/** Retained topics count against their first level, as a device's mounted topics do; `su/` topics against no device. */
const ownerOf = (packet: BrokerPacket) => (packet.topic!.startsWith('su/') ? undefined : packet.topic!.split('/')[0])

async function open(t: TestContext, options: Pick<PersistenceOptions, 'retained' | 'queue'>, storeOptions: { busyTimeoutMs?: number } = {}): Promise<Fixture> {
  const dataDir = tempDir('iothub-persistence-limits-')
  const refused: Fixture['refused'] = []
  const dropped: Fixture['dropped'] = []
  const stores: SqliteStore[] = []
  const make = async (store: SqliteStore) => {
    const persistence = new StoreAedesPersistence(store, new TopicBook(), {
      retained: options.retained && { ownerOf, ...options.retained, refused: (packet, limit) => refused.push({ topic: packet.topic!, limit }) },
      queue: options.queue && { ...options.queue, dropped: (clientId, count) => dropped.push({ clientId, count }) }
    })
    await persistence.setup({ id: 'broker' })
    return persistence
  }
  const store = new SqliteStore({ dataDir, ...storeOptions })
  stores.push(store)
  t.after(async () => {
    for (const s of stores) await s.close().catch(() => undefined)
    rmSync(dataDir, { recursive: true, force: true })
  })
  return {
    dataDir,
    store,
    persistence: await make(store),
    refused,
    dropped,
    async reopen() {
      await store.close()
      const again = new SqliteStore({ dataDir })
      stores.push(again)
      const persistence = await make(again)
      persistence.load(await again.load())
      return persistence
    }
  }
}

let counter = 0
function message(topic: string, payload: string | Buffer, extra: Partial<BrokerPacket> = {}): BrokerPacket {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: true, brokerId: 'broker', brokerCounter: ++counter, ...extra }
}

async function retainedTopics(persistence: StoreAedesPersistence, filter = '#'): Promise<string[]> {
  const topics: string[] = []
  for await (const packet of persistence.createRetainedStream(filter)) topics.push((packet as BrokerPacket).topic!)
  return topics.sort()
}

async function storedRetained(store: SqliteStore): Promise<string[]> {
  return (await store.load()).retained.map((r) => r.topic).sort()
}

async function queued(persistence: StoreAedesPersistence, clientId: string): Promise<string[]> {
  const payloads: string[] = []
  for await (const packet of persistence.outgoingStream({ id: clientId })) payloads.push(String((packet as BrokerPacket).payload))
  return payloads
}

async function storedQueue(store: SqliteStore, clientId: string): Promise<string[]> {
  return (await store.load()).outgoing.filter((o) => o.clientId === clientId).map((o) => String(decodePacket<BrokerPacket>(o.packet).payload))
}

test("a device's retained messages beyond its count are not retained; replacing and clearing still work; other devices are unaffected", async (t) => {
  const f = await open(t, { retained: { limits: { messagesPerDevice: 2 } } })
  await f.persistence.storeRetained(message('d1/a', 'x'))
  await f.persistence.storeRetained(message('d1/b', 'x'))
  await f.persistence.storeRetained(message('d1/c', 'x'))
  assert.deepEqual(await retainedTopics(f.persistence), ['d1/a', 'd1/b'])
  assert.deepEqual(f.refused.map((r) => r.topic), ['d1/c'])
  assert.match(f.refused[0]!.limit, /device's 2 retained messages/)

  await f.persistence.storeRetained(message('d1/a', 'newer'))
  assert.equal(f.refused.length, 1, 'replacing a topic it has is within the limit')
  await f.persistence.storeRetained(message('d2/a', 'x'))
  await f.persistence.storeRetained(message('d2/b', 'x'))
  assert.equal(f.refused.length, 1, 'another device has its own limit')

  await f.persistence.storeRetained(message('d1/b', ''))
  await f.persistence.storeRetained(message('d1/c', 'x'))
  assert.equal(f.refused.length, 1, 'clearing frees a place')
  assert.deepEqual(await retainedTopics(f.persistence), ['d1/a', 'd1/c', 'd2/a', 'd2/b'])
  assert.deepEqual(await storedRetained(f.store), ['d1/a', 'd1/c', 'd2/a', 'd2/b'], 'the store holds what memory does')
  assert.deepEqual(f.persistence.retainedUsage('d1'), { messages: 2, bytes: 2 * ('d1/a'.length + 1) + 'newer'.length - 1 })
})

test("a device's retained bytes: a replacement is measured after the old one is freed; one that does not fit clears the old", async (t) => {
  // 'd1/t' is 4 bytes: 10 bytes leave 6 for payloads
  const f = await open(t, { retained: { limits: { bytesPerDevice: 10 } } })
  await f.persistence.storeRetained(message('d1/t', '123456'))
  await f.persistence.storeRetained(message('d1/t', 'abcdef'))
  assert.equal(f.refused.length, 0, 'the same size again fits: the old one is freed first')
  await f.persistence.storeRetained(message('d1/u', '1'))
  assert.deepEqual(f.refused.map((r) => r.topic), ['d1/u'])
  assert.match(f.refused[0]!.limit, /device's 10 bytes/)

  await f.persistence.storeRetained(message('d1/t', '1234567'))
  assert.deepEqual(f.refused.map((r) => r.topic), ['d1/u', 'd1/t'])
  assert.deepEqual(await retainedTopics(f.persistence), [], 'the stale value is gone, not left to pass for the current one')
  assert.deepEqual(await storedRetained(f.store), [])
  assert.deepEqual(f.persistence.retainedUsage('d1'), { messages: 0, bytes: 0 })
})

test('hub-wide limits count every publisher; a superuser counts towards them only', async (t) => {
  const f = await open(t, { retained: { limits: { messagesPerDevice: 1, messages: 3, bytes: 1000 } } })
  await f.persistence.storeRetained(message('su/a', 'x'))
  await f.persistence.storeRetained(message('su/b', 'x'))
  assert.equal(f.refused.length, 0, 'the per-device limit (1) does not apply to a superuser')
  assert.deepEqual(f.persistence.retainedUsage(), { messages: 2, bytes: 10 })
  await f.persistence.storeRetained(message('d1/a', 'x'))
  await f.persistence.storeRetained(message('d2/a', 'x'))
  assert.deepEqual(f.refused.map((r) => r.topic), ['d2/a'])
  assert.match(f.refused[0]!.limit, /hub's 3 retained messages/)

  await f.persistence.storeRetained(message('su/a', Buffer.alloc(1000)))
  assert.match(f.refused.at(-1)!.limit, /hub's 1000 bytes/)
  assert.deepEqual(await retainedTopics(f.persistence), ['d1/a', 'su/b'])
})

test('the limits hold across a restart: the usage is rebuilt from the store, owners included', async (t) => {
  const f = await open(t, { retained: { limits: { messagesPerDevice: 2, messages: 4 } } })
  await f.persistence.storeRetained(message('d1/a', 'x'))
  await f.persistence.storeRetained(message('d1/b', 'x'))
  await f.persistence.storeRetained(message('su/a', 'x'))
  const usage = { d1: f.persistence.retainedUsage('d1'), hub: f.persistence.retainedUsage() }

  const again = await f.reopen()
  assert.deepEqual({ d1: again.retainedUsage('d1'), hub: again.retainedUsage() }, usage)
  await again.storeRetained(message('d1/c', 'x'))
  assert.deepEqual(f.refused.map((r) => r.topic), ['d1/c'], "the device's limit still holds")
  await again.storeRetained(message('d2/a', 'x'))
  await again.storeRetained(message('d2/b', 'x'))
  assert.deepEqual(f.refused.map((r) => r.topic), ['d1/c', 'd2/b'], "the hub's limit still holds")
})

test('concurrent retained publishes of one device cannot all take the last place', async (t) => {
  const f = await open(t, { retained: { limits: { messagesPerDevice: 3 } } })
  await Promise.all(Array.from({ length: 20 }, (_, i) => f.persistence.storeRetained(message(`d1/t${i}`, 'x'))))
  assert.equal((await retainedTopics(f.persistence)).length, 3)
  assert.equal((await storedRetained(f.store)).length, 3)
  assert.equal(f.refused.length, 17)
  // and concurrent replacements of one topic free its old size once, not once each
  await Promise.all(Array.from({ length: 10 }, (_, i) => f.persistence.storeRetained(message('d1/t0', `v${i}`))))
  assert.deepEqual(f.persistence.retainedUsage('d1'), { messages: 3, bytes: 3 * 'd1/tN'.length + 1 + 1 + 2 })
})

test('a retained write that fails gives its place back', async (t) => {
  const f = await open(t, { retained: { limits: { messagesPerDevice: 1 } } }, { busyTimeoutMs: 50 })
  const other = new Database(join(f.dataDir, 'iothub.db'))
  t.after(() => other.close())
  other.exec('BEGIN IMMEDIATE')
  await assert.rejects(f.persistence.storeRetained(message('d1/a', 'x')), /locked/)
  other.exec('ROLLBACK')
  assert.deepEqual(f.persistence.retainedUsage('d1'), { messages: 0, bytes: 0 })
  await f.persistence.storeRetained(message('d1/b', 'x'))
  assert.equal(f.refused.length, 0)
  assert.deepEqual(await retainedTopics(f.persistence), ['d1/b'])
})

test("a client's queue keeps its newest messages: the oldest are dropped, in memory and in the store", async (t) => {
  const f = await open(t, { queue: { limits: { messages: 3 } } })
  for (let i = 1; i <= 5; i++) await f.persistence.outgoingEnqueueCombi([{ clientId: 'c1' }, { clientId: 'c2' }], message('t', `m${i}`))
  assert.deepEqual(await queued(f.persistence, 'c1'), ['m3', 'm4', 'm5'])
  assert.deepEqual(await storedQueue(f.store, 'c1'), ['m3', 'm4', 'm5'])
  assert.deepEqual(await queued(f.persistence, 'c2'), ['m3', 'm4', 'm5'], 'each client has its own queue')
  assert.deepEqual(
    f.dropped.filter((d) => d.clientId === 'c1').reduce((n, d) => n + d.count, 0),
    2
  )
  const again = await f.reopen()
  await again.outgoingEnqueue({ clientId: 'c1' }, message('t', 'm6'))
  assert.deepEqual(await queued(again, 'c1'), ['m4', 'm5', 'm6'], 'the limit holds after a restart')
})

test("a client's queue is bounded in bytes too; a message larger than the limit is not queued at all", async (t) => {
  // each message weighs 1 (topic) + 10 bytes
  const f = await open(t, { queue: { limits: { bytes: 25 } } })
  for (const p of ['aaaaaaaaaa', 'bbbbbbbbbb', 'cccccccccc']) await f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', p))
  assert.deepEqual(await queued(f.persistence, 'c'), ['bbbbbbbbbb', 'cccccccccc'])
  assert.deepEqual(f.persistence.queuedFor('c'), { messages: 2, bytes: 22 })
  await f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', 'x'.repeat(30)))
  assert.deepEqual(await queued(f.persistence, 'c'), [])
  assert.deepEqual(await storedQueue(f.store, 'c'), [])
  assert.deepEqual(f.dropped.map((d) => d.count), [1, 3])
})

test('concurrent enqueues for one client keep it within its limit', async (t) => {
  const f = await open(t, { queue: { limits: { messages: 5 } } })
  await Promise.all(Array.from({ length: 40 }, (_, i) => f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', `m${i}`))))
  const expected = ['m35', 'm36', 'm37', 'm38', 'm39']
  assert.deepEqual(await queued(f.persistence, 'c'), expected)
  assert.deepEqual(await storedQueue(f.store, 'c'), expected)
})

test('an in-flight message that was dropped: its update and its acknowledgement are no errors', async (t) => {
  const f = await open(t, { queue: { limits: { messages: 1 } } })
  const first = message('t', 'first', { messageId: undefined })
  await f.persistence.outgoingEnqueue({ clientId: 'c' }, first)
  // Aedes sends it: the message gets its messageId
  await f.persistence.outgoingUpdate({ id: 'c' }, { ...first, messageId: 1 })
  await f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', 'second'))
  assert.deepEqual(await queued(f.persistence, 'c'), ['second'])
  // a re-send of the dropped one, a PUBREC's PUBREL, its PUBACK: Aedes must not see an error
  await f.persistence.outgoingUpdate({ id: 'c' }, { ...first, messageId: 1 })
  await f.persistence.outgoingUpdate({ id: 'c' }, { cmd: 'pubrel', messageId: 1 })
  assert.equal(await f.persistence.outgoingClearMessageId({ id: 'c' }, { messageId: 1 }), undefined)
  assert.deepEqual(await queued(f.persistence, 'c'), ['second'])
  assert.deepEqual(await storedQueue(f.store, 'c'), ['second'])
})

test('an enqueue that fails drops nothing', async (t) => {
  const f = await open(t, { queue: { limits: { messages: 2 } } }, { busyTimeoutMs: 50 })
  await f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', 'm1'))
  await f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', 'm2'))
  const other = new Database(join(f.dataDir, 'iothub.db'))
  t.after(() => other.close())
  other.exec('BEGIN IMMEDIATE')
  await assert.rejects(f.persistence.outgoingEnqueue({ clientId: 'c' }, message('t', 'm3')), /locked/)
  other.exec('ROLLBACK')
  assert.deepEqual(await queued(f.persistence, 'c'), ['m1', 'm2'])
  assert.deepEqual(f.persistence.queuedFor('c'), { messages: 2, bytes: 6 })
  assert.deepEqual(f.dropped, [])
})
