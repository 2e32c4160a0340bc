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
import { DeviceDirectory } from '../../src/registry/device-directory.js'
import { MemoryFleetReads } from '../../src/registry/memory-fleet-reads.js'
import { SessionRegistry } from '../../src/registry/registry.js'
import { SubscriptionBook } from '../../src/registry/subscription-book.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import type { Decider } from '../../src/store/decision.js'
import { PostgresStore } from '../../src/store/postgres/postgres-store.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { eventually, tempDir } from '../helpers/hub.js'
import { TEST_SERVER } from '../helpers/postgres.js'
import { SCHEMA_VERSION } from '../../src/store/postgres/schema.js'
import type { Mutation } from '../../src/store/store.js'
import { topicCursor, type FleetTotals } from '../../src/store/fleet-reads.js'
import { device, session, subscription } from './contract.js'
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
  const devices = new DeviceDirectory(store, false)
  // the log hands this process's commits to the caches before `commit` resolves
  store.follow(0, cacheApplier({ registry, devices, properties: ignored }))
  return {
    reads: new MemoryFleetReads(registry, registry.topics, registry.subscriptions, devices),
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

/** The stored totals and what the tables hold, read in one snapshot. */
async function totalsAndRows(admin: pg.Client, schema: string): Promise<{ stored: { sessions: number; topics: number }; rows: { sessions: number; topics: number } }> {
  const q = pg.escapeIdentifier(schema)
  const { rows } = await admin.query<{ s: string; t: string; rs: string; rt: string }>(
    `SELECT h.sessions AS s, h.topics AS t, (SELECT count(*) FROM ${q}.sessions) AS rs, (SELECT count(*) FROM ${q}.topics) AS rt FROM ${q}.log_head h`
  )
  const row = rows[0]!
  return { stored: { sessions: Number(row.s), topics: Number(row.t) }, rows: { sessions: Number(row.rs), topics: Number(row.rt) } }
}

/** A fresh schema with a store open on it and an admin connection, for an upgrade test: both ended, the schema dropped, after. */
async function inScratchSchema(test: (scratch: { schema: string; q: string; store: PostgresStore; admin: pg.Client }) => Promise<void>): Promise<void> {
  const schema = `iothub_fleet_${process.pid}_${randomBytes(4).toString('hex')}`
  const store = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
  const admin = new pg.Client({ connectionString: TEST_SERVER })
  await admin.connect()
  try {
    await test({ schema, q: pg.escapeIdentifier(schema), store, admin })
  } finally {
    await admin.end()
    await dropSchema(schema)
  }
}

describe('PostgreSQL schema version 5: the totals of sessions and topics', () => {
  it('upgrades a version 4 store in place, counting what it holds once; its batches move them from then on', async () => {
    await inScratchSchema(async ({ schema, q, store, admin }) => {
    await store.commit([
      ...['u1', 'u2', 'u3'].map((id) => ({ op: 'session.put' as const, session: session(id) })),
      { op: 'topic.put', sessionId: 'u1', subscription: { topic: 'a', qos: 1 }, persistent: true },
      { op: 'topic.put', sessionId: 'u1', subscription: { topic: 'b', qos: 1 }, persistent: true },
      { op: 'topic.put', sessionId: 'u3', subscription: { topic: 'a', qos: 0 }, persistent: true }
    ])
    await store.close()
    // as version 4 left it: no totals, and rows its batches wrote since
    await admin.query(`ALTER TABLE ${q}.log_head DROP COLUMN sessions, DROP COLUMN topics`)
    await admin.query(`UPDATE ${q}.schema_version SET version = 4`)
    await admin.query(`INSERT INTO ${q}.sessions SELECT 'u4', doc, version, 'dev-u4', protocol, connected, node, username, peer_host, clean_start, proto_ver, created_at, connected_at, expires_at FROM ${q}.sessions WHERE id = 'u1'`)
    await admin.query(`INSERT INTO ${q}.topics (session_id, topic, qos, persistent) VALUES ('u4', 'c', 2, true)`)

    const upgraded = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
    try {
      assert.deepEqual((await admin.query(`SELECT version FROM ${q}.schema_version`)).rows, [{ version: SCHEMA_VERSION }])
      assert.deepEqual(await totalsAndRows(admin, schema), { stored: { sessions: 4, topics: 4 }, rows: { sessions: 4, topics: 4 } })
      assert.equal(await upgraded.fleet.countSessions({}), 4)
      assert.equal(await upgraded.fleet.countTopics({}), 4)
      await upgraded.commit([{ op: 'session.delete', id: 'u4' }, { op: 'topic.clear', sessionId: 'u4' }, { op: 'session.put', session: session('u5') }, { op: 'session.put', session: session('u6') }])
      assert.deepEqual(await totalsAndRows(admin, schema), { stored: { sessions: 5, topics: 3 }, rows: { sessions: 5, topics: 3 } })
      assert.deepEqual(await upgraded.fleet.totals(), { sessions: 5, connectedByProtocol: { mqtt: 5 }, connectedByNode: { 'iothub@test': 5 }, subscriptions: 0, devices: 0 })
    } finally {
      await upgraded.close()
    }
    // opening a version 5 store again leaves its totals alone
    const again = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
    await again.close()
    assert.deepEqual((await totalsAndRows(admin, schema)).stored, { sessions: 5, topics: 3 })
    })
  })

  it('stays exact while two replicas write the same sessions and topics at once', async () => {
    const schema = `iothub_fleet_${process.pid}_${randomBytes(4).toString('hex')}`
    // a long deadline: the batches below wait on a lock the test holds
    const a = await PostgresStore.open({ connectionString: TEST_SERVER, schema, replica: 'replica-a', timeoutMs: 60_000 })
    const b = await PostgresStore.open({ connectionString: TEST_SERVER, schema, replica: 'replica-b', timeoutMs: 60_000 })
    const admin = new pg.Client({ connectionString: TEST_SERVER })
    await admin.connect()
    const holder = new pg.Client({ connectionString: TEST_SERVER })
    await holder.connect()
    try {
      // Both replicas put the same new session and topic, then both delete them, each pair
      // forced to overlap: the log head is held while both batches run their statements, so
      // A's inserts are not yet committed when B's upserts reach the same rows and wait for
      // them. Only one insert and one delete of each row may count.
      const q = pg.escapeIdentifier(schema)
      const overlapping = async (batch: Mutation[]): Promise<void> => {
        await holder.query('BEGIN')
        await holder.query(`SELECT FROM ${q}.log_head FOR UPDATE`)
        const both = [a.commit(batch), b.commit(batch)]
        // A waits for the log head, B for A's rows
        await eventually(
          async () => {
            const { rows } = await admin.query<{ n: string }>(
              `SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND strpos(query, $1) > 0`,
              [q]
            )
            return Number(rows[0]!.n) >= 2 || undefined
          },
          30_000,
          'both batches to wait'
        )
        await holder.query('COMMIT')
        await Promise.all(both)
      }
      await overlapping([{ op: 'session.put', session: session('x') }, { op: 'topic.put', sessionId: 'x', subscription: { topic: 't', qos: 1 }, persistent: true }])
      assert.deepEqual(await totalsAndRows(admin, schema), { stored: { sessions: 1, topics: 1 }, rows: { sessions: 1, topics: 1 } })
      // the one that found the row the other inserted ran again, reading it: one connected session
      assert.deepEqual(await a.fleet.totals(), await countedTotals(admin, schema))
      assert.deepEqual((await a.fleet.totals()).connectedByNode, { 'iothub@test': 1 })
      await overlapping([{ op: 'session.delete', id: 'x' }, { op: 'topic.clear', sessionId: 'x' }])
      assert.deepEqual(await totalsAndRows(admin, schema), { stored: { sessions: 0, topics: 0 }, rows: { sessions: 0, topics: 0 } })

      // both replicas put, delete and clear rows of the same 12 sessions, racing for each row:
      // which of them inserts a row and which finds it there, which deletes it and which finds
      // nothing, is the database's to decide
      // mulberry32: the same run every time
      let seed = 7
      const random = (n: number): number => {
        seed = (seed + 0x6d2b79f5) | 0
        let x = Math.imul(seed ^ (seed >>> 15), seed | 1)
        x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
        return ((x ^ (x >>> 14)) >>> 0) % n
      }
      const mutation = (): Mutation => {
        const id = `r${random(12)}`
        switch (random(10)) {
          case 0:
            return { op: 'session.delete', id }
          case 1:
            return { op: 'topic.delete', sessionId: id, topic: `t${random(3)}` }
          case 2:
            return { op: 'topic.clear', sessionId: id }
          case 3:
            return { op: 'topic.put', sessionId: id, subscription: { topic: `t${random(3)}`, qos: 1 }, persistent: true }
          case 4:
            // connected or not, on one of two protocols and nodes: the connected totals move
            return {
              op: 'session.put',
              session: session(id, { connected: random(2) === 0, protocol: random(2) === 0 ? 'mqtt' : 'coap', node: `n${random(2)}` })
            }
          case 5:
            return random(2) === 0 ? { op: 'device.put', device: device(`dev-${id}`) } : { op: 'device.delete', id: `dev-${id}` }
          case 6:
            return { op: 'subscription.put', subscription: subscription(`e-${id}-${random(2)}`, id) }
          case 7:
            return { op: 'subscription.delete', id: `e-${id}-${random(2)}` }
          case 8:
            return { op: 'subscription.clear', sessionId: id }
          default:
            return { op: 'session.put', session: session(id) }
        }
      }
      const writes: Promise<void>[] = []
      for (let i = 0; i < 400; i++) {
        const batch = Array.from({ length: 1 + random(4) }, mutation)
        writes.push((i % 2 === 0 ? a : b).commit(batch))
      }
      await Promise.all(writes)
      const { stored, rows } = await totalsAndRows(admin, schema)
      assert.ok(rows.sessions > 0 && rows.topics > 0, `some rows are left: ${JSON.stringify(rows)}`)
      assert.deepEqual(stored, rows)
      const truth = await countedTotals(admin, schema)
      assert.ok(truth.devices > 0 && truth.subscriptions > 0 && Object.keys(truth.connectedByNode).length > 0, `some of each are left: ${JSON.stringify(truth)}`)
      for (const store of [a, b]) {
        assert.equal(await store.fleet.countSessions({}), rows.sessions)
        assert.equal(await store.fleet.countTopics({}), rows.topics)
        assert.deepEqual(await store.fleet.totals(), truth)
      }
    } finally {
      await holder.end()
      await admin.end()
      await a.close()
      await b.close()
      await dropSchema(schema)
    }
  })
})

/** The fleet's totals as counting the tables finds them: what the stored totals must equal. */
async function countedTotals(admin: pg.Client, schema: string): Promise<FleetTotals> {
  const q = pg.escapeIdentifier(schema)
  const { rows } = await admin.query<{ sessions: string; subscriptions: string; devices: string; connected: { protocol: string; node: string; n: number }[] }>(
    `SELECT (SELECT count(*) FROM ${q}.sessions) AS sessions, (SELECT count(*) FROM ${q}.subscriptions) AS subscriptions, ` +
      `(SELECT count(*) FROM ${q}.devices) AS devices, ` +
      `(SELECT coalesce(json_agg(c), '[]') FROM (SELECT protocol, node, count(*) AS n FROM ${q}.sessions WHERE connected GROUP BY protocol, node) c) AS connected`
  )
  const row = rows[0]!
  const totals: FleetTotals = { sessions: Number(row.sessions), connectedByProtocol: {}, connectedByNode: {}, subscriptions: Number(row.subscriptions), devices: Number(row.devices) }
  for (const { protocol, node, n } of row.connected) {
    const p = protocol as keyof FleetTotals['connectedByProtocol']
    totals.connectedByProtocol[p] = (totals.connectedByProtocol[p] ?? 0) + n
    totals.connectedByNode[node] = (totals.connectedByNode[node] ?? 0) + n
  }
  return totals
}

describe('PostgreSQL schema version 7: devices, subscription entities and connected sessions by protocol and node stored', () => {
  it('upgrades a version 6 store in place, counting what it holds once; its batches move them from then on', async () => {
    await inScratchSchema(async ({ schema, q, store, admin }) => {
    await store.commit([
      { op: 'device.put', device: device('d1') },
      { op: 'device.put', device: device('d2') },
      { op: 'session.put', session: session('s1', { node: 'n1' }) },
      { op: 'session.put', session: session('s2', { protocol: 'coap', node: 'n2' }) },
      { op: 'session.put', session: session('s3', { connected: false, node: 'n1' }) },
      { op: 'subscription.put', subscription: subscription('e1', 's1') },
      { op: 'subscription.put', subscription: subscription('e2', 's2') }
    ])
    await store.close()
    // as version 6 left it: no such totals, and rows its batches wrote since
    await admin.query(`DROP TABLE ${q}.connected_totals`)
    await admin.query(`ALTER TABLE ${q}.log_head DROP COLUMN devices, DROP COLUMN subscriptions`)
    await admin.query(`UPDATE ${q}.schema_version SET version = 6`)
    await admin.query(
      `INSERT INTO ${q}.sessions SELECT 's4', doc, version, 'dev-s4', protocol, connected, node, username, peer_host, clean_start, proto_ver, created_at, connected_at, expires_at FROM ${q}.sessions WHERE id = 's1'`
    )
    await admin.query(`INSERT INTO ${q}.devices (id, doc, owner, group_name, name) SELECT 'd3', doc, owner, group_name, name FROM ${q}.devices WHERE id = 'd1'`)

    const upgraded = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
    try {
      assert.deepEqual((await admin.query(`SELECT version FROM ${q}.schema_version`)).rows, [{ version: SCHEMA_VERSION }])
      const expected: FleetTotals = { sessions: 4, connectedByProtocol: { mqtt: 2, coap: 1 }, connectedByNode: { n1: 2, n2: 1 }, subscriptions: 2, devices: 3 }
      assert.deepEqual(await countedTotals(admin, schema), expected)
      assert.deepEqual(await upgraded.fleet.totals(), expected)
      // a disconnect, a takeover moving a session to another node and protocol, a new
      // connection, a device deleted and a session's entities cleared
      await upgraded.commit([
        { op: 'session.put', session: session('s1', { connected: false, node: 'n1' }) },
        { op: 'session.put', session: session('s4', { protocol: 'coap', node: 'n3' }) },
        { op: 'session.put', session: session('s5', { node: 'n3' }) },
        { op: 'device.delete', id: 'd3' },
        { op: 'subscription.clear', sessionId: 's2' }
      ])
      const moved: FleetTotals = { sessions: 5, connectedByProtocol: { mqtt: 1, coap: 2 }, connectedByNode: { n2: 1, n3: 2 }, subscriptions: 1, devices: 2 }
      assert.deepEqual(await countedTotals(admin, schema), moved)
      assert.deepEqual(await upgraded.fleet.totals(), moved)
      // a connected session deleted
      await upgraded.commit([{ op: 'session.delete', id: 's2' }, { op: 'subscription.clear', sessionId: 's2' }])
      assert.deepEqual(await upgraded.fleet.totals(), { sessions: 4, connectedByProtocol: { mqtt: 1, coap: 1 }, connectedByNode: { n3: 2 }, subscriptions: 1, devices: 2 })
      assert.deepEqual(await upgraded.fleet.totals(), await countedTotals(admin, schema))
    } finally {
      await upgraded.close()
    }
    // opening a version 7 store again leaves its totals alone
    await admin.query(`UPDATE ${q}.log_head SET devices = devices + 100`)
    const again = await PostgresStore.open({ connectionString: TEST_SERVER, schema })
    try {
      assert.equal((await again.fleet.totals()).devices, 102)
    } finally {
      await again.close()
    }
    })
  })
})

describe('PostgreSQL marks: where an offset page of a whole listing can start', () => {
  it('names every n-th session and topic row in the listing’s order, and a page read after a mark is the page at its offset', async () => {
    await inScratchSchema(async ({ store }) => {
      try {
        await marksMatchOffsets(store)
      } finally {
        await store.close()
      }
    })
  })
})

/** Marks of a small fleet against the listing itself: each the row at its place, each a page start the same as its offset. */
async function marksMatchOffsets(store: PostgresStore): Promise<void> {
  // ids whose byte order is not their code points’ nor a locale’s: upper before lower, U+FFFD before an emoji
  const ids = ['A1', 'B2', 'a1', 'b1', 'b2', 'é3', '\uFFFD', '\u{1F600}', ...Array.from({ length: 19 }, (_, i) => `s-${String(i).padStart(2, '0')}`)]
  await store.commit([
    ...ids.map((id): Mutation => ({ op: 'session.put', session: session(id) })),
    ...ids.flatMap((id, i): Mutation[] =>
      ['t/1', 't/2', 'u'].slice(0, 1 + (i % 3)).map((topic) => ({ op: 'topic.put', sessionId: id, subscription: { topic, qos: 1 }, persistent: true }))
    )
  ])
  const fleet = store.fleet
  const every = 4
  const all = (await fleet.sessions({}, { limit: 100 })).sessions.map((s) => s.id)
  assert.equal(all.length, ids.length)
  const sessionMarks = await fleet.marks('sessions', every)
  assert.deepEqual(sessionMarks, all.filter((_, i) => (i + 1) % every === 0))
  for (let k = 0; k < sessionMarks.length; k++) {
    for (const skip of [0, 1, 3]) {
      const fromMark = await fleet.sessions({}, { after: sessionMarks[k]!, ...(skip > 0 ? { offset: skip } : {}), limit: 3 })
      const byOffset = await fleet.sessions({}, { offset: (k + 1) * every + skip, limit: 3 })
      assert.deepEqual(fromMark, byOffset, `sessions: mark ${k}, skip ${skip}`)
    }
  }

  const rows = (await fleet.topics({}, { limit: 1000 })).topics
  const topicMarks = await fleet.marks('topics', every)
  assert.deepEqual(topicMarks, rows.filter((_, i) => (i + 1) % every === 0).map((r) => topicCursor(r)))
  for (let k = 0; k < topicMarks.length; k++) {
    const fromMark = await fleet.topics({}, { after: topicMarks[k]!, offset: 2, limit: 3 })
    assert.deepEqual(fromMark, await fleet.topics({}, { offset: (k + 1) * every + 2, limit: 3 }), `topics: mark ${k}`)
  }
}
