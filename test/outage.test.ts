/**
 * Outages of PostgreSQL leave a true picture. The hub (embedded mode, IOTHUB_STORE=postgres)
 * reaches the machine's PostgreSQL through a TCP proxy the test controls: `cut()` drops every
 * connection and refuses new ones; `freeze()` is a partition — nothing moves, nothing closes,
 * and what was sent meanwhile arrives after `restore()`. The store's deadline is 1 s here.
 *
 * What is checked against the database itself is read on a connection of the test's own, not
 * through the proxy.
 */
import assert from 'node:assert/strict'
import { after, afterEach, before, beforeEach, describe, it } from 'node:test'
import pg from 'pg'
import type { SessionRecord } from '../src/domain/session.js'
import { newIncarnation } from '../src/domain/incarnation.js'
import type { ReconcileReport } from '../src/emqx/reconcile.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { startEmqxTestHub, WEBHOOK_SECRET, type EmqxTestHub } from './helpers/emqx-hub.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const SERVER = process.env.IOTHUB_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const DATABASE = `iothub_outage_test_${process.pid}`
const STORE_TIMEOUT = 1000
/** Generous, for a loaded machine: what must happen "within the deadline" gets this much more. */
const SLACK = 3000

function urlOf(database: string, port?: number): string {
  const url = new URL(SERVER)
  url.pathname = `/${database}`
  if (port !== undefined) {
    url.hostname = '127.0.0.1'
    url.port = String(port)
  }
  return url.toString()
}

/** PostgreSQL's clock, now. */
async function databaseNow(): Promise<Date> {
  return (await query<{ at: Date }>(DATABASE, 'SELECT now() AS at'))[0]!.at
}

/**
 * Waits until PostgreSQL is done with what a freeze held: no transaction begun before `at` (the
 * restore) is left in the test database — one the freeze caught is over only once PostgreSQL has
 * ended it, rolled back by its idle-in-transaction timeout or with its connection — and no other
 * client's backend is running a statement or holding a transaction open, as one would while it
 * works through statements the proxy delivered on restore (a BEGIN it held starts its transaction
 * after `at`). The hub's connections closing or answering again says nothing of either.
 */
async function freezeOverInPostgres(at: Date): Promise<void> {
  await eventually(
    async () =>
      (
        await query<{ open: number }>(
          DATABASE,
          `SELECT count(*)::int AS open FROM pg_stat_activity
            WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
              AND (xact_start < $2 OR state IN ('active', 'idle in transaction', 'idle in transaction (aborted)'))`,
          [DATABASE, at]
        )
      )[0]!.open === 0,
    15_000,
    'PostgreSQL done with what the freeze held'
  )
}

async function query<Row extends pg.QueryResultRow>(database: string, sql: string, params: unknown[] = []): Promise<Row[]> {
  const client = new pg.Client({ connectionString: urlOf(database) })
  await client.connect()
  try {
    return (await client.query<Row>(sql, params)).rows
  } finally {
    await client.end()
  }
}

const admin = (sql: string): Promise<unknown> => query('test', sql)

/** The session as the database holds it, or undefined. */
async function storedSession(clientId: string): Promise<SessionRecord | undefined> {
  return (await query<{ doc: SessionRecord }>(DATABASE, 'SELECT doc FROM sessions WHERE id = $1', [clientId]))[0]?.doc
}

async function readyStatus(t: TestHub): Promise<number> {
  return (await t.api('GET', '/readyz', undefined, null)).status
}

describe('PostgreSQL outages', () => {
  let proxy: TcpProxy
  let t: TestHub

  before(async () => {
    await admin(`CREATE DATABASE ${DATABASE}`)
  })
  after(async () => {
    await admin(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`)
  })

  beforeEach(async () => {
    const target = new URL(SERVER)
    proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432))
    t = await startTestHub({ store: 'postgres', databaseUrl: urlOf(DATABASE, proxy.port), storeTimeout: STORE_TIMEOUT })
  })
  afterEach(async () => {
    proxy.restore()
    await t.stop()
    await proxy.stop()
  })

  it('a client that disconnects during a cut is gone at once, and its end is stored once PostgreSQL is back, with no traffic', async () => {
    const device = await t.createDevice({ id: 'cut-device' })
    const client = await t.connect({ clientId: 'cut-client', username: device.id, password: device.token })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    assert.equal((await storedSession('cut-client'))?.connected, true)

    proxy.cut()
    await client.endAsync()
    // the broker closed the socket: no view may still show it connected
    await eventually(async () => (await t.api('GET', '/v1/sessions/cut-client')).status === 404, 5000, 'the session gone from /v1/sessions')
    const clients = (await t.api<{ data: { clientid: string }[] }>('GET', '/api/v4/clients')).body.data
    assert.deepEqual(clients.map((c) => c.clientid), [])
    assert.equal((await storedSession('cut-client'))?.connected, true, 'the store could not be told yet')

    proxy.restore()
    await eventually(async () => (await storedSession('cut-client')) === undefined, 15_000, 'the end stored without any traffic')
    await eventually(
      async () => (await t.api<{ properties: { connectinfo: { _online?: boolean } } }>('GET', '/v1/devices/cut-device')).body.properties.connectinfo._online === false,
      15_000,
      'connectinfo._online false'
    )
    const stored = await query<{ value: { _online: boolean } }>(DATABASE, "SELECT value FROM device_properties WHERE device_id = $1 AND name = 'connectinfo'", ['cut-device'])
    assert.equal(stored[0]?.value._online, false)
    const push = await t.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/cut-device/attributes', { after: 'restore' })
    assert.deepEqual([push.status, push.body.pushedTo], [200, []])
  })

  it('a connect during a freeze gets CONNACK 3 within the deadline and is not there after the freeze', async () => {
    const device = await t.createDevice({ id: 'frozen-device' })
    proxy.freeze()
    const started = Date.now()
    await assert.rejects(t.connect({ clientId: 'frozen-client', username: device.id, password: device.token, connectTimeout: 30_000 }), /Server unavailable/i)
    const waited = Date.now() - started
    assert.ok(waited < STORE_TIMEOUT + SLACK, `refused after ${waited} ms`)
    assert.equal((await t.api('GET', '/v1/sessions/frozen-client')).status, 404)

    const restoredAt = await databaseNow()
    proxy.restore()
    await eventually(async () => (await readyStatus(t)) === 200, 15_000, 'ready again')
    await freezeOverInPostgres(restoredAt)
    assert.equal(await storedSession('frozen-client'), undefined)
    assert.equal((await t.api('GET', '/v1/sessions/frozen-client')).status, 404)
  })

  it('an API write during a freeze answers 503 with Retry-After within the deadline, and is not applied after it', async () => {
    proxy.freeze()
    const started = Date.now()
    const response = await fetch(`${t.httpUrl}/v1/devices`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('admin:public').toString('base64')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'written-while-frozen' })
    })
    const waited = Date.now() - started
    assert.equal(response.status, 503)
    assert.equal(response.headers.get('retry-after'), '1')
    assert.match(((await response.json()) as { message: string }).message, /store did not answer within 1000 ms/)
    assert.ok(waited < STORE_TIMEOUT + SLACK, `answered after ${waited} ms`)

    const restoredAt = await databaseNow()
    proxy.restore()
    await eventually(async () => (await readyStatus(t)) === 200, 15_000, 'ready again')
    await freezeOverInPostgres(restoredAt)
    assert.deepEqual(await query(DATABASE, 'SELECT id FROM devices WHERE id = $1', ['written-while-frozen']), [])
    assert.equal((await t.api('GET', '/v1/devices/written-while-frozen')).status, 404)
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /iothub_rejected_inputs_total\{reason="store_unavailable"\} [1-9]/)
  })

  it('/readyz follows the store itself: 503 during a freeze and a cut, 200 once it answers, with no other traffic', async () => {
    assert.equal(await readyStatus(t), 200)
    proxy.freeze()
    const frozen = await eventually(async () => {
      const r = await t.api<{ checks: { store: { ok: boolean; detail?: string } } }>('GET', '/readyz', undefined, null)
      return r.status === 503 && r.body
    }, 10_000, 'not ready while frozen')
    assert.match(frozen.checks.store.detail ?? '', /not answered|did not answer/)
    proxy.restore()
    await eventually(async () => (await readyStatus(t)) === 200, 15_000, 'ready after the freeze')

    proxy.cut()
    await eventually(async () => (await readyStatus(t)) === 503, 10_000, 'not ready while cut')
    proxy.restore()
    await eventually(async () => (await readyStatus(t)) === 200, 15_000, 'ready after the cut')
  })

  /**
   * A connection whose end was never heard (the hub lost it), recorded a minute ago by this
   * node: listed as connected, and held by no broker.
   */
  async function listOnly(clientId: string, deviceId: string): Promise<void> {
    const result = await t.hub.registry.apply({
      kind: 'connected',
      clientId,
      incarnation: newIncarnation('iothub@test'),
      at: Date.now() - 60_000,
      protocol: 'mqtt',
      deviceId,
      username: deviceId,
      mountpoint: `${deviceId}/`,
      node: t.hub.config.node,
      peerHost: '127.0.0.1',
      peerPort: 40000,
      sockPort: 1883,
      keepalive: 60,
      protoVer: 4,
      cleanStart: true,
      expiryInterval: 0
    })
    assert.equal(result.applied, true)
    assert.equal((await t.api<{ connected: boolean }>('GET', `/v1/sessions/${clientId}`)).body.connected, true)
  }

  it('kick ends a session the registry lists as connected but the broker does not hold', async () => {
    const device = await t.createDevice({ id: 'listed-device' })
    await listOnly('listed-only', device.id)

    const kicked = await t.api<{ code: number }>('DELETE', '/api/v4/clients/listed-only')
    assert.deepEqual([kicked.status, kicked.body.code], [200, 0])
    assert.equal((await t.api('GET', '/v1/sessions/listed-only')).status, 404)
    assert.equal(await storedSession('listed-only'), undefined)
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /iothub_disconnects_total\{protocol="mqtt",reason="kicked"\} 1/)
  })
  it("once PostgreSQL answers again, ends the sessions this node lists as connected that its broker does not hold, and keeps the ones it does", async () => {
    const device = await t.createDevice({ id: 'unheld-device' })
    const held = await t.connect({ clientId: 'held-client', username: device.id, password: device.token })
    await listOnly('unheld-client', device.id)

    proxy.cut()
    // the store is asked (a probe, as /readyz does) and does not answer: the hub knows it failed
    await eventually(async () => (await readyStatus(t)) === 503, 10_000, 'not ready while cut')
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/unheld-client')).body.connected, true, 'nothing ends while the store is away')
    proxy.restore()

    await eventually(async () => (await t.api('GET', '/v1/sessions/unheld-client')).status === 404, 15_000, 'the unheld session ended')
    assert.equal(await storedSession('unheld-client'), undefined)
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /iothub_disconnects_total\{protocol="mqtt",reason="socket_error"\} 1/)
    // the connection the broker holds is untouched, in the hub and in the store
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/held-client')).body.connected, true)
    assert.equal((await storedSession('held-client'))?.connected, true)
    assert.equal(held.connected, true)
  })
})

describe('PostgreSQL outages in EMQX mode', () => {
  const database = `${DATABASE}_emqx`
  let proxy: TcpProxy
  let t: EmqxTestHub

  before(async () => {
    await admin(`CREATE DATABASE ${database}`)
    const target = new URL(SERVER)
    proxy = await TcpProxy.start(target.hostname, Number(target.port || 5432))
    // no interval reconcile in the test's time: a run it sees was asked for by the store's return
    t = await startEmqxTestHub({ overrides: { store: 'postgres', databaseUrl: urlOf(database, proxy.port), storeTimeout: STORE_TIMEOUT, reconcileInterval: 3600 } })
  })
  after(async () => {
    proxy.restore()
    await t.stop()
    await proxy.stop()
    await admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
  })

  it('reconciles at once when the store answers again, reported as store_returned: a connect refused meanwhile is caught up', async () => {
    const device = await t.createDevice('connected-in-outage')
    const started = (await t.api<ReconcileReport>('GET', '/v1/reconcile/last')).body
    assert.equal(started.trigger, 'start')
    proxy.cut()
    // EMQX lets the client in; its client.connected WebHook finds the store away
    t.standin.addClient({ clientid: device.id, username: device.id, ipAddress: '127.0.0.1', port: 4100, mountpoint: `${device.id}/` })
    const hook = await t.webhook(
      { event: 'client.connected', node: 'emqx@127.0.0.1', clientid: device.id, username: device.id, peername: '127.0.0.1:4100', mountpoint: `${device.id}/`, clean_start: true },
      WEBHOOK_SECRET
    )
    assert.equal(hook.status, 503)
    proxy.restore()
    const report = await eventually(
      async () => {
        const last = (await t.api<ReconcileReport>('GET', '/v1/reconcile/last')).body
        return last.startedAt > started.startedAt && last
      },
      20_000,
      'a reconcile after the store returned'
    )
    assert.deepEqual([report.trigger, report.error, report.sessionsAdded], ['store_returned', null, 1])
    assert.equal((await t.api<{ connected: boolean }>('GET', `/v1/sessions/${device.id}`)).body.connected, true)
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /iothub_reconcile_runs_total\{trigger="store_returned",outcome="ok"\} 1/)
  })
})
