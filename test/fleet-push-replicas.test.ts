/**
 * Fleet pushes where the store is PostgreSQL: two EMQX-mode replicas on one database
 * (test/helpers/replicas.ts), and the embedded broker on PostgreSQL with real mqtt.js devices. A
 * push through replica A changes every selected device in the shared store, publishes to EMQX
 * (its REST stand-in) once per subscribed device, and replica B sees the changes — reading the
 * devices and in its own event stream.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { createDatabase, type TestDatabase } from './helpers/postgres.js'
import { replicasForTest, type Replica } from './helpers/replicas.js'
import { SseStream } from './helpers/sse.js'

interface FleetAnswer {
  matched: number
  changed: number
  alreadySent?: number
  pushed: number
  sessions: number
  unknown: string[]
  complete: boolean
  command?: { id: string }
}


describe('fleet pushes on PostgreSQL', () => {
  it('EMQX mode: a push through A reaches the store, EMQX and replica B', async (t) => {
    const set = await replicasForTest(t, { count: 2 })
    const [a, b] = set.replicas as [Replica, Replica]
    const ids = ['pgf-1', 'pgf-2', 'pgf-3', 'pgf-4']
    const made = await a.api('POST', '/v1/devices', [...ids.map((id) => ({ id, owner: 'pg-alice', group: id === 'pgf-4' ? 'other' : 'main' })), { id: 'pgf-bob', owner: 'pg-bob', group: 'main' }, { id: 'pgf-marker' }])
    assert.equal(made.status, 201)
    // pgf-1 (through A's node) and pgf-2 (through B's) subscribe to their attributes; pgf-3 connects only
    for (const [id, via] of [['pgf-1', a], ['pgf-2', b], ['pgf-3', a], ['pgf-bob', b]] as const) {
      const conn = set.connection(id, via.node)
      await set.connect(via, conn)
      if (id !== 'pgf-3') await set.subscribe(via, conn, 'v1/devices/me/attributes')
    }

    const { stream } = await SseStream.open(`${b.hub.httpUrl}/v1/events?types=device.property`, { authorization: BASIC_ADMIN })
    try {
      const pushed = await a.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { owner: 'pg-alice', group: 'main', attributes: { mode: 'eco' } })
      assert.equal(pushed.status, 200, JSON.stringify(pushed.body))
      assert.deepEqual([pushed.body.matched, pushed.body.changed, pushed.body.pushed, pushed.body.sessions, pushed.body.complete], [3, 3, 2, 2, true])

      const attributeTopics = set.standin.published.filter((p) => p.topics[0]!.endsWith('/v1/devices/me/attributes'))
      assert.deepEqual(attributeTopics.map((p) => p.topics[0]).sort(), ['pgf-1/v1/devices/me/attributes', 'pgf-2/v1/devices/me/attributes'], 'one publish per subscribed device')
      for (const p of attributeTopics) assert.deepEqual(JSON.parse(p.payload.toString()), { mode: 'eco' })

      for (const id of ['pgf-1', 'pgf-2', 'pgf-3']) {
        const seen = await b.api<{ properties: { attributes?: Record<string, unknown> } }>('GET', `/v1/devices/${id}`)
        assert.deepEqual(seen.body.properties.attributes, { mode: 'eco' }, `B reads ${id}'s change`)
      }
      for (const id of ['pgf-4', 'pgf-bob']) assert.deepEqual((await b.api<{ properties: { attributes?: unknown } }>('GET', `/v1/devices/${id}`)).body.properties.attributes, {}, `${id} untouched`)

      await a.api('PATCH', '/v1/devices/pgf-marker/attributes', { marker: 1 })
      await stream!.until((s) => s.events<{ deviceId: string }>().some((e) => e.deviceId === 'pgf-marker'), 10_000, "the marker in B's stream")
      const changed = stream!.events<{ deviceId: string; name: string }>().filter((e) => e.deviceId !== 'pgf-marker' && e.name === 'attributes')
      assert.deepEqual(changed.map((e) => e.deviceId).sort(), ['pgf-1', 'pgf-2', 'pgf-3'], 'B tells one device.property per changed device')
    } finally {
      stream!.close()
    }

    // a command by ids through B, repeated through A: stored once per device in the shared store
    const first = await b.api<FleetAnswer>('POST', '/v1/devices/commands', { ids: ['pgf-1', 'pgf-4', 'pgf-none'], command: { name: 'reboot' } })
    assert.equal(first.status, 200)
    assert.deepEqual([first.body.changed, first.body.unknown], [2, ['pgf-none']])
    const again = await a.api<FleetAnswer>('POST', '/v1/devices/commands', { ids: ['pgf-1', 'pgf-4'], command: { id: first.body.command!.id, name: 'reboot' } })
    assert.deepEqual([again.body.changed, again.body.alreadySent], [0, 2], 'A sees what B stored')
  })

  describe('embedded broker on PostgreSQL', () => {
    let db: TestDatabase
    let t: TestHub
    before(async () => {
      db = await createDatabase('iothub_fleet')
      t = await startTestHub({ store: 'postgres', databaseUrl: db.url })
    })
    after(async () => {
      await t.stop()
      await db.drop()
    })

    it('pushes to the subscribed devices by ids, stores the others', async () => {
      const received = new Map<string, string[]>()
      const clients: MqttClient[] = []
      for (const id of ['pge-1', 'pge-2', 'pge-3']) {
        const { token } = await t.createDevice({ id })
        if (id === 'pge-3') continue
        const client = await t.connect({ clientId: id, username: id, password: token })
        received.set(id, [])
        client.on('message', (_topic, payload) => received.get(id)!.push(payload.toString()))
        await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
        clients.push(client)
      }
      const pushed = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { ids: ['pge-1', 'pge-2', 'pge-3'], attributes: { on: true } })
      assert.equal(pushed.status, 200, JSON.stringify(pushed.body))
      assert.deepEqual([pushed.body.changed, pushed.body.pushed], [3, 2])
      await eventually(() => [...received.values()].every((r) => r.length === 1), 20_000, 'each subscribed device got its push')
      for (const r of received.values()) assert.deepEqual(JSON.parse(r[0]!), { on: true })
      const stored = await db.query<{ device_id: string }>("SELECT device_id FROM device_properties WHERE name = 'attributes' ORDER BY device_id")
      assert.deepEqual(stored.map((r) => r.device_id), ['pge-1', 'pge-2', 'pge-3'])
    })
  })
})
