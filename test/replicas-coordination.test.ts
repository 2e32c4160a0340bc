/**
 * How replicas on one PostgreSQL know of each other (docs/emqx-mode.md, "Running several
 * replicas"): each records itself, `GET /v1/replicas` lists them all from any of them, and work
 * that must not run twice — the reconcile with EMQX — runs on the one replica holding its lease,
 * moving to another when the holder stops. Real hubs, real PostgreSQL, the EMQX REST stand-in.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { startEmqxTestHub, type EmqxTestHub } from './helpers/emqx-hub.js'
import { startEmqxRestStandin, type EmqxRestStandin, type EmqxRestStandinOptions } from './helpers/emqx-rest-standin.js'
import { EMQX_KEY, EMQX_SECRET } from './helpers/emqx-hub.js'
import { eventually } from './helpers/hub.js'
import { createTestDatabase, type TestDatabase } from './helpers/replicas.js'

interface ReplicaRow {
  node: string
  address: string | null
  logPosition: number
  live: boolean
  self: boolean
}

/** Two replicas named apart (as every deployment must name them), on a database of their own. */
async function twoReplicas(
  t: TestContext,
  standinOptions: Partial<EmqxRestStandinOptions> = {},
  reconcileInterval = 1
): Promise<{ db: TestDatabase; standin: EmqxRestStandin; a: EmqxTestHub; b: EmqxTestHub }> {
  const db = await createTestDatabase()
  const standin = await startEmqxRestStandin({ version: 5, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET, ...standinOptions })
  const started: EmqxTestHub[] = []
  t.after(async () => {
    for (const hub of started) await hub.stop({ keepStandin: true })
    await standin.close()
    await db.drop()
  })
  for (const node of ['replica-a@test', 'replica-b@test']) {
    started.push(await startEmqxTestHub({ version: 5, standin, overrides: { store: 'postgres', databaseUrl: db.url, node, reconcileInterval } }))
  }
  return { db, standin, a: started[0]!, b: started[1]! }
}

/** Reconciles this replica ran itself, by its /metrics (every trigger and outcome). */
async function runsOn(hub: EmqxTestHub): Promise<number> {
  const text = (await hub.api<string>('GET', '/metrics', undefined, null)).body
  return text
    .split('\n')
    .filter((l) => l.startsWith('iothub_reconcile_runs_total{'))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
}

const reconcileLists = (standin: EmqxRestStandin): number => standin.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/api/v5/clients')).length

describe('replicas on one PostgreSQL know of each other', () => {
  it('each lists both replicas, live, itself marked, with how far each has followed the log', async (t) => {
    const { a, b } = await twoReplicas(t)
    await a.createDevice('replicas-listed')
    for (const [hub, self] of [
      [a, 'replica-a@test'],
      [b, 'replica-b@test']
    ] as const) {
      // a heartbeat every few seconds: the row of the replica started last may take one to show
      const rows = await eventually(
        async () => {
          const { body } = await hub.api<{ data: ReplicaRow[] }>('GET', '/v1/replicas')
          return body.data.length === 2 ? body.data : undefined
        },
        15_000,
        'both replicas listed'
      )
      assert.deepEqual(
        rows.map((r) => [r.node, r.live, r.self]),
        [
          ['replica-a@test', true, self === 'replica-a@test'],
          ['replica-b@test', true, self === 'replica-b@test']
        ]
      )
      assert.ok(rows.every((r) => r.address?.startsWith('http://127.0.0.1:')), 'each names its API address')
    }
    // the device made through A is in the log, which both apply; the next heartbeats say so
    for (const hub of [a, b]) {
      await eventually(
        async () => (await hub.api<{ data: ReplicaRow[] }>('GET', '/v1/replicas')).body.data.every((r) => r.logPosition >= 1) || undefined,
        15_000,
        'every replica reports the device creation applied'
      )
    }
  })

  it('a replica not heard of for a day is forgotten by the pruning replica; one dead for a minute is listed, not live', async (t) => {
    const { db, a, b } = await twoReplicas(t)
    const now = Date.now()
    // two replicas that died without leaving (kill -9): rows as their last heartbeats left them
    await db.query(`INSERT INTO replicas (node, address, started_at, last_seen, log_position) VALUES ($1, NULL, $2, $3, 0), ($4, NULL, $5, $6, 0)`, [
      'died-long-ago@test',
      now - 26 * 3600_000,
      now - 25 * 3600_000,
      'died-lately@test',
      now - 3600_000,
      now - 60_000
    ])
    // whichever replica holds the prune lease prunes; the other's call does nothing
    await a.hub.replicas.prune()
    await b.hub.replicas.prune()
    const listed = (await a.api<{ data: ReplicaRow[] }>('GET', '/v1/replicas')).body.data
    assert.deepEqual(
      listed.map((r) => [r.node, r.live]),
      [
        ['died-lately@test', false],
        ['replica-a@test', true],
        ['replica-b@test', true]
      ]
    )
  })

  it('one replica at a time reconciles with EMQX; when it stops, the other takes the lease and reconciles', async (t) => {
    const { db, standin, a, b } = await twoReplicas(t)
    const holder = async (): Promise<string | undefined> =>
      (await db.query<{ holder: string }>(`SELECT holder FROM leases WHERE name = 'reconcile' AND expires_at > $1`, [Date.now()]))[0]?.holder
    // A started first and took the lease; B is ready because A has reconciled
    assert.match((await holder()) ?? '', /^replica-a@test#/)
    const ready = await b.api<{ checks: { emqx: { detail?: string } } }>('GET', '/readyz', undefined, null)
    assert.equal(ready.status, 200)
    assert.match(ready.body.checks.emqx.detail ?? '', /^reconciled with EMQX \(by the replica holding/, 'B says reconciled: the holder reconciled after B started')
    assert.equal(await runsOn(b), 0, 'B has not reconciled itself')
    const shared = await b.api<{ trigger: string; error: string | null }>('GET', '/v1/reconcile/last')
    assert.deepEqual([shared.status, shared.body.error], [200, null], "B shows the holder's last report")
    // with an interval of 1 s the holder keeps reconciling; B still never does
    const before = reconcileLists(standin)
    await eventually(async () => reconcileLists(standin) >= before + 2 || undefined, 15_000, 'A reconciles again')
    assert.ok((await runsOn(a)) >= 2)
    assert.equal(await runsOn(b), 0, 'still only A')

    await a.stop({ keepStandin: true })
    await eventually(async () => (await runsOn(b)) > 0 || undefined, 15_000, 'B reconciles once A is gone')
    assert.match((await holder()) ?? '', /^replica-b@test#/)
  })

  for (const followed of [true, false]) {
  it(`a reconcile on one replica never undoes hook calls another replica answered while it listed EMQX (${followed ? 'A has applied them' : 'A may not have applied them yet'})`, async (t) => {
    let duringListing: (() => Promise<void>) | undefined
    const { standin, a, b } = await twoReplicas(
      t,
      {
        // once EMQX's page of clients is made, before the hub reads it: the page is stale
        afterReply: async (_method, path) => {
          if (!/\/clients\?/.test(path) || !duringListing) return
          const act = duringListing
          duringListing = undefined
          await act()
        }
      },
      3600 // only the reconcile asked for below runs while the test looks
    )
    const hook = (body: Record<string, unknown>) => b.webhook({ node: 'emqx@test', ...body })
    const connect = (id: string, port: number) =>
      hook({ event: 'client.connected', clientid: id, username: id, peername: `127.0.0.1:${port}`, mountpoint: `${id}/`, clean_start: true })
    for (const id of ['leaves', 'arrives']) await a.createDevice(id)
    standin.addClient({ clientid: 'leaves', username: 'leaves', node: 'emqx@test', ipAddress: '127.0.0.1', port: 2001, mountpoint: 'leaves/' })
    assert.equal((await connect('leaves', 2001)).status, 200)
    // the clients page has been made when this runs: it still lists `leaves`, not `arrives`
    duringListing = async () => {
      standin.removeClient('leaves')
      assert.equal((await hook({ event: 'client.disconnected', clientid: 'leaves', username: 'leaves', peername: '127.0.0.1:2001', reason: 'normal' })).status, 200)
      assert.equal((await connect('arrives', 2002)).status, 200)
      standin.addClient({ clientid: 'arrives', username: 'arrives', node: 'emqx@test', ipAddress: '127.0.0.1', port: 2002, mountpoint: 'arrives/' })
      // A has applied what B answered before it goes on with its stale listing — or goes on at
      // once, and what PostgreSQL holds must keep it from undoing B's work
      if (followed) await eventually(async () => a.hub.store.following().applied >= b.hub.store.following().applied || undefined, 15_000, 'A follows B')
    }
    const report = (await a.api<{ error: string | null; skippedChanged: number }>('POST', '/v1/reconcile')).body
    assert.equal(duringListing, undefined, 'the hook calls ran during the listing')
    assert.equal(report.error, null)
    for (const hub of [a, b]) {
      assert.equal((await hub.api('GET', '/v1/sessions/leaves')).status, 404, 'not brought back from the stale listing')
      await eventually(async () => (await hub.api<{ connected: boolean }>('GET', '/v1/sessions/arrives')).body.connected === true || undefined, 15_000, 'arrives is connected')
    }
    assert.ok(report.skippedChanged >= 1, 'the changes B made counted as changes at A')
  })
  }
})

describe('a call that reaches another replica than the one before it', () => {
  it("stores a device's upstream publish that reaches B right after its connect was answered by A", async (t) => {
    // ExHook pins each EMQX node's channel to one replica; a WebHook behind a load balancer
    // does not: B may hear of the publish before its caches have the session A just recorded
    const { db, a, b } = await twoReplicas(t)
    const ids = Array.from({ length: 100 }, (_, i) => `cross-${i}`)
    const viaA = a.exhook('v3', 'emqx@test')
    const viaB = b.exhook('v3', 'emqx@test')
    for (const id of ids) {
      await a.createDevice(id)
      await viaA.onClientConnected({ clientid: id, username: id, mountpoint: `${id}/` })
      const answer = await viaB.onMessagePublish({ from: id, topic: `${id}/v1/devices/me/attributes`, payload: `{"seen":"${id}"}`, qos: 1 })
      assert.equal(answer.type, 'IGNORE', 'routed on, as a stored upstream publish is')
    }
    const stored = await db.query<{ device_id: string; value: { seen: string } }>(
      `SELECT device_id, value FROM device_properties WHERE name = 'attributes' AND device_id LIKE 'cross-%'`
    )
    assert.deepEqual(
      stored.map((r) => [r.device_id, r.value.seen]).sort(),
      ids.map((id) => [id, id]).sort(),
      'every publish stored, however soon after its connect'
    )
  })

  it("keeps a device's connectinfo online while another replica holds one of its connections", async (t) => {
    const { db, a, b } = await twoReplicas(t)
    await a.createDevice('two-conns')
    const client = (clientid: string) => ({ clientid, username: 'two-conns', mountpoint: 'two-conns/' })
    await a.exhook('v3', 'emqx@n1').onClientConnected(client('conn-1'))
    await b.exhook('v3', 'emqx@n2').onClientConnected(client('conn-2'))
    await eventually(async () => a.hub.store.following().applied >= b.hub.store.following().applied || undefined, 15_000, 'A follows B')
    // conn-1 leaves through A, which must count conn-2, held through B
    await a.exhook('v3', 'emqx@n1').onClientDisconnected(client('conn-1'), 'normal')
    await a.hub.properties.settled()
    const rows = await db.query<{ value: { _online: boolean; _clientid: string } }>(
      `SELECT value FROM device_properties WHERE device_id = 'two-conns' AND name = 'connectinfo'`
    )
    assert.deepEqual([rows[0]?.value._online, rows[0]?.value._clientid], [true, 'conn-2'])
  })
})

