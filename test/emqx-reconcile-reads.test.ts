/**
 * The reconcile reads what the hub holds from the stored fleet (FleetReads), not from memory:
 * a listed client whose stored session already matches EMQX's listing costs no decision and no
 * store transaction (observed through the PostgreSQL store's group-commit batches), and ghosts
 * are found by a keyset walk of the stored sessions' ids and states, page after page.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { EmqxCarrier } from '../src/emqx/emqx-carrier.js'
import { Reconciler, type ReconcileReads, type ReconcileReport } from '../src/emqx/reconcile.js'
import type { Session } from '../src/domain/session.js'
import type { SessionState } from '../src/store/fleet-reads.js'
import { startEmqxTestHub, type EmqxTestHub } from './helpers/emqx-hub.js'
import { eventually } from './helpers/hub.js'
import { createDatabase } from './helpers/postgres.js'

const NODE = 'emqx@127.0.0.1'

/** Callers the store's group commit has put into batches so far (each decision or write is one). */
async function batchCallers(t: EmqxTestHub): Promise<number> {
  const text = (await t.api<string>('GET', '/metrics', undefined, null)).body
  const sum = text.split('\n').find((l) => l.startsWith('iothub_store_batch_commits_sum '))
  return sum === undefined ? 0 : Number(sum.slice(sum.lastIndexOf(' ') + 1))
}

async function reconcile(t: EmqxTestHub): Promise<ReconcileReport> {
  const { status, body } = await t.api<ReconcileReport>('POST', '/v1/reconcile')
  assert.equal(status, 200)
  assert.equal(body.error, null)
  return body
}

describe('the reconcile compares EMQX with the stored fleet', () => {
  it('a listed client whose stored session matches costs no store transaction; one that differs is fixed', async (ctx) => {
    const db = await createDatabase('reconcile_skip')
    const t = await startEmqxTestHub({ version: 5, overrides: { store: 'postgres', databaseUrl: db.url } })
    ctx.after(async () => {
      await t.stop()
      await db.drop()
    })
    const ids = Array.from({ length: 30 }, (_, i) => `skip-${i}`)
    for (const [i, id] of ids.entries()) {
      await t.createDevice(id)
      t.standin.addClient({ clientid: id, username: id, node: NODE, port: 20_000 + i, cleanStart: i % 2 === 0, expiryInterval: i % 2 === 0 ? 0 : 3600 })
      t.standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
    }
    // the first run records them all (the hub missed their connects)
    const first = await reconcile(t)
    assert.deepEqual([first.sessionsAdded, first.topicsAdded], [ids.length, ids.length])
    // each connect asks its device's connectinfo write after it, which the run does not wait for:
    // all stored before the count below starts
    const online = async (id: string) => (await t.api<{ properties: { connectinfo?: { _online?: boolean } } }>('GET', `/v1/devices/${id}`)).body.properties.connectinfo?._online === true
    await eventually(async () => (await Promise.all(ids.map(online))).every(Boolean), 10_000, "every device's connectinfo written")

    // nothing differs now: no client gets a decision, so no batch takes a caller
    const before = await batchCallers(t)
    const same = await reconcile(t)
    assert.equal(same.brokerClients, ids.length)
    assert.deepEqual([same.ghostsEnded, same.offlineEnded, same.sessionsAdded, same.sessionsCorrected, same.topicsAdded, same.topicsRemoved], [0, 0, 0, 0, 0, 0])
    assert.equal((await batchCallers(t)) - before, 0, 'a reconcile that finds every client as stored writes nothing and decides nothing')

    // one client of the page has a topic the hub lacks, another's QoS differs: only they are fixed
    t.standin.subscribe('skip-3', 'skip-3/v1/devices/me/commands', 1)
    t.standin.subscribe('skip-4', 'skip-4/v1/devices/me/attributes', 2)
    const beforeFix = await batchCallers(t)
    const fixed = await reconcile(t)
    assert.equal(fixed.topicsAdded, 2)
    const callers = (await batchCallers(t)) - beforeFix
    assert.ok(callers >= 2 && callers <= 4, `${callers} batch callers: the two differing clients' fixes (and their connects' checks), no others`)
    const session = (await t.api<{ topics: { brokerTopic: string; qos: number }[] }>('GET', '/v1/sessions/skip-4')).body
    assert.deepEqual(session.topics.map((s) => [s.brokerTopic, s.qos]), [['skip-4/v1/devices/me/attributes', 2]])
  })

  it('finds a ghost by a keyset walk of the stored sessions, several pages in', async (ctx) => {
    // one hub whatever IOTHUB_TEST_EMQX_REPLICAS says: the walk under test is this Reconciler's,
    // over this hub's reads, and a second replica's reconcile would end the ghost first
    const t = await startEmqxTestHub({ version: 4, overrides: { store: 'sqlite' } })
    ctx.after(() => t.stop())
    const ids = Array.from({ length: 9 }, (_, i) => `walk-${i}`)
    for (const [i, id] of ids.entries()) t.standin.addClient({ clientid: id, username: id, node: NODE, port: 21_000 + i })
    await reconcile(t)
    // EMQX lost walk-7 without the hub hearing of it: the 4th page of 2 holds it (walk-6, walk-7)
    t.standin.removeClient('walk-7')

    const carrier = t.hub.carrier as EmqxCarrier
    const reads = new CountingReads(t.hub.fleet)
    const reconciler = new Reconciler(t.hub.registry, reads, carrier.rest, carrier.source, t.hub.metrics, t.hub.log, { pageSize: 2 })
    const report = await reconciler.run('api')
    await reconciler.stop()

    assert.equal(report.error, null)
    assert.equal(report.ghostsEnded, 1)
    assert.equal((await t.api('GET', '/v1/sessions/walk-7')).status, 404)
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/walk-8')).body.connected, true)
    // EMQX 4 lists no offline sessions: the walk is of the connected ones, a page of 2 after the other
    assert.deepEqual(
      reads.walked.map((w) => [w.connected, w.after ?? null, w.limit]),
      [
        [true, null, 2],
        [true, 'walk-1', 2],
        [true, 'walk-3', 2],
        [true, 'walk-5', 2],
        [true, 'walk-7', 2]
      ]
    )
    // the listed clients were compared with the store a page at a time
    assert.deepEqual(reads.compared.map((page) => page.length), [2, 2, 2, 2])
  })
})

/** The reads a reconcile made, passed on to the reads it wraps. */
class CountingReads implements ReconcileReads {
  readonly walked: { connected: boolean | undefined; after: string | undefined; limit: number }[] = []
  readonly compared: string[][] = []

  constructor(private readonly inner: ReconcileReads) {}

  session(id: string): Promise<Session | undefined> {
    return this.inner.session(id)
  }

  sessionsOf(ids: readonly string[]): Promise<Map<string, Session>> {
    this.compared.push([...ids])
    return this.inner.sessionsOf(ids)
  }

  sessionStates(connectedOnly: boolean, after: string | undefined, limit: number): Promise<{ states: SessionState[]; more: boolean }> {
    this.walked.push({ connected: connectedOnly ? true : undefined, after, limit })
    return this.inner.sessionStates(connectedOnly, after, limit)
  }
}
