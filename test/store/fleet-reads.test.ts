/**
 * The FleetReads contract (fleet-reads-contract.ts) against each implementation:
 * - the caches: a SQLite store's commits, handed back by its change log (`store.follow`) to a
 *   real SessionRegistry, TopicBook and SubscriptionBook through the hub's own cache applier,
 *   read by MemoryFleetReads — what an embedded hub answers from;
 * - PostgreSQL: the store's indexed queries (`store.fleet`), on a schema of its own per run.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import pg from 'pg'
import pino from 'pino'
import { HubMetrics } from '../../src/observability/metrics.js'
import { cacheApplier } from '../../src/registry/cache-applier.js'
import { MemoryFleetReads } from '../../src/registry/memory-fleet-reads.js'
import { SessionRegistry } from '../../src/registry/registry.js'
import { SubscriptionBook } from '../../src/registry/subscription-book.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import type { Decider } from '../../src/store/decision.js'
import { PostgresStore } from '../../src/store/postgres/postgres-store.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'
import { TEST_SERVER } from '../helpers/postgres.js'
import { SCHEMA_VERSION } from '../../src/store/postgres/schema.js'
import { session } from './contract.js'
import { fleetReadsContract } from './fleet-reads-contract.js'

/** The registry here only follows the log: it decides nothing. */
const NO_DECISIONS: Decider = {
  fromCaches: true,
  decide: () => Promise.reject(new Error('this registry only follows the change log'))
}

fleetReadsContract('caches of a SQLite store', async () => {
  const dataDir = tempDir('iothub-fleet-')
  const store = new SqliteStore({ dataDir })
  const registry = new SessionRegistry(NO_DECISIONS, new TopicBook(), new SubscriptionBook(), () => 'owner-1', new HubMetrics(), pino({ level: 'silent' }))
  const ignored = { applyChange: () => undefined }
  // the log hands this process's commits to the caches before `commit` resolves
  store.follow(0, cacheApplier({ registry, devices: ignored, properties: ignored }))
  return {
    reads: new MemoryFleetReads(registry, registry.topics, registry.subscriptions),
    commit: (mutations) => store.commit(mutations),
    close: async () => {
      await store.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
})

fleetReadsContract('PostgreSQL queries', async () => {
  const schema = `iothub_fleet_${process.pid}_${randomBytes(4).toString('hex')}`
  const store = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
  return {
    reads: store.fleet,
    commit: (mutations) => store.commit(mutations),
    close: async () => {
      await store.close()
      await dropSchema(schema)
    }
  }
})

async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_SERVER })
  await client.connect()
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`)
  } finally {
    await client.end()
  }
}

/** What schema version 4 added; dropped again, a version 4 schema is as version 3 wrote it. */
const VERSION_4_SQL = (schema: string): string[] => {
  const sessions = `${pg.escapeIdentifier(schema)}.sessions`
  const subscriptions = `${pg.escapeIdentifier(schema)}.subscriptions`
  const columns = ['device_id', 'protocol', 'connected', 'node', 'username', 'peer_host', 'clean_start', 'proto_ver', 'created_at', 'connected_at', 'expires_at']
  return [
    ...columns.map((c) => `ALTER TABLE ${sessions} DROP COLUMN ${c}`),
    `ALTER TABLE ${subscriptions} DROP COLUMN device_id`,
    `UPDATE ${pg.escapeIdentifier(schema)}.schema_version SET version = 3`
  ]
}

describe('PostgreSQL schema version 4', () => {
  it('upgrades version 3 tables in place: sessions and subscription entities written then are found by every new column', async () => {
    const schema = `iothub_fleet_${process.pid}_${randomBytes(4).toString('hex')}`
    const entity = (id: string, sessionId: string, deviceId: string) => ({
      id,
      type: 'subscription' as const,
      owner: 'o',
      source: 'iothub' as const,
      sessionId,
      deviceId,
      topic: 'v1/devices/me/attributes',
      brokerTopic: `${deviceId}/v1/devices/me/attributes`,
      properties: ['attributes' as const],
      mode: 'realtime' as const,
      filter: `insert into ${id} select ${deviceId}.attributes`,
      createdAt: 1
    })
    const offline = session('s2', { deviceId: 'd2', node: 'n2', username: null, peerHost: '10.1.1.1', protocol: 'coap', connected: false, disconnectedAt: 1000, expiryInterval: 5, cleanStart: false, protoVer: 5, createdAt: 10, connectedAt: 20 })
    const store = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
    try {
      await store.commit([
        { op: 'session.put', session: session('s1', { deviceId: 'd1', node: 'n1' }) },
        { op: 'session.put', session: offline },
        { op: 'session.version', id: 's2', version: 9 },
        { op: 'subscription.put', subscription: entity('sub-a', 's1', 'd1') }
      ])
      await store.close()
      const admin = new pg.Client({ connectionString: TEST_SERVER })
      await admin.connect()
      try {
        for (const sql of VERSION_4_SQL(schema)) await admin.query(sql)
        const upgraded = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
        try {
          const reads = upgraded.fleet
          const listed = async (filter: Parameters<typeof reads.sessions>[0]): Promise<string[]> => (await reads.sessions(filter, { limit: 10 })).sessions.map((s) => s.id)
          assert.deepEqual(await listed({ deviceId: 'd2' }), ['s2'])
          assert.deepEqual(await listed({ node: 'n1' }), ['s1'])
          assert.deepEqual(await listed({ connected: false, protocol: 'coap', cleanStart: false, protoVer: 5 }), ['s2'])
          assert.deepEqual(await listed({ peerHost: '10.1.1.1', usernameLike: '' }), ['s2'])
          assert.deepEqual(await listed({ username: 'dev-s1' }), ['s1'])
          assert.deepEqual(await listed({ createdAtFrom: 10, createdAtTo: 10, connectedAtFrom: 20, connectedAtTo: 20 }), ['s2'])
          assert.deepEqual(await reads.dueToExpire(5_999, undefined, 10), [])
          assert.deepEqual(await reads.dueToExpire(6_000, undefined, 10), [{ ...offline, version: 9 }])
          assert.deepEqual((await reads.receiving('d1', 'attributes')).map((e) => e.id), ['sub-a'])
          assert.deepEqual((await admin.query(`SELECT version FROM ${pg.escapeIdentifier(schema)}.schema_version`)).rows, [{ version: SCHEMA_VERSION }])
          // and what is written from now on fills the columns itself
          await upgraded.commit([{ op: 'session.put', session: session('s3', { deviceId: 'd1' }) }])
          assert.deepEqual(await listed({ deviceId: 'd1' }), ['s1', 's3'])
        } finally {
          await upgraded.close()
        }
      } finally {
        await admin.end()
      }
    } finally {
      await dropSchema(schema)
    }
  })
})
