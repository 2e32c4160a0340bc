/**
 * Memory is a cache, not a copy of the fleet: an EMQX-mode replica on PostgreSQL keeps at most
 * IOTHUB_CACHE_SESSIONS sessions and IOTHUB_CACHE_DEVICES devices in memory, and still answers
 * for the whole fleet — listings, counts, pushes, a device's connectinfo and the per-device
 * session limit — from the store.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { eventually } from './helpers/hub.js'
import { metricValue } from './helpers/metrics.js'
import { createTestDatabase, startReplicas, type ReplicaSet } from './helpers/replicas.js'

/** The smallest cache IOTHUB_CACHE_SESSIONS allows. */
const CACHE = 100
/** More sessions than the cache holds. */
const FLEET = 260
const ATTRIBUTES = 'v1/devices/me/attributes'

describe('EMQX mode on PostgreSQL: a replica holds a bounded cache, not the fleet', () => {
  it(`lists, counts and pushes to ${FLEET} sessions while holding at most ${CACHE} of them`, async () => {
    const db = await createTestDatabase()
    let set: ReplicaSet | undefined
    try {
      set = await startReplicas({ count: 2, db, devices: ['first'], overrides: { cacheSessions: CACHE, cacheDevices: CACHE, maxSessionsPerDevice: 2 } })
      const [a, b] = set.replicas as [ReplicaSet['replicas'][0], ReplicaSet['replicas'][0]]
      // the device pushed to later connects first: the sessions after it push it out of A's cache
      const first = set.connection('first', a.node)
      await set.connect(a, first)
      await set.subscribe(a, first, ATTRIBUTES)
      for (let i = 0; i < FLEET - 1; i++) {
        const conn = set.connection(`dev-${String(i).padStart(3, '0')}`, a.node)
        await set.connect(a, conn)
        await set.subscribe(a, conn, ATTRIBUTES)
      }

      for (const r of [a, b]) {
        const cached = await metricValue(r.api, 'iothub_cache_entries{cache="sessions"}')
        assert.ok(cached <= CACHE, `replica ${r.name} holds ${cached} sessions, at most ${CACHE}`)
        // topics and subscription entities are not cached at all: the store answers for them
        assert.equal(await metricValue(r.api, 'iothub_cache_entries{cache="subscription_entities"}'), 0, `replica ${r.name} holds no subscription entities`)
      }

      // B, which recorded none of them, lists every one by pages, in id order, and counts them
      const listed: string[] = []
      let cursor: string | null = null
      do {
        const path: string = `/v1/sessions?limit=100${cursor ? `&cursor=${cursor}` : ''}`
        const page = await b.api<{ data: { id: string; connected: boolean }[]; next: string | null }>('GET', path)
        assert.equal(page.status, 200)
        listed.push(...page.body.data.map((s) => s.id))
        cursor = page.body.next
      } while (cursor)
      assert.equal(listed.length, FLEET)
      assert.deepEqual(listed, [...listed].sort(), 'in id order')
      const clients = await b.api<{ meta: { count: number; hasnext: boolean } }>('GET', '/api/v4/clients?_limit=10&_page=2')
      assert.equal(clients.body.meta.count, FLEET)
      assert.equal(clients.body.meta.hasnext, true)
      await eventually(async () => (await metricValue(b.api, 'iothub_sessions')) === FLEET || undefined, 20_000, `iothub_sessions to count ${FLEET}`)

      // a push through A reaches the session A no longer caches
      const patched = await a.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/first/attributes', { mode: 'eco' })
      assert.equal(patched.status, 200)
      assert.deepEqual(patched.body.pushedTo, ['first'])

      // the device's connectinfo, decided on its sessions as stored, says online
      const device = await b.api<{ properties?: { connectinfo?: { _online?: boolean } } }>('GET', '/v1/devices/first')
      assert.equal(device.status, 200)
      assert.equal(device.body.properties?.connectinfo?._online, true)

      // a subscription entity carries its device's owner, even where the device is not cached:
      // made through A, then pushed out of B's device cache by newer ones
      const owned = await a.api('POST', '/v1/devices', { id: 'owned', owner: 'tenant-1' })
      assert.equal(owned.status, 201)
      // (and one the reconcile will find connected, below)
      assert.equal((await a.api('POST', '/v1/devices', { id: 'listed-only', owner: 'tenant-2' })).status, 201)
      const newer = Array.from({ length: CACHE + 20 }, (_, i) => ({ id: `newer-${i}` }))
      assert.equal((await a.api('POST', '/v1/devices', newer)).status, 201)
      await eventually(async () => (await b.api('GET', '/v1/devices/newer-0')).status === 200 || undefined, 20_000, 'B to see the newer devices')
      const ownedConn = set.connection('owned', b.node)
      await set.connect(b, ownedConn)
      await set.subscribe(b, ownedConn, ATTRIBUTES)
      const entities = await b.api<{ data: { owner: string }[] }>('GET', '/v1/subscriptions?deviceId=owned')
      assert.deepEqual(
        entities.body.data.map((e) => e.owner),
        ['tenant-1']
      )

      // subscribes racing one another through B, of more devices than its device cache holds:
      // each entity still carries its device's owner (the decision reads the device as stored;
      // a cache warmed before the decision could have let it go again by then)
      const crowd = Array.from({ length: CACHE + 50 }, (_, i) => ({ id: `crowd-${String(i).padStart(3, '0')}`, owner: 'tenant-3' }))
      assert.equal((await a.api('POST', '/v1/devices', crowd)).status, 201)
      const crowdConns = crowd.map(({ id }) => set!.connection(id, b.node))
      for (const conn of crowdConns) await set.connect(b, conn)
      await Promise.all(crowdConns.map((conn) => set!.subscribe(b, conn, ATTRIBUTES)))
      for (const { id } of crowd) {
        const page = await b.api<{ data: { owner: string }[] }>('GET', `/v1/subscriptions?deviceId=${id}`)
        assert.deepEqual(
          page.body.data.map((e) => e.owner),
          ['tenant-3'],
          `the entity of ${id}`
        )
      }

      // the per-device limit counts the stored sessions, whichever replica made them
      const second = { ...set.connection('first-2', b.node), username: 'first', mountpoint: 'first/' }
      const admitted = await b.exhookFrom(b.node).onClientAuthenticate({ ...second, password: set.tokens.get('first')! }, false)
      assert.equal(admitted.bool_result, true, 'a second session of the device is admitted')
      await set.connect(b, second)
      const third = { ...set.connection('first-3', a.node), username: 'first', mountpoint: 'first/' }
      const refused = await a.exhookFrom(a.node).onClientAuthenticate({ ...third, password: set.tokens.get('first')! }, false)
      assert.equal(refused.bool_result, false, 'a third is refused: the device holds 2 sessions, one made through the other replica')

      // the reconcile's fixes too: a connection only EMQX's listing tells of, whose device no
      // replica caches any more, gets subscription entities carrying the device's owner
      set.standin.addClient({ clientid: 'listed-only', username: 'listed-only', ipAddress: '127.0.0.1', port: 4200, mountpoint: 'listed-only/' })
      set.standin.subscribe('listed-only', `listed-only/${ATTRIBUTES}`, 1)
      const run = await b.api<{ sessionsAdded: number; error: string | null }>('POST', '/v1/reconcile')
      assert.deepEqual([run.status, run.body.error, run.body.sessionsAdded], [200, null, 1])
      const listedEntities = await b.api<{ data: { owner: string }[] }>('GET', '/v1/subscriptions?deviceId=listed-only')
      assert.deepEqual(
        listedEntities.body.data.map((e) => e.owner),
        ['tenant-2']
      )
    } finally {
      await set?.stop()
      await db.drop()
    }
  })
})
