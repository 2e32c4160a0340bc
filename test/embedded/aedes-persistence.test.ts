/**
 * aedes-persistence's own abstract test suite — the conformance suite every Aedes persistence
 * must pass — run against our persistence on a real SQLite store, one fresh file per test.
 */
import { rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { StoreAedesPersistence } from '../../src/embedded/aedes-persistence.js'
import { decodePacket } from '../../src/embedded/packet-codec.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'

type AbstractSuite = (options: { test: typeof test; persistence: () => Promise<unknown>; testAsync: boolean }) => void
const abstractPersistence = createRequire(import.meta.url)('aedes-persistence/abstract.js') as AbstractSuite

abstractPersistence({
  test,
  testAsync: true,
  persistence: async () => {
    const dataDir = tempDir('iothub-aedes-persistence-')
    const store = new SqliteStore({ dataDir })
    return new StoreAedesPersistence(store, new TopicBook(), {
      onDestroy: async () => {
        await store.close()
        rmSync(dataDir, { recursive: true, force: true })
      }
    })
  }
})

test('outgoingUpdate stores the packet Aedes is delivering, whose write callback cannot be stored', async () => {
  const dataDir = tempDir('iothub-aedes-persistence-')
  const store = new SqliteStore({ dataDir })
  const persistence = new StoreAedesPersistence(store, new TopicBook())
  try {
    await persistence.setup({ id: 'broker-now' })
    const queued = { cmd: 'publish', topic: 't', payload: Buffer.from('m'), qos: 1, brokerId: 'broker-before', brokerCounter: 7 }
    await persistence.outgoingEnqueueCombi([{ clientId: 'c' }], queued)
    // a delivery of another run's broker reusing the queued message's (still unset) id, as
    // Aedes hands it over: with its write callback
    const delivering = { cmd: 'publish', topic: 't', payload: Buffer.from('n'), qos: 1, brokerId: 'broker-now', brokerCounter: 1, writeCallback: () => undefined }
    await persistence.outgoingUpdate({ id: 'c' }, delivering)
    const stored = (await store.load()).outgoing
    assert.equal(stored.length, 1)
    assert.equal(decodePacket<{ payload: Buffer }>(stored[0]!.packet).payload.toString(), 'n', 'the delivered packet replaced the queued one')
  } finally {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  }
})
