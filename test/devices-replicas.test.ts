/**
 * Devices across replicas: EMQX mode, two hub replicas on one PostgreSQL (test/helpers/replicas.ts).
 * A token replaced or a device deleted through one replica is refused by the other at once —
 * the moment the change was answered, not once the other's caches follow the log: the other's
 * reading of the log is held back meanwhile (`holdLog`), so its caches still show the device as
 * it was — and the other shows the change (its listing, its sessions, its event stream).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { Hub } from '../src/hub.js'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually } from './helpers/hub.js'
import { replicasForTest, type Replica } from './helpers/replicas.js'
import { SseStream } from './helpers/sse.js'


/**
 * Holds back `hub`'s reading of the change log (what brings other replicas' changes to its
 * caches) until the answer is called: a replica whose caches lag, deterministically.
 */
function holdLog(hub: Hub): () => void {
  const store = hub.store as { readLog: Hub['store']['readLog'] }
  const read = store.readLog.bind(store)
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  store.readLog = async (after, limit) => {
    await released
    return read(after, limit)
  }
  return () => {
    store.readLog = read
    release()
  }
}

/** Whether `replica` lets `id` log in with `password` (EMQX's authentication hook, as EMQX asks it). */
async function admits(replica: Replica, id: string, password: string): Promise<boolean> {
  const verdict = await replica.exhook.onClientAuthenticate({ clientid: `${id}-${Math.random().toString(36).slice(2, 8)}`, username: id, password, peerhost: '10.1.2.3' }, false)
  return verdict.bool_result === true
}

describe('devices across replicas on one PostgreSQL (EMQX mode)', () => {
  it('a token replaced through A is refused through B at once; kick=true kicks the live connection through EMQX', async (t) => {
    const set = await replicasForTest(t, { count: 2, devices: ['rep-rot'] })
    const [a, b] = set.replicas as [Replica, Replica]
    const old = set.tokens.get('rep-rot')!
    // B has read the device (and cached it) before the change
    assert.equal(await admits(b, 'rep-rot', old), true)
    const conn = set.connection('rep-rot', b.node)
    await set.connect(b, conn)

    const release = holdLog(b.hub.hub)
    try {
      const rotated = await a.api<{ token: string; kicked: number }>('POST', '/v1/devices/rep-rot/token?kick=true')
      assert.equal(rotated.status, 200)
      assert.equal(rotated.body.kicked, 1)
      assert.equal(set.standin.clients.has('rep-rot'), false, 'EMQX was asked to kick it')
      assert.equal(b.hub.hub.devices.get('rep-rot')?.tokenHash, b.hub.hub.store.tokens.hash(old), "B's cache has not heard of the change")
      assert.equal(await admits(b, 'rep-rot', old), false, 'B refuses the old token at once')
      assert.equal(await admits(a, 'rep-rot', old), false)
      assert.equal(await admits(b, 'rep-rot', rotated.body.token), true, 'and takes the new one')
    } finally {
      release()
    }
  })

  it('a device deleted through A is refused through B at once; its sessions and entities are gone on both; B tells device.deleted', async (t) => {
    const set = await replicasForTest(t, { count: 2, devices: ['rep-del', 'rep-keep'] })
    const [a, b] = set.replicas as [Replica, Replica]
    const token = set.tokens.get('rep-del')!
    const opened = await SseStream.open(`${b.hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
    assert.equal(opened.status, 200)
    const events = opened.stream!
    t.after(() => events.close())

    assert.equal(await admits(b, 'rep-del', token), true)
    const conn = set.connection('rep-del', b.node)
    await set.connect(b, conn)
    await set.subscribe(b, conn, 'v1/devices/me/attributes')
    assert.equal((await a.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=rep-del')).body.data.length, 1)

    const release = holdLog(b.hub.hub)
    try {
      const deleted = await a.api<{ sessionsEnded: number; subscriptionsDeleted: number }>('DELETE', '/v1/devices/rep-del')
      assert.equal(deleted.status, 200)
      assert.deepEqual(deleted.body, { id: 'rep-del', sessionsEnded: 1, subscriptionsDeleted: 1 })
      assert.equal(set.standin.clients.has('rep-del'), false, 'EMQX was asked to kick it')
      assert.ok(b.hub.hub.devices.get('rep-del'), "B's cache has not heard of the deletion")
      assert.equal(await admits(b, 'rep-del', token), false, 'B refuses its token at once')
    } finally {
      release()
    }
    // what B reads of the store shows it at once too
    assert.equal((await b.api('GET', '/v1/sessions/rep-del')).status, 404)
    assert.deepEqual((await b.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=rep-del')).body.data, [])
    assert.deepEqual((await b.api<{ data: { id: string }[] }>('GET', '/v1/devices')).body.data.map((d) => d.id), ['rep-keep'])
    // and its cache follows the log
    await eventually(async () => (await b.api('GET', '/v1/devices/rep-del')).status === 404, 20_000, 'B to answer 404')
    // EMQX's late disconnect of the kicked connection changes nothing
    await set.disconnect(b, conn, 'kicked')
    assert.equal((await a.api('GET', '/v1/sessions/rep-del')).status, 404)

    await events.until((s) => s.events<{ type: string; deviceId: string }>().some((e) => e.type === 'device.deleted' && e.deviceId === 'rep-del'), 20_000, 'device.deleted on B')
    const told = events.events<{ type: string; deviceId: string; reason?: string }>().filter((e) => e.deviceId === 'rep-del')
    assert.deepEqual(
      told.filter((e) => e.type === 'session.ended').map((e) => e.reason),
      ['device_deleted']
    )
  })

  it('a device changed through A is shown changed through B once B follows the log', async (t) => {
    const set = await replicasForTest(t, { count: 2, devices: ['rep-pt'] })
    const [a, b] = set.replicas as [Replica, Replica]
    assert.equal((await b.api<{ name: string }>('GET', '/v1/devices/rep-pt')).body.name, '')
    const patched = await a.api<{ name: string }>('PATCH', '/v1/devices/rep-pt', { name: 'renamed' })
    assert.equal(patched.body.name, 'renamed')
    assert.deepEqual((await b.api<{ data: { name: string }[] }>('GET', '/v1/devices?q=renamed')).body.data.map((d) => d.name), ['renamed'], 'the listing reads the store')
    // its properties too: a page's are read from the store in one query
    await a.api('PATCH', '/v1/devices/rep-pt/attributes', { mode: 'eco' })
    const listed = (await b.api<{ data: { id: string; properties: { attributes: unknown; telemetry: unknown } }[] }>('GET', '/v1/devices?q=rep-pt')).body.data
    assert.deepEqual(
      listed.map((d) => [d.id, d.properties.attributes, d.properties.telemetry]),
      [['rep-pt', { mode: 'eco' }, {}]]
    )
    await eventually(async () => (await b.api<{ name: string }>('GET', '/v1/devices/rep-pt')).body.name === 'renamed', 20_000, 'B to show the new name')
    assert.equal(await admits(b, 'rep-pt', set.tokens.get('rep-pt')!), true, 'the token is unchanged')
  })
})
