/**
 * How replicas on one PostgreSQL know of each other (docs/emqx-mode.md, "Running several
 * replicas"): each records itself, `GET /v1/replicas` lists them all from any of them, and work
 * that must not run twice — the reconcile with EMQX — runs on the one replica holding its lease,
 * moving to another when the holder stops. Real hubs, real PostgreSQL, the EMQX REST stand-in.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { startEmqxTestHub, type EmqxTestHub } from './helpers/emqx-hub.js'
import { startEmqxRestStandin, type EmqxRestStandin } from './helpers/emqx-rest-standin.js'
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
async function twoReplicas(t: TestContext): Promise<{ db: TestDatabase; standin: EmqxRestStandin; a: EmqxTestHub; b: EmqxTestHub }> {
  const db = await createTestDatabase()
  const standin = await startEmqxRestStandin({ version: 5, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET })
  const started: EmqxTestHub[] = []
  t.after(async () => {
    for (const hub of started) await hub.stop({ keepStandin: true })
    await standin.close()
    await db.drop()
  })
  for (const node of ['replica-a@test', 'replica-b@test']) {
    started.push(await startEmqxTestHub({ version: 5, standin, overrides: { store: 'postgres', databaseUrl: db.url, node, reconcileInterval: 1 } }))
  }
  return { db, standin, a: started[0]!, b: started[1]! }
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

  it('one replica at a time reconciles with EMQX; when it stops, the other takes the lease and reconciles', async (t) => {
    const { db, standin, a, b } = await twoReplicas(t)
    const holder = async (): Promise<string | undefined> =>
      (await db.query<{ holder: string }>(`SELECT holder FROM leases WHERE name = 'reconcile' AND expires_at > $1`, [Date.now()]))[0]?.holder
    // A started first and took the lease; B is ready because A has reconciled
    assert.match((await holder()) ?? '', /^replica-a@test#/)
    assert.equal((await b.api('GET', '/readyz', undefined, null)).status, 200, 'B is ready: the holder keeps the store reconciled')
    assert.equal((await b.api('GET', '/v1/reconcile/last')).status, 404, 'B has not reconciled itself')
    // with an interval of 1 s the holder keeps reconciling; B still never does
    const before = reconcileLists(standin)
    await eventually(async () => reconcileLists(standin) >= before + 2 || undefined, 15_000, 'A reconciles again')
    assert.equal((await b.api('GET', '/v1/reconcile/last')).status, 404, 'still only A')

    await a.stop({ keepStandin: true })
    await eventually(async () => (await b.api('GET', '/v1/reconcile/last')).status === 200 || undefined, 15_000, 'B reconciles once A is gone')
    assert.match((await holder()) ?? '', /^replica-b@test#/)
  })
})
