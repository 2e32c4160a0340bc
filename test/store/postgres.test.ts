/**
 * The Store contract against a real PostgreSQL, plus what only PostgreSQL has: a schema version
 * row, batches regrouped into multi-row statements (checked against SQLite, which runs mutations
 * one by one), connections that die and must be replaced, and many concurrent commits.
 *
 * Needs a server: 127.0.0.1:5432, database `test`, user `postgres`, trust auth — or
 * IOTHUB_TEST_DATABASE_URL. Each store lives in a schema of its own, dropped afterwards.
 */
import { loadAll } from '../helpers/snapshot.js'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import pg from 'pg'
import type { Device } from '../../src/domain/device.js'
import type { SessionRecord } from '../../src/domain/session.js'
import type { SubscriptionEntity } from '../../src/domain/subscription.js'
import type { CommitObserver } from '../../src/store/group-commit.js'
import { PostgresStore, type PostgresStoreOptions } from '../../src/store/postgres/postgres-store.js'
import { SCHEMA_VERSION } from '../../src/store/postgres/schema.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { StoreError, type Mutation, type Snapshot } from '../../src/store/store.js'
import { device as contractDevice, session as contractSession, storeContract } from './contract.js'

const DATABASE_URL = process.env.IOTHUB_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

const freshSchema = (): string => `iothub_test_${process.pid}_${randomBytes(4).toString('hex')}`

/** The database URL with an application_name, by which a test finds its store's connections. */
function urlNamed(applicationName: string): string {
  const url = new URL(DATABASE_URL)
  url.searchParams.set('application_name', applicationName)
  return url.toString()
}

async function withAdmin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: DATABASE_URL })
  await client.connect()
  try {
    return await work(client)
  } finally {
    await client.end()
  }
}

const dropSchema = (schema: string): Promise<unknown> => withAdmin((c) => c.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`))

const failuresOf = (failures: Error[]): CommitObserver => ({ committed: () => undefined, failed: (error) => failures.push(error) })

storeContract('postgres', async () => {
  const schema = freshSchema()
  return {
    open: async (options = {}) =>
      PostgresStore.open({
        connectionString: DATABASE_URL,
        schema,
        maxBatch: options.maxBatch,
        observer: options.onBatch ? { committed: (commits) => options.onBatch!(commits), failed: () => undefined } : undefined
      }),
    destroy: () => dropSchema(schema).then(() => undefined)
  }
})

/** The contract's device, with a document that shows whether key order and odd strings survive. */
const device = (id: string, name = `name-${id}`): Device => ({
  ...contractDevice(id),
  name,
  ext: { zeta: 1, alpha: { '\u0000': 'nul', lone: '\ud800' } }
})

const session = (id: string, version: number): SessionRecord => contractSession(id, { version })

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text))

/** A snapshot with every list in one order, and packets as text, to compare two backends. */
function normalized(s: Snapshot) {
  const by = <T>(key: (item: T) => string) => (a: T, b: T) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0)
  const text = (p: Uint8Array) => Buffer.from(p).toString()
  return {
    devices: [...s.devices].sort(by((d) => d.id)),
    deviceProperties: [...s.deviceProperties].sort(by((p) => `${p.deviceId} ${p.name}`)),
    subscriptions: [...s.subscriptions].sort(by((e) => e.id)),
    sessions: [...s.sessions].sort(by((x) => x.id)),
    topics: [...s.topics].sort(by((t) => `${t.sessionId} ${t.subscription.topic}`)),
    retained: s.retained.map((r) => [r.topic, text(r.packet)]).sort(),
    outgoing: s.outgoing.map((o) => [o.clientId, o.seq, text(o.packet)]),
    incoming: s.incoming.map((i) => [i.clientId, i.messageId, text(i.packet)]).sort(),
    wills: s.wills.map((w) => [w.clientId, text(w.packet)]).sort(),
    journal: s.journal.map((j) => [j.seq, text(j.packet)])
  }
}

/** Small deterministic PRNG (mulberry32), so a failing random batch can be replayed. */
function random(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A random mutation over few keys, so one batch touches the same rows many times over. */
function randomMutation(next: () => number, n: number): Mutation {
  const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!
  const sessionId = pick(['s0', 's1', 's2'])
  const clientId = pick(['c0', 'c1'])
  const packet = bytes(`p${n}`)
  const all: (() => Mutation)[] = [
    () => ({ op: 'device.put', device: device(pick(['d0', 'd1']), `n${n}`) }),
    () => ({ op: 'session.put', session: session(sessionId, n) }),
    () => ({ op: 'session.version', id: sessionId, version: 1000 + n }),
    () => ({ op: 'session.delete', id: sessionId }),
    () => ({ op: 'topic.put', sessionId, subscription: { topic: pick(['a', 'b', 'c']), qos: pick([0, 1, 2] as const), ...(next() < 0.5 ? { rap: true, subscriptionIdentifier: n } : {}) }, persistent: next() < 0.5 }),
    () => ({ op: 'topic.delete', sessionId, topic: pick(['a', 'b', 'c']) }),
    () => ({ op: 'topic.clear', sessionId }),
    () => ({ op: 'subscription.put', subscription: { id: pick(['e0', 'e1', 'e2']), type: 'subscription', owner: 'o', source: 'iothub', sessionId, deviceId: 'd', topic: 't', brokerTopic: 'd/t', properties: ['raw'], mode: 'realtime', filter: `f${n}`, createdAt: n } }),
    () => ({ op: 'subscription.delete', id: pick(['e0', 'e1', 'e2']) }),
    () => ({ op: 'subscription.clear', sessionId }),
    () => ({ op: 'device.property', deviceId: pick(['d0', 'd1']), name: pick(['attributes', 'telemetry']), value: { n }, updatedAt: n }),
    () => ({ op: 'retained.put', topic: pick(['r0', 'r1']), packet }),
    () => ({ op: 'retained.delete', topic: pick(['r0', 'r1']) }),
    () => ({ op: 'outgoing.put', clientId, seq: pick([1, 2, 3]), packet }),
    () => ({ op: 'outgoing.delete', clientId, seq: pick([1, 2, 3]) }),
    () => ({ op: 'outgoing.clear', clientId }),
    () => ({ op: 'incoming.put', clientId, messageId: pick([1, 2]), packet }),
    () => ({ op: 'incoming.delete', clientId, messageId: pick([1, 2]) }),
    () => ({ op: 'incoming.clear', clientId }),
    () => ({ op: 'will.put', clientId, packet }),
    () => ({ op: 'will.delete', clientId }),
    () => ({ op: 'journal.put', seq: pick([1, 2, 3]), packet }),
    () => ({ op: 'journal.delete', seq: pick([1, 2, 3]) })
  ]
  return pick(all)()
}

/** Finds this store's backends by application_name (see urlNamed) and ends them. */
async function terminateBackends(applicationName: string, condition = 'true'): Promise<number> {
  return withAdmin(async (c) => {
    const ended = await c.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() AND ${condition}`,
      [applicationName]
    )
    return ended.rowCount ?? 0
  })
}

/**
 * A TCP pass-through to the test server that can drop a connection at the moment it carries a
 * BEGIN: a network failure at the one point where the writer may safely run its batch again.
 */
async function droppingProxy(): Promise<{ url: string; dropped: number; dropAtNextBegin(): void; close(): Promise<void> }> {
  const target = new URL(DATABASE_URL)
  const sockets = new Set<Socket>()
  const state = { armed: false, dropped: 0 }
  // a simple-protocol Query message ('Q', length, text) holding exactly BEGIN
  const begin = Buffer.concat([Buffer.from('Q'), Buffer.from([0, 0, 0, 10]), Buffer.from('BEGIN\0')])
  const server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => undefined)
    }
    client.on('data', (data: Buffer) => {
      if (state.armed && data.includes(begin)) {
        state.armed = false
        state.dropped++
        client.destroy()
        upstream.destroy()
        return
      }
      upstream.write(data)
    })
    upstream.pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = new URL(DATABASE_URL)
  url.hostname = '127.0.0.1'
  url.port = String((server.address() as AddressInfo).port)
  return {
    url: url.toString(),
    get dropped() {
      return state.dropped
    },
    dropAtNextBegin: () => {
      state.armed = true
    },
    close: async () => {
      for (const socket of sockets) socket.destroy()
      await new Promise((resolve) => server.close(resolve))
    }
  }
}

describe('PostgresStore', () => {
  const schemas: string[] = []
  const schemaForTest = (): string => {
    const schema = freshSchema()
    schemas.push(schema)
    return schema
  }
  // Every store a test opens is closed here too (closing twice is harmless): a test that fails
  // before its own close() must not leave a pool open and keep the process from exiting.
  const opened: PostgresStore[] = []
  const open = async (options: PostgresStoreOptions): Promise<PostgresStore> => {
    const store = await PostgresStore.open(options)
    opened.push(store)
    return store
  }
  after(async () => {
    for (const store of opened) await store.close()
    for (const schema of schemas) await dropSchema(schema)
  })

  it('creates its tables in its own schema, records the schema version, and refuses a newer one', async () => {
    const schema = schemaForTest()
    const store = await open({ connectionString: DATABASE_URL, schema })
    await store.close()
    await (await open({ connectionString: DATABASE_URL, schema })).close() // opening again is harmless
    await withAdmin(async (c) => {
      const tables = await c.query<{ table_name: string }>('SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1', [schema])
      assert.deepEqual(
        tables.rows.map((r) => r.table_name),
        [
          'change_log',
          'connected_totals',
          'device_properties',
          'devices',
          'incoming',
          'leases',
          'log_head',
          'outgoing',
          'publish_journal',
          'push_journal',
          'replicas',
          'retained',
          'schema_version',
          'session_tombstones',
          'sessions',
          'store_keys',
          'subscriptions',
          'topics',
          'wills'
        ]
      )
      const version = await c.query<{ version: number }>(`SELECT version FROM ${pg.escapeIdentifier(schema)}.schema_version`)
      assert.deepEqual(version.rows, [{ version: SCHEMA_VERSION }])
      await c.query(`UPDATE ${pg.escapeIdentifier(schema)}.schema_version SET version = $1`, [SCHEMA_VERSION + 1])
    })
    await assert.rejects(PostgresStore.open({ connectionString: DATABASE_URL, schema }), (error: Error) => {
      assert.ok(error instanceof StoreError)
      assert.match(error.message, new RegExp(`schema version ${SCHEMA_VERSION + 1}; this iothub knows up to ${SCHEMA_VERSION}`))
      return true
    })
  })

  it('upgrades a version 7 store in place: it gains the push journal, and keeps what it held', async () => {
    const schema = schemaForTest()
    const q = pg.escapeIdentifier(schema)
    const first = await open({ connectionString: DATABASE_URL, schema })
    await first.commit([{ op: 'device.put', device: device('kept') }])
    await first.close()
    // as version 7 left it: no push journal
    await withAdmin(async (c) => {
      await c.query(`DROP TABLE ${q}.push_journal`)
      await c.query(`UPDATE ${q}.schema_version SET version = 7`)
    })
    const upgraded = await open({ connectionString: DATABASE_URL, schema })
    try {
      const push = { run: 'n#1.x', seq: 1, topic: 'kept/v1/devices/me/attributes', payload: Buffer.from('{}'), qos: 1 as const, at: 5 }
      await upgraded.commit([{ op: 'device.property', deviceId: 'kept', name: 'attributes', value: {}, updatedAt: 5 }, { op: 'push.put', push }])
      assert.deepEqual((await upgraded.readPushes('n#1.x', 0, 10)).map((p) => [p.run, p.seq]), [['n#1.x', 1]])
      assert.equal((await upgraded.readDevice('kept'))?.id, 'kept')
      await withAdmin(async (c) => assert.deepEqual((await c.query(`SELECT version FROM ${q}.schema_version`)).rows, [{ version: SCHEMA_VERSION }]))
    } finally {
      await upgraded.close()
    }
  })

  it("upgrades a version 8 store in place: it gains the index of the journal's commands", async () => {
    const schema = schemaForTest()
    const q = pg.escapeIdentifier(schema)
    const indexes = () => withAdmin(async (c) => (await c.query<{ indexname: string }>('SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname', [schema, 'push_journal'])).rows.map((r) => r.indexname))
    await (await open({ connectionString: DATABASE_URL, schema })).close()
    assert.ok((await indexes()).includes('push_journal_in_order'), 'a new store has it')
    // as version 8 left it: no such index
    await withAdmin(async (c) => {
      await c.query(`DROP INDEX ${q}.push_journal_in_order`)
      await c.query(`UPDATE ${q}.schema_version SET version = 8`)
    })
    await (await open({ connectionString: DATABASE_URL, schema })).close()
    assert.ok((await indexes()).includes('push_journal_in_order'), 'an upgraded one gains it')
  })

  it("tells the operator when the server's autovacuum is off, and says nothing when it is on", async () => {
    const store = await open({ connectionString: DATABASE_URL, schema: schemaForTest() })
    const admin = new pg.Client({ connectionString: DATABASE_URL })
    await admin.connect()
    let setting: string
    try {
      setting = (await admin.query<{ autovacuum: string }>('SHOW autovacuum')).rows[0]!.autovacuum
    } finally {
      await admin.end()
    }
    // the server's own setting decides (it is server-wide; a test cannot switch it for itself)
    const warnings = await store.serverWarnings()
    if (setting === 'on') assert.deepEqual(warnings, [])
    else assert.match(warnings.join('\n'), /autovacuum is off/)
  })

  it('quotes a schema name that needs it', async () => {
    const schema = `${schemaForTest()} "Odd"; name`
    schemas.push(schema)
    const store = await open({ connectionString: DATABASE_URL, schema })
    await store.commit([{ op: 'retained.put', topic: 'q', packet: bytes('quoted') }])
    assert.deepEqual(normalized(await loadAll(store)).retained, [['q', 'quoted']])
    await store.close()
  })

  it('refuses to open on a server it cannot reach, or with a pool too small for its writer', async () => {
    await assert.rejects(PostgresStore.open({ connectionString: 'postgres://postgres@127.0.0.1:1/test' }), (error: Error) => {
      assert.ok(error instanceof StoreError)
      assert.match(error.message, /cannot open the PostgreSQL store/)
      return true
    })
    await assert.rejects(PostgresStore.open({ connectionString: DATABASE_URL, poolSize: 1 }), StoreError)
  })

  it('keeps values exactly: JSON key order, \\u0000 and lone surrogates in documents, empty packets', async () => {
    const schema = schemaForTest()
    const store = await open({ connectionString: DATABASE_URL, schema })
    const value = { z: 1, a: { '\u0000': '\u0000', s: '\udc00' }, big: 2 ** 53 - 1, f: 0.1 }
    await store.commit([
      { op: 'device.put', device: device('exact') },
      { op: 'device.property', deviceId: 'exact', name: 'telemetry', value, updatedAt: 2 ** 52 },
      { op: 'outgoing.put', clientId: 'exact', seq: 2 ** 53 - 1, packet: new Uint8Array(0) },
      { op: 'session.put', session: session('exact', 1) },
      { op: 'session.version', id: 'exact', version: 2 }
    ])
    await store.commit([{ op: 'session.version', id: 'exact', version: 3 }])
    const snapshot = await loadAll(store)
    assert.equal(JSON.stringify(snapshot.devices[0]), JSON.stringify(device('exact')), 'same text, key order included')
    assert.equal(JSON.stringify(snapshot.deviceProperties[0]?.value), JSON.stringify(value))
    assert.equal(snapshot.deviceProperties[0]?.updatedAt, 2 ** 52)
    assert.deepEqual(snapshot.outgoing, [{ clientId: 'exact', seq: 2 ** 53 - 1, packet: Buffer.alloc(0) }])
    assert.equal(JSON.stringify(snapshot.sessions[0]), JSON.stringify(session('exact', 3)), 'the version is set in place')
    await store.close()
  })

  it('applies a batch’s mutations in order though it groups them per table', async () => {
    const schema = schemaForTest()
    const store = await open({ connectionString: DATABASE_URL, schema })
    const sub = (id: string, sessionId: string): SubscriptionEntity => ({
      id, type: 'subscription', owner: 'o', source: 'iothub', sessionId, deviceId: 'd', topic: 't', brokerTopic: 'd/t',
      properties: ['raw'], mode: 'realtime', filter: 'f', createdAt: 1
    })
    await store.commit([
      { op: 'retained.put', topic: 'r3', packet: bytes('old') },
      { op: 'topic.put', sessionId: 'sA', subscription: { topic: 't1', qos: 0 }, persistent: true },
      { op: 'topic.put', sessionId: 'sA', subscription: { topic: 't2', qos: 0 }, persistent: true },
      { op: 'subscription.put', subscription: sub('moved', 'sB') },
      { op: 'subscription.put', subscription: sub('gone', 'sE') },
      { op: 'outgoing.put', clientId: 'c1', seq: 1, packet: bytes('1') },
      { op: 'outgoing.put', clientId: 'c1', seq: 2, packet: bytes('2') },
      { op: 'session.put', session: session('s3', 1) },
      { op: 'session.put', session: session('s5', 1) }
    ])
    await store.commit([
      // put, delete, put: the last put
      { op: 'retained.put', topic: 'r1', packet: bytes('a') },
      { op: 'retained.delete', topic: 'r1' },
      { op: 'retained.put', topic: 'r1', packet: bytes('b') },
      // put then delete: nothing
      { op: 'retained.put', topic: 'r2', packet: bytes('x') },
      { op: 'retained.delete', topic: 'r2' },
      // delete then put of a stored row: the put
      { op: 'retained.delete', topic: 'r3' },
      { op: 'retained.put', topic: 'r3', packet: bytes('new') },
      // a put before a clear is undone, one after it stays, the stored rows go
      { op: 'topic.put', sessionId: 'sA', subscription: { topic: 't3', qos: 1 }, persistent: true },
      { op: 'topic.clear', sessionId: 'sA' },
      { op: 'topic.put', sessionId: 'sA', subscription: { topic: 't1', qos: 2 }, persistent: false },
      // an entity moved into a session that is then cleared goes, though stored under another
      { op: 'subscription.put', subscription: sub('moved', 'sC') },
      { op: 'subscription.clear', sessionId: 'sC' },
      { op: 'subscription.clear', sessionId: 'sD' },
      { op: 'subscription.put', subscription: sub('kept', 'sD') },
      { op: 'subscription.clear', sessionId: 'sE' },
      { op: 'outgoing.put', clientId: 'c1', seq: 3, packet: bytes('3') },
      { op: 'outgoing.clear', clientId: 'c1' },
      { op: 'outgoing.put', clientId: 'c1', seq: 4, packet: bytes('4') },
      { op: 'outgoing.delete', clientId: 'c1', seq: 4 },
      { op: 'outgoing.put', clientId: 'c1', seq: 5, packet: bytes('5') },
      { op: 'incoming.clear', clientId: 'c1' },
      { op: 'incoming.put', clientId: 'c1', messageId: 7, packet: bytes('7') },
      // versions: folded into a put, lost on a deleted session, the last one wins on a stored one
      { op: 'session.put', session: session('s1', 1) },
      { op: 'session.version', id: 's1', version: 5 },
      { op: 'session.delete', id: 's2' },
      { op: 'session.version', id: 's2', version: 9 },
      { op: 'session.version', id: 's3', version: 7 },
      { op: 'session.version', id: 's3', version: 8 },
      { op: 'session.put', session: session('s4', 1) },
      { op: 'session.delete', id: 's4' },
      { op: 'session.delete', id: 's5' },
      { op: 'session.put', session: session('s5', 2) },
      { op: 'journal.put', seq: 1, packet: bytes('j1') },
      { op: 'journal.delete', seq: 1 },
      { op: 'journal.put', seq: 1, packet: bytes('j1-again') },
      { op: 'will.put', clientId: 'c1', packet: bytes('w') },
      { op: 'will.delete', clientId: 'c1' }
    ])
    const snapshot = normalized(await loadAll(store))
    assert.deepEqual(snapshot.retained, [['r1', 'b'], ['r3', 'new']])
    assert.deepEqual(snapshot.topics, [{ sessionId: 'sA', persistent: false, subscription: { topic: 't1', qos: 2 } }])
    assert.deepEqual(snapshot.subscriptions.map((e) => [e.id, e.sessionId]), [['kept', 'sD']])
    assert.deepEqual(snapshot.outgoing, [['c1', 5, '5']])
    assert.deepEqual(snapshot.incoming, [['c1', 7, '7']])
    assert.deepEqual(snapshot.sessions, [session('s1', 5), session('s3', 8), session('s5', 2)])
    assert.deepEqual(snapshot.journal, [[1, 'j1-again']])
    assert.deepEqual(snapshot.wills, [])
    await store.close()
  })

  it('ends every random batch as SQLite does, which applies mutations one by one', async () => {
    const schema = schemaForTest()
    const dataDir = mkdtempSync(join(tmpdir(), 'iothub-pg-oracle-'))
    const postgres = await open({ connectionString: DATABASE_URL, schema })
    const sqlite = new SqliteStore({ dataDir, synchronous: 'normal' })
    try {
      const next = random(20240601)
      let n = 0
      for (let round = 0; round < 60; round++) {
        const batch = Array.from({ length: 1 + Math.floor(next() * 40) }, () => randomMutation(next, n++))
        await Promise.all([postgres.commit(batch), sqlite.commit(batch)])
        assert.deepEqual(normalized(await loadAll(postgres)), normalized(await loadAll(sqlite)), `round ${round}: ${JSON.stringify(batch)}`)
      }
    } finally {
      await postgres.close()
      await sqlite.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })

  it('fails a commit whose connection is killed, reports it in health(), and commits again on a new connection', async () => {
    const schema = schemaForTest()
    const failures: Error[] = []
    const store = await open({ connectionString: urlNamed(schema), schema, observer: failuresOf(failures) })
    await store.commit([{ op: 'device.put', device: device('before') }])
    await withAdmin(async (locker) => {
      // hold the writer inside its transaction, waiting for a lock, then end its connection
      await locker.query('BEGIN')
      await locker.query(`LOCK TABLE ${pg.escapeIdentifier(schema)}.devices IN ACCESS EXCLUSIVE MODE`)
      // settled into a value at once: its rejection must not go unhandled while we look for it
      const blocked = store.commit([{ op: 'device.put', device: device('lost') }]).then(
        () => assert.fail('the commit on a killed connection succeeded'),
        (error: Error) => error
      )
      let ended = 0
      for (let wait = 0; ended === 0 && wait < 100; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        ended = await terminateBackends(schema, "wait_event_type = 'Lock'")
      }
      assert.equal(ended, 1, 'the writer was found waiting for the lock')
      const error = await blocked
      assert.ok(error instanceof StoreError)
      assert.match(error.message, /store commit failed: terminating connection due to administrator command/)
      await locker.query('ROLLBACK')
    })
    assert.equal(store.health().ok, false)
    assert.match(store.health().lastError ?? '', /terminating connection/)
    assert.equal(failures.length, 1)
    await store.commit([{ op: 'device.put', device: device('after') }])
    // cleared by the commit; counted still, for a watcher that looks later (store-return.ts)
    assert.deepEqual(store.health(), { ok: true, lastError: null, failures: 1 })
    assert.deepEqual(
      (await loadAll(store)).devices.map((d) => d.id),
      ['after', 'before']
    )
    await store.close()
  })

  it('replaces connections killed while idle without failing the next commit or load', async () => {
    const schema = schemaForTest()
    const failures: Error[] = []
    const store = await open({ connectionString: urlNamed(schema), schema, observer: failuresOf(failures) })
    await store.commit([{ op: 'device.put', device: device('one') }])
    await loadAll(store)
    assert.ok((await terminateBackends(schema)) >= 2, 'the writer and an idle pooled connection were ended')
    await store.commit([{ op: 'device.put', device: device('two') }])
    assert.deepEqual((await loadAll(store)).devices.map((d) => d.id), ['one', 'two'])
    assert.deepEqual(failures, [])
    assert.deepEqual(store.health(), { ok: true, lastError: null, failures: 0 })
  })

  it('runs a batch again on a new connection when its connection drops at BEGIN, before anything was sent', async () => {
    const schema = schemaForTest()
    const failures: Error[] = []
    const network = await droppingProxy()
    try {
      const store = await open({ connectionString: network.url, schema, observer: failuresOf(failures) })
      await store.commit([{ op: 'device.put', device: device('first') }])
      network.dropAtNextBegin()
      await store.commit([{ op: 'device.put', device: device('second') }])
      assert.equal(network.dropped, 1, 'the connection was dropped at BEGIN')
      assert.deepEqual((await loadAll(store)).devices.map((d) => d.id), ['first', 'second'])
      assert.deepEqual(failures, [])
      await store.close()
    } finally {
      await network.close()
    }
  })

  it('runs a batch again when PostgreSQL breaks a deadlock by rolling it back', async () => {
    const schema = schemaForTest()
    const failures: Error[] = []
    const store = await open({ connectionString: urlNamed(schema), schema, observer: failuresOf(failures) })
    const devices = `${pg.escapeIdentifier(schema)}.devices`
    await withAdmin(async (other) => {
      // the other side waits longer before checking for deadlocks, so PostgreSQL picks the writer
      await other.query("SET deadlock_timeout = '10s'")
      await other.query('BEGIN')
      await other.query(`INSERT INTO ${devices} (id, doc, owner, group_name, name) VALUES ('dl-b', '{}', '', '', '')`)
      // the writer inserts dl-a, then waits for dl-b, which the other transaction holds
      const committed = store.commit([
        { op: 'device.put', device: device('dl-a') },
        { op: 'device.put', device: device('dl-b') }
      ])
      let waiting = 0
      for (let wait = 0; waiting === 0 && wait < 100; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        const found = await other.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [schema])
        waiting = found.rowCount ?? 0
      }
      assert.equal(waiting, 1, 'the writer waits for the other transaction')
      // now the other transaction waits for dl-a: a deadlock, which aborts the writer's transaction
      await other.query(`INSERT INTO ${devices} (id, doc, owner, group_name, name) VALUES ('dl-a', '{}', '', '', '') ON CONFLICT (id) DO NOTHING`)
      await other.query('COMMIT')
      await committed
    })
    const stored = (await loadAll(store)).devices.filter((d) => d.id.startsWith('dl-'))
    assert.deepEqual(stored, [device('dl-a'), device('dl-b')], 'the retried batch wrote its rows over the other transaction’s')
    assert.deepEqual(failures, [], 'a deadlock the writer recovered from is no failure')
  })

  it('keeps 2,000 concurrent commits, every one loaded back after a reopen', async () => {
    const schema = schemaForTest()
    const batches: number[] = []
    let store = await open({
      connectionString: DATABASE_URL,
      schema,
      observer: { committed: (commits) => batches.push(commits), failed: () => undefined }
    })
    await Promise.all(
      Array.from({ length: 2000 }, (_, i) =>
        store.commit([
          { op: 'device.put', device: device(`many-${i}`) },
          { op: 'outgoing.put', clientId: `client-${i % 10}`, seq: i, packet: bytes(`message-${i}`) },
          { op: 'journal.put', seq: i, packet: bytes(`accepted-${i}`) }
        ])
      )
    )
    assert.equal(batches.reduce((a, b) => a + b, 0), 2000)
    assert.ok(batches.length < 2000 / 10, `commits shared transactions (${batches.length} batches)`)
    await store.close()
    store = await open({ connectionString: DATABASE_URL, schema })
    const snapshot = await loadAll(store)
    assert.equal(snapshot.devices.length, 2000)
    assert.equal(snapshot.outgoing.length, 2000)
    assert.deepEqual(
      snapshot.journal.map((j) => j.seq),
      Array.from({ length: 2000 }, (_, i) => i),
      'journal in seq order'
    )
    const client3 = snapshot.outgoing.filter((o) => o.clientId === 'client-3').map((o) => o.seq)
    assert.deepEqual(client3, [...client3].sort((a, b) => a - b), 'outgoing in seq order within a client')
    assert.deepEqual(
      snapshot.outgoing.map((o) => o.clientId),
      [...snapshot.outgoing.map((o) => o.clientId)].sort(),
      'outgoing grouped by client'
    )
    await store.close()
  })

  it('answers many waits for the log at once with a couple of head reads, each covering what its callers read before', async () => {
    const schema = schemaForTest()
    const a = await open({ connectionString: DATABASE_URL, schema })
    const b = await open({ connectionString: DATABASE_URL, schema })
    let applied = 0
    a.follow(0, (entries) => void (applied = Math.max(applied, ...entries.map((e) => e.seq))))
    // the reads A makes, counted where they are made
    const reads = (a as unknown as { reads: { query: (text: string, values?: unknown[]) => Promise<unknown> } }).reads
    const query = reads.query.bind(reads)
    let headReads = 0
    reads.query = (text, values) => {
      if (text.includes('log_head')) headReads++
      return query(text, values)
    }
    // another replica's commit: once a wait begun after it answers, A has applied it
    await b.commit([{ op: 'session.put', session: contractSession('s1') }])
    const waits = await Promise.all(Array.from({ length: 300 }, () => a.caughtUp(30_000)))
    assert.ok(waits.every((w) => w))
    assert.ok(applied >= 1, `A applied up to ${applied}`)
    assert.ok(headReads >= 1 && headReads <= 2, `${headReads} head reads for 300 waits`)
  })
})
