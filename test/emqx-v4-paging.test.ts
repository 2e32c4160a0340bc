/**
 * EMQX v4's paging through the HTTP API, on PostgreSQL behind two replicas (issue 13's scale
 * item): `meta.count` is the total of an unfiltered listing — kept by the store, exact while both
 * replicas write — and -1 for a listing with conditions, as EMQX 4 answers; `hasnext` is exact;
 * a page asked right after the page before it continues from that page's last row, so a walk in
 * order neither repeats nor skips rows while sessions sorting before it come and go (an offset
 * would shift by them); a page with no page before it is an offset into the fleet as it is.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { createTestDatabase, startReplicas, type Connection, type Replica, type ReplicaSet, type TestDatabase } from './helpers/replicas.js'

interface ClientsPage {
  code: number
  meta: { page: number; limit: number; hasnext: boolean; count: number }
  data: { clientid: string; connected: boolean }[]
}
interface SubscriptionsPage {
  code: number
  meta: { page: number; limit: number; hasnext: boolean; count: number }
  data: { clientid: string; topic: string }[]
}

const FLEET = 24
const ids = Array.from({ length: FLEET }, (_, i) => `c-${String(i).padStart(2, '0')}`)
const TOPIC = 'v1/devices/me/attributes'

describe('EMQX v4 paging on PostgreSQL with two replicas', () => {
  let db: TestDatabase
  let set: ReplicaSet
  let a: Replica
  let b: Replica
  const connections = new Map<string, Connection>()

  const clients = async (via: Replica, query: string): Promise<ClientsPage> => {
    const r = await via.api<ClientsPage>('GET', `/api/v4/clients?${query}`)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    return r.body
  }
  const subscriptions = async (via: Replica, query: string): Promise<SubscriptionsPage> => {
    const r = await via.api<SubscriptionsPage>('GET', `/api/v4/subscriptions?${query}`)
    assert.equal(r.status, 200, JSON.stringify(r.body))
    return r.body
  }
  const stored = async (): Promise<{ sessions: number; topics: number }> => {
    const [row] = await db.query<{ sessions: string; topics: string }>('SELECT (SELECT count(*) FROM sessions) AS sessions, (SELECT count(*) FROM topics) AS topics')
    return { sessions: Number(row!.sessions), topics: Number(row!.topics) }
  }
  const connect = async (via: Replica, id: string, subscribe = true): Promise<void> => {
    const conn = set.connection(id, via.node)
    connections.set(id, conn)
    await set.connect(via, conn)
    if (subscribe) await set.subscribe(via, conn, TOPIC)
  }

  before(
    async () => {
      db = await createTestDatabase()
      set = await startReplicas({ count: 2, db })
      ;[a, b] = set.replicas as [Replica, Replica]
      // both replicas record sessions at once, half each
      await Promise.all(ids.map((id, i) => connect(i % 2 === 0 ? a : b, id)))
    },
    { timeout: 120_000 }
  )
  after(async () => {
    await set?.stop()
    await db?.drop()
  })

  it('counts the unfiltered fleet exactly, whichever replica wrote it, and answers -1 for a listing with conditions', async () => {
    assert.deepEqual(await stored(), { sessions: FLEET, topics: FLEET })
    for (const via of [a, b]) {
      assert.deepEqual((await clients(via, '_page=1&_limit=5')).meta, { page: 1, limit: 5, hasnext: true, count: FLEET })
      assert.deepEqual((await subscriptions(via, '_page=1&_limit=5')).meta, { page: 1, limit: 5, hasnext: true, count: FLEET })
      // the cache-buster is no condition
      assert.equal((await clients(via, '_page=1&_limit=5&_=1640597122737')).meta.count, FLEET)
    }
    const connectedOnly = await clients(b, 'conn_state=connected&_page=1&_limit=100')
    assert.deepEqual(connectedOnly.meta, { page: 1, limit: 100, hasnext: false, count: -1 })
    assert.equal(connectedOnly.data.length, FLEET)
    assert.deepEqual((await clients(b, `clientid=${ids[3]}`)).meta, { page: 1, limit: 10000, hasnext: false, count: -1 })
    assert.deepEqual((await clients(b, 'zone=internal')).meta, { page: 1, limit: 10000, hasnext: false, count: -1 })
    assert.deepEqual((await subscriptions(b, `clientid=${ids[3]}`)).meta, { page: 1, limit: 10000, hasnext: false, count: -1 })
    assert.deepEqual((await subscriptions(b, 'qos=1&_limit=23')).meta, { page: 1, limit: 23, hasnext: true, count: -1 })
  })

  it('keeps the count exact while both replicas connect and disconnect clients at once', async () => {
    const extra = Array.from({ length: 10 }, (_, i) => `x-${i}`)
    await Promise.all(extra.map((id, i) => connect(i % 2 === 0 ? b : a, id)))
    await Promise.all(extra.slice(0, 6).map((id, i) => set.disconnect(i % 2 === 0 ? a : b, connections.get(id)!)))
    assert.deepEqual(await stored(), { sessions: FLEET + 4, topics: FLEET + 4 })
    assert.equal((await clients(a, '_limit=1')).meta.count, FLEET + 4)
    assert.equal((await subscriptions(b, '_limit=1')).meta.count, FLEET + 4)
    await Promise.all(extra.slice(6).map((id, i) => set.disconnect(i % 2 === 0 ? a : b, connections.get(id)!)))
    assert.equal((await clients(b, '_limit=1')).meta.count, FLEET)
  })

  it('walks /api/v4/clients in order without repeating or skipping a row while sessions before the walk come and go', async () => {
    const limit = 5
    const walked: string[] = []
    const hasnext: boolean[] = []
    for (let page = 1; ; page++) {
      const body = await clients(b, `_page=${page}&_limit=${limit}`)
      walked.push(...body.data.map((c) => c.clientid))
      hasnext.push(body.meta.hasnext)
      if (page === 2) await connect(a, 'a-early', false) // sorts before every row listed so far
      if (page === 3) await set.disconnect(a, connections.get('a-early')!)
      if (page === 3) await set.disconnect(a, connections.get(ids[0]!)!) // and so does one of them
      if (!body.meta.hasnext) break
    }
    assert.deepEqual(walked, ids, 'each row once, in order')
    assert.deepEqual(hasnext, [true, true, true, true, false])
    await connect(a, ids[0]!)
  })

  it('reads a page asked out of order as an offset into the fleet as it is, on a replica that served none before it', async () => {
    // A served no page of this listing: its page 3 is rows 10–14 of the fleet now
    await connect(b, 'a-early', false)
    const page3 = await clients(a, '_page=3&_limit=5&conn_state=connected')
    assert.deepEqual(page3.data.map((c) => c.clientid), ['a-early', ...ids].slice(10, 15))
    assert.deepEqual(page3.meta, { page: 3, limit: 5, hasnext: true, count: -1 })
    const last = await clients(a, '_page=5&_limit=5&conn_state=connected')
    assert.deepEqual(last.data.map((c) => c.clientid), ['a-early', ...ids].slice(20, 25))
    assert.equal(last.meta.hasnext, false, 'exact: the page ends at the last row')
    assert.deepEqual((await clients(a, '_page=6&_limit=5&conn_state=connected')).data, [])
    await set.disconnect(b, connections.get('a-early')!)
  })

  it('walks /api/v4/subscriptions in order likewise', async () => {
    const walked: string[] = []
    for (let page = 1; ; page++) {
      const body = await subscriptions(a, `_page=${page}&_limit=7`)
      walked.push(...body.data.map((s) => `${s.clientid} ${s.topic}`))
      if (page === 1) {
        // a topic row sorting before the page's last row, then one after it
        await set.subscribe(a, connections.get(ids[1]!)!, 'v1/devices/me/commands')
        await set.subscribe(a, connections.get(ids[20]!)!, 'v1/devices/me/commands')
      }
      if (!body.meta.hasnext) break
    }
    const expected = ids.map((id) => `${id} ${id}/${TOPIC}`)
    expected.splice(21, 0, `${ids[20]} ${ids[20]}/v1/devices/me/commands`)
    assert.deepEqual(walked, expected)
  })
})
