/**
 * GET /v1/status and /v1/status/history against the truth: real mqtt.js clients on an embedded
 * hub (SQLite), and hook calls as EMQX makes them on a hub in EMQX mode on PostgreSQL. The counts
 * must equal what the listings and the database say; the rates must see the lifecycle events
 * and pushes made; the history must gain a sample every 10 s that counts the connected clients.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { startEmqxTestHub, type EmqxTestHub } from './helpers/emqx-hub.js'
import { createDatabase, type TestDatabase } from './helpers/postgres.js'
import type { ApiCall } from './helpers/api-client.js'

interface Status {
  node: string
  ready: boolean
  checks: Record<string, { ok: boolean }>
  counts: { devices: number; sessions: number; connected: number; subscriptions: number; connectedByProtocol: Record<string, number>; connectedByNode: Record<string, number> } | null
  rates: { lifecycleEventsPerSecond: number; pushesPerSecond: number }
  store: { kind: string; healthy: boolean; commitSecondsP50: number | null; commitSecondsP99: number | null }
  replicas: { node: string; self: boolean; live: boolean }[]
  reconcile: { trigger: string } | null
}

interface History {
  intervalSeconds: number
  samples: { at: string; connected: number | null; lifecycleEventsPerSecond: number; pushesPerSecond: number }[]
}

/** Every item of a native listing, page by page. */
async function listAll(api: ApiCall, path: string): Promise<unknown[]> {
  const items: unknown[] = []
  for (let next: string | null = null; ; ) {
    const { body }: { body: { data: unknown[]; next: string | null } } = await api<{ data: unknown[]; next: string | null }>('GET', `${path}${path.includes('?') ? '&' : '?'}limit=2${next ? `&cursor=${next}` : ''}`)
    items.push(...body.data)
    next = body.next
    if (next === null) return items
  }
}

const status = async (api: ApiCall) => (await api<Status>('GET', '/v1/status')).body

describe('GET /v1/status on an embedded hub (SQLite)', () => {
  let hub: TestHub
  const clients: MqttClient[] = []
  before(async () => {
    hub = await startTestHub()
  })
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync()))
    await hub.stop()
  })

  it('counts devices, sessions, connected clients and subscriptions as the listings do', async () => {
    const devices = await Promise.all([1, 2, 3].map(() => hub.createDevice({ owner: 'status' })))
    for (const d of devices.slice(0, 2)) {
      const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token })
      await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
      clients.push(client)
    }
    // a persistent session left offline counts as a session, not as connected
    const offline = await hub.connect({ clientId: devices[2]!.id, username: devices[2]!.id, password: devices[2]!.token, clean: false })
    await offline.endAsync()
    await hub.hub.registry.settled()

    const sessions = (await listAll(hub.api, '/v1/sessions')) as { connected: boolean; node: string; protocol: string }[]
    const subscriptions = await listAll(hub.api, '/v1/subscriptions')
    assert.equal(sessions.length, 3)
    assert.equal(sessions.filter((s) => s.connected).length, 2)
    assert.ok(subscriptions.length >= 2)
    // counts are read at most every 15 s (shared with the gauges): they catch up within that
    const shown = await eventually(async () => {
      const s = await status(hub.api)
      return s.counts?.connected === 2 && s.counts.subscriptions === subscriptions.length && s
    }, 30_000, 'the counts of the connected clients')
    assert.deepEqual(shown.counts, {
      devices: 3,
      sessions: 3,
      connected: 2,
      subscriptions: subscriptions.length,
      connectedByProtocol: { mqtt: 2 },
      connectedByNode: { [hub.hub.config.node]: 2 }
    })
    assert.equal(shown.node, hub.hub.config.node)
    assert.equal(shown.ready, true)
    assert.equal(shown.checks.store?.ok, true)
    assert.equal(shown.store.kind, 'sqlite')
    assert.equal(shown.store.healthy, true)
    assert.deepEqual(shown.replicas.map((r) => [r.node, r.self, r.live]), [[hub.hub.config.node, true, true]])
    assert.equal(shown.reconcile, null)
  })

  it('rates count the lifecycle events and pushes of the last 10 s; commit percentiles come from the commits made', async () => {
    const device = await hub.createDevice()
    const client = await hub.connect({ clientId: device.id, username: device.id, password: device.token })
    clients.push(client)
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    const pushed = await hub.api('PATCH', `/v1/devices/${device.id}/attributes`, { colour: 'green' })
    assert.ok(pushed.status < 300, JSON.stringify(pushed.body))
    const s = await status(hub.api)
    // connect and subscribe at least, within 10 s: at least 0.1 a second
    assert.ok(s.rates.lifecycleEventsPerSecond >= 0.1, JSON.stringify(s.rates))
    assert.ok(s.rates.pushesPerSecond >= 0.1, JSON.stringify(s.rates))
    assert.ok(s.store.commitSecondsP50 !== null && s.store.commitSecondsP50 > 0, JSON.stringify(s.store))
    assert.ok(s.store.commitSecondsP99! >= s.store.commitSecondsP50)
  })

  it('history gains a sample every 10 s with the connected count', async () => {
    const connected = (await listAll(hub.api, '/v1/sessions?connected=true')).length
    const history = await eventually(async () => {
      const h = (await hub.api<History>('GET', '/v1/status/history')).body
      return h.samples.some((s) => s.connected === connected) && h
    }, 40_000, 'a sample counting the connected clients')
    assert.equal(history.intervalSeconds, 10)
    const last = history.samples.at(-1)!
    assert.ok(Math.abs(Date.parse(last.at) - Date.now()) < 60_000)
    assert.equal(typeof last.lifecycleEventsPerSecond, 'number')
  })

  it('needs the API credentials', async () => {
    assert.equal((await hub.api('GET', '/v1/status', undefined, null)).status, 401)
    assert.equal((await hub.api('GET', '/v1/status/history', undefined, null)).status, 401)
  })
})

describe('GET /v1/status in EMQX mode on PostgreSQL, two replicas', () => {
  let db: TestDatabase
  let a: EmqxTestHub
  let b: EmqxTestHub
  before(async () => {
    db = await createDatabase('iothub_status')
    const store = { store: 'postgres' as const, databaseUrl: db.url }
    a = await startEmqxTestHub({ overrides: { ...store, node: 'iothub@replica-a' } })
    b = await startEmqxTestHub({ standin: a.standin, overrides: { ...store, node: 'iothub@replica-b' } })
  })
  after(async () => {
    await b.stop({ keepStandin: true })
    await a.stop()
    await db.drop()
  })

  it('counts the fleet as the database holds it, by EMQX node, on either replica; rates are each replica\'s own', async () => {
    const ids = ['st-a', 'st-b', 'st-c', 'st-d']
    for (const id of ids) await a.createDevice(id)
    const nodes = ['emqx@node-a', 'emqx@node-a', 'emqx@node-b']
    for (const [i, node] of nodes.entries()) {
      const id = ids[i]!
      // every hook call goes to replica A
      const emqx = a.exhook('v3', node)
      const client = { clientid: id, username: id, mountpoint: `${id}/`, node }
      a.standin.addClient({ clientid: id, username: id, node })
      await emqx.onClientConnected(client)
      await emqx.onSessionSubscribed(client, `${id}/v1/devices/me/attributes`, { qos: 1 })
      a.standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
    }
    const [row] = await db.query<{ devices: string; sessions: string; connected: string; subscriptions: string }>(
      `SELECT (SELECT count(*) FROM devices) AS devices, (SELECT count(*) FROM sessions) AS sessions,
              (SELECT count(*) FROM sessions WHERE connected) AS connected, (SELECT count(*) FROM subscriptions) AS subscriptions`
    )
    assert.equal(Number(row!.connected), 3)
    const truth = {
      devices: Number(row!.devices),
      sessions: Number(row!.sessions),
      connected: 3,
      subscriptions: Number(row!.subscriptions),
      connectedByProtocol: { mqtt: 3 },
      connectedByNode: { 'emqx@node-a': 2, 'emqx@node-b': 1 }
    }
    assert.equal(truth.devices, 4)
    for (const replica of [a, b]) {
      const shown = await eventually(async () => {
        const s = await status(replica.api)
        return s.counts?.connected === 3 && s.counts.subscriptions === truth.subscriptions && s
      }, 30_000, `the counts on ${replica.hub.config.node}`)
      assert.deepEqual(shown.counts, truth)
      assert.equal(shown.node, replica.hub.config.node)
      assert.equal(shown.store.kind, 'postgres')
      assert.equal(shown.store.healthy, true)
      assert.deepEqual(shown.replicas.map((r) => [r.node, r.live, r.self]).sort(), [
        ['iothub@replica-a', true, replica === a],
        ['iothub@replica-b', true, replica === b]
      ])
      // the start reconcile ran: the report is shown as GET /v1/reconcile/last shows it
      assert.deepEqual(shown.reconcile, (await replica.api<{ trigger: string }>('GET', '/v1/reconcile/last')).body)
    }
    // replica A handled every lifecycle event, B none (it follows the log): rates are per replica
    const [onA, onB] = [await status(a.api), await status(b.api)]
    assert.ok(onA.rates.lifecycleEventsPerSecond > 0, JSON.stringify(onA.rates))
    assert.equal(onB.rates.lifecycleEventsPerSecond, 0)
  })
})

describe('GET /v1/status in EMQX mode on PostgreSQL: the stored totals stay exact', () => {
  /** The counts as counting the database finds them. */
  async function counted(db: TestDatabase): Promise<NonNullable<Status['counts']>> {
    const [row] = await db.query<{ devices: string; sessions: string; subscriptions: string; connected: { protocol: string; node: string; n: number }[] }>(
      `SELECT (SELECT count(*) FROM devices) AS devices, (SELECT count(*) FROM sessions) AS sessions, (SELECT count(*) FROM subscriptions) AS subscriptions,
              (SELECT coalesce(json_agg(c), '[]') FROM (SELECT protocol, node, count(*) AS n FROM sessions WHERE connected GROUP BY protocol, node) c) AS connected`
    )
    const counts = { devices: Number(row!.devices), sessions: Number(row!.sessions), connected: 0, subscriptions: Number(row!.subscriptions), connectedByProtocol: {} as Record<string, number>, connectedByNode: {} as Record<string, number> }
    for (const { protocol, node, n } of row!.connected) {
      counts.connected += n
      counts.connectedByProtocol[protocol] = (counts.connectedByProtocol[protocol] ?? 0) + n
      counts.connectedByNode[node] = (counts.connectedByNode[node] ?? 0) + n
    }
    return counts
  }

  /** Every replica's status shows what the database holds (read again until both are at rest). */
  async function exact(db: TestDatabase, replicas: EmqxTestHub[], what: string): Promise<NonNullable<Status['counts']>> {
    let truth: NonNullable<Status['counts']> | undefined
    for (const replica of replicas) {
      await eventually(async () => {
        truth = await counted(db)
        const shown = (await status(replica.api)).counts
        assert.deepEqual(shown, truth)
        return true
      }, 10_000, `${what}: the counts on ${replica.hub.config.node} to equal the database's (stored totals read at most 1 s ago; a count would be 15 s)`)
    }
    return truth!
  }

  it('over connects, subscribes, a takeover and disconnects through two replicas, and after an upgrade of an existing database', async () => {
    const db = await createDatabase('iothub_totals')
    const store = { store: 'postgres' as const, databaseUrl: db.url }
    let a = await startEmqxTestHub({ overrides: { ...store, node: 'iothub@replica-a' } })
    let b = await startEmqxTestHub({ standin: a.standin, overrides: { ...store, node: 'iothub@replica-b' } })
    const standin = a.standin
    try {
      const ids = ['tt-a', 'tt-b', 'tt-c']
      for (const id of ids) await a.createDevice(id)
      const client = (id: string, node: string) => ({ clientid: id, username: id, mountpoint: `${id}/`, node })
      const connect = async (via: EmqxTestHub, id: string, node: string) => {
        standin.addClient({ clientid: id, username: id, node })
        await via.exhook('v3', node).onClientConnected(client(id, node))
      }
      const subscribe = async (via: EmqxTestHub, id: string, node: string) => {
        await via.exhook('v3', node).onSessionSubscribed(client(id, node), `${id}/v1/devices/me/attributes`, { qos: 1 })
        standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
      }
      // connects through either replica, on two EMQX nodes
      await connect(a, 'tt-a', 'emqx@node-a')
      await connect(b, 'tt-b', 'emqx@node-b')
      await connect(a, 'tt-c', 'emqx@node-a')
      await subscribe(b, 'tt-a', 'emqx@node-a')
      await subscribe(a, 'tt-b', 'emqx@node-b')
      let truth = await exact(db, [a, b], 'connected and subscribed')
      assert.deepEqual(truth.connectedByNode, { 'emqx@node-a': 2, 'emqx@node-b': 1 })
      assert.equal(truth.subscriptions, 2)
      // tt-a taken over on the other node, through the other replica: it moves from node-a to node-b
      await connect(b, 'tt-a', 'emqx@node-b')
      truth = await exact(db, [a, b], 'after the takeover')
      assert.deepEqual(truth.connectedByNode, { 'emqx@node-a': 1, 'emqx@node-b': 2 })
      // a disconnect, and a device deleted with its session
      await a.exhook('v3', 'emqx@node-b').onClientDisconnected(client('tt-b', 'emqx@node-b'), 'normal')
      standin.removeClient('tt-b')
      assert.equal((await b.api('DELETE', '/v1/devices/tt-c')).status, 200)
      standin.removeClient('tt-c')
      truth = await exact(db, [a, b], 'after a disconnect and a device deleted')
      assert.equal(truth.devices, 2)
      assert.deepEqual(truth.connectedByNode, { 'emqx@node-b': 1 })

      // the database as a build of schema version 6 left it: no such totals stored
      await b.stop({ keepStandin: true })
      await a.stop({ keepStandin: true })
      await db.query('DROP TABLE connected_totals')
      await db.query('ALTER TABLE log_head DROP COLUMN devices, DROP COLUMN subscriptions')
      await db.query('UPDATE schema_version SET version = 6')
      a = await startEmqxTestHub({ standin, overrides: { ...store, node: 'iothub@replica-a' } })
      b = await startEmqxTestHub({ standin, overrides: { ...store, node: 'iothub@replica-b' } })
      const upgraded = await exact(db, [a, b], 'after the upgrade')
      assert.deepEqual(upgraded, truth)
      await connect(b, 'tt-b', 'emqx@node-a')
      truth = await exact(db, [a, b], 'a connect after the upgrade')
      assert.deepEqual(truth.connectedByNode, { 'emqx@node-a': 1, 'emqx@node-b': 1 })
    } finally {
      await b.stop({ keepStandin: true })
      await a.stop()
      await db.drop()
    }
  })
})
