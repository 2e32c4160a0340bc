/**
 * Subscription entities with real mqtt.js devices: made by subscribing to a change topic of
 * the device's own (directly or by wildcard), deleted by unsubscribing, by a clean session's
 * end and by expiry; kept by an offline persistent session and across a restart.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import mqtt, { type IConnackPacket } from 'mqtt'
import { startTestHub, tempDir, eventually, type TestHub } from './helpers/hub.js'
import { frame, encodeString, RawMqttClient, subscribePacket } from './helpers/raw-mqtt.js'
import { rewriteAsVersion3 } from './helpers/sqlite-version-3.js'

/** UNSUBSCRIBE (MQTT 3.1.1 §3.10). */
function unsubscribePacket(messageId: number, topics: string[]): Buffer {
  return frame(0xa2, Buffer.concat([Buffer.from([messageId >> 8, messageId & 0xff]), ...topics.map((t) => encodeString(t))]))
}

interface ApiSubscription {
  id: string
  type: string
  owner: string
  source: string
  sessionId: string
  deviceId: string
  topic: string
  brokerTopic: string
  properties: string[]
  mode: string
  filter: string
  createdAt: string
}

describe('subscription entities', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub({ sessionExpiry: 1, expirySweepInterval: 1 })
  })
  after(async () => {
    await t.stop()
  })

  const ofSession = async (sessionId: string) =>
    (await t.api<{ data: ApiSubscription[] }>('GET', `/v1/subscriptions?sessionId=${sessionId}`)).body.data

  it('makes one per subscription to change topics, with the properties its filter receives', async () => {
    const device = await t.createDevice({ owner: 'tenant-a' })
    const client = await t.connect({ clientId: 'subs-made', username: device.id, password: device.token })
    await client.subscribeAsync({ 'v1/devices/me/attributes': { qos: 1 }, 'v1/devices/me/#': { qos: 1 }, 'some/other/topic': { qos: 0 } })

    const entities = (await ofSession('subs-made')).sort((a, b) => a.topic.localeCompare(b.topic))
    assert.equal(entities.length, 2, 'the subscription to some/other/topic makes none')
    const [wildcard, attributes] = [entities.find((e) => e.topic === 'v1/devices/me/#')!, entities.find((e) => e.topic === 'v1/devices/me/attributes')!]
    assert.deepEqual(attributes.properties, ['attributes'])
    assert.deepEqual(wildcard.properties, ['attributes', 'telemetry', 'commands', 'raw'])
    assert.equal(attributes.type, 'subscription')
    assert.equal(attributes.owner, 'tenant-a')
    assert.equal(attributes.source, 'iothub')
    assert.equal(attributes.sessionId, 'subs-made')
    assert.equal(attributes.deviceId, device.id)
    assert.equal(attributes.brokerTopic, `${device.id}/v1/devices/me/attributes`)
    assert.equal(attributes.filter, `insert into ${attributes.id} select ${device.id}.attributes`)
    assert.equal(wildcard.filter, `insert into ${wildcard.id} select ${['attributes', 'telemetry', 'commands', 'raw'].map((p) => `${device.id}.${p}`).join(', ')}`)

    const one = await t.api<ApiSubscription>('GET', `/v1/subscriptions/${attributes.id}`)
    assert.equal(one.status, 200)
    assert.deepEqual(one.body, attributes)
    const byDevice = (await t.api<{ data: ApiSubscription[] }>('GET', `/v1/subscriptions?deviceId=${device.id}`)).body.data
    assert.deepEqual(byDevice.map((e) => e.id).sort(), entities.map((e) => e.id).sort())

    // a repeated SUBSCRIBE finds the entity it made: same id, same createdAt
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 0 })
    assert.deepEqual((await t.api<ApiSubscription>('GET', `/v1/subscriptions/${attributes.id}`)).body.createdAt, attributes.createdAt)
    assert.equal((await ofSession('subs-made')).length, 2)
  })

  it('matches + wildcards, and makes none for filters that match no change topic', async () => {
    const device = await t.createDevice()
    const client = await t.connect({ clientId: 'subs-plus', username: device.id, password: device.token })
    await client.subscribeAsync(['v1/devices/+/commands', 'v1/devices/me/command/response', 'v1/+', 'v1/devices/me/attributes/extra'])
    const entities = await ofSession('subs-plus')
    assert.deepEqual(entities.map((e) => [e.topic, e.properties]), [['v1/devices/+/commands', ['commands']]])
  })

  it('deletes the entity on UNSUBSCRIBE, and all of a clean session’s at its end', async () => {
    const device = await t.createDevice()
    const client = await t.connect({ clientId: 'subs-clean', username: device.id, password: device.token })
    await client.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/commands'])
    assert.equal((await ofSession('subs-clean')).length, 2)

    await client.unsubscribeAsync('v1/devices/me/attributes')
    await eventually(async () => (await ofSession('subs-clean')).length === 1, 3000, 'entity deleted on unsubscribe')
    const [left] = await ofSession('subs-clean')
    assert.equal(left!.topic, 'v1/devices/me/commands')

    await client.endAsync()
    await eventually(async () => (await ofSession('subs-clean')).length === 0, 3000, 'entities deleted with the clean session')
    assert.equal((await t.api('GET', `/v1/subscriptions/${left!.id}`)).status, 404)
  })

  it('keeps a persistent session’s entities while it is offline, deletes them when it expires', async () => {
    const device = await t.createDevice()
    const options = { clientId: 'subs-persistent', clean: false, username: device.id, password: device.token }
    const client = await t.connect(options)
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await client.endAsync()
    await eventually(async () => (await t.api<{ connected: boolean }>('GET', '/v1/sessions/subs-persistent')).body.connected === false, 3000, 'offline')
    assert.equal((await ofSession('subs-persistent')).length, 1, 'offline persistent session keeps its entity')

    await eventually(async () => (await t.api('GET', '/v1/sessions/subs-persistent')).status === 404, 5000, 'session expired')
    assert.equal((await ofSession('subs-persistent')).length, 0)
  })

  it('makes none for a superuser, whose topics are the broker’s', async () => {
    const device = await t.createDevice()
    const admin = await t.connect({ clientId: 'subs-admin', username: 'admin', password: 'public' })
    await admin.subscribeAsync([`${device.id}/v1/devices/me/attributes`, '+/v1/devices/me/#'])
    assert.equal((await ofSession('subs-admin')).length, 0)
  })

  it('refuses bad queries', async () => {
    assert.equal((await t.api('GET', '/v1/subscriptions?cursor=not-ours!')).status, 400)
    assert.equal((await t.api('GET', '/v1/subscriptions?limit=0')).status, 400)
    assert.equal((await t.api('GET', '/v1/subscriptions?colour=red')).status, 400)
    assert.equal((await t.api('GET', '/v1/subscriptions/no-such-id')).status, 404)
  })

  it('pages by cursor', async () => {
    const device = await t.createDevice()
    const client = await t.connect({ clientId: 'subs-paged', username: device.id, password: device.token })
    await client.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/telemetry', 'v1/devices/me/raw'])
    const first = await t.api<{ data: ApiSubscription[]; next: string | null }>('GET', `/v1/subscriptions?deviceId=${device.id}&limit=2`)
    assert.equal(first.body.data.length, 2)
    assert.ok(first.body.next)
    const second = await t.api<{ data: ApiSubscription[]; next: string | null }>('GET', `/v1/subscriptions?deviceId=${device.id}&limit=2&cursor=${first.body.next}`)
    assert.equal(second.body.data.length, 1)
    assert.equal(second.body.next, null)
    assert.equal(new Set([...first.body.data, ...second.body.data].map((e) => e.id)).size, 3)
  })
})

describe('subscription entities across a restart', () => {
  it('keeps a persistent session’s entities and ends a clean session’s', async () => {
    const dataDir = tempDir()
    let t = await startTestHub({}, dataDir)
    const device = await t.createDevice()
    const persistent = await t.connect({ clientId: 'restart-p', clean: false, username: device.id, password: device.token })
    const clean = await t.connect({ clientId: 'restart-c', username: device.id, password: device.token })
    await persistent.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await clean.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    const before = (await t.api<{ data: ApiSubscription[] }>('GET', `/v1/subscriptions?deviceId=${device.id}`)).body.data
    assert.equal(before.length, 2)
    await t.hub.stop()

    t = await startTestHub({}, dataDir)
    try {
      const afterRestart = (await t.api<{ data: ApiSubscription[] }>('GET', `/v1/subscriptions?deviceId=${device.id}`)).body.data
      assert.deepEqual(afterRestart, before.filter((e) => e.sessionId === 'restart-p'))
    } finally {
      await t.stop()
    }
  })
})

describe('a store written before namespaces and subscription entities (schema version 1)', () => {
  it('resumes its persistent sessions mounted, with their subscription entities, and pushes to them', async () => {
    const dataDir = tempDir()
    let t = await startTestHub({}, dataDir)
    const d = await t.createDevice()
    const options = { clientId: 'v1-session', clean: false, username: d.id, password: d.token }
    const before = await t.connect(options)
    await before.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await before.endAsync()
    await t.hub.stop()
    // turn the file into what the version 1 hub wrote: unmounted topics, no mountpoint, no entities
    const db = new Database(join(dataDir, 'iothub.db'))
    rewriteAsVersion3(db)
    db.exec('DROP TABLE subscriptions; DROP TABLE device_properties')
    db.prepare("UPDATE topics SET topic = substr(topic, length(?) + 2) WHERE session_id = 'v1-session'").run(d.id)
    db.exec("UPDATE sessions SET doc = json_remove(doc, '$.mountpoint')")
    db.pragma('user_version = 1')
    db.close()

    t = await startTestHub({}, dataDir)
    try {
      const [entity] = (await t.api<{ data: ApiSubscription[] }>('GET', '/v1/subscriptions?sessionId=v1-session')).body.data
      assert.equal(entity?.brokerTopic, `${d.id}/v1/devices/me/attributes`, 'the entity its subscription calls for was made')
      const back = mqtt.connect(t.mqttUrl, { ...options, reconnectPeriod: 0, protocolVersion: 4 })
      const received: string[] = []
      back.on('message', (topic, payload) => received.push(`${topic} ${payload.toString()}`))
      const connack = await new Promise<IConnackPacket>((resolve) => back.once('connect', resolve))
      assert.equal(connack.sessionPresent, true)
      const pushed = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${d.id}/attributes`, { upgraded: true })
      assert.deepEqual(pushed.body.pushedTo, ['v1-session'])
      await eventually(() => received.length === 1, 3000, 'push after the upgrade')
      assert.deepEqual(received, ['v1/devices/me/attributes {"upgraded":true}'])
      await back.endAsync()
    } finally {
      await t.stop()
    }
  })
})

describe('SUBSCRIBE and UNSUBSCRIBE of one topic in one TCP read (clean session)', () => {
  it('ends with the registry, the subscription entities and Aedes agreeing, in either order', async () => {
    const t = await startTestHub()
    try {
      const d = await t.createDevice()
      const port = t.hub.address.mqtt!.port
      const { client } = await RawMqttClient.connect(port, { clientId: 'one-read', username: d.id, password: d.token })
      const topic = 'v1/devices/me/attributes'
      const aedesHolds = () => {
        const live = (t.hub.broker!.aedes as unknown as { clients: Record<string, { subscriptions: Record<string, unknown> }> }).clients['one-read']
        return live?.subscriptions[`${d.id}/${topic}`] !== undefined
      }
      const registryHolds = async () => {
        const session = await t.api<{ topics: { topic: string }[] }>('GET', '/v1/sessions/one-read')
        const entities = await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?sessionId=one-read')
        assert.equal(entities.body.data.length, session.body.topics.length, 'an entity per change-topic subscription')
        return session.body.topics.some((s) => s.topic === topic)
      }
      // SUBSCRIBE then UNSUBSCRIBE: Aedes may do the UNSUBSCRIBE first, as a no-op, then add the topic
      client.socket.write(Buffer.concat([subscribePacket(1, [{ topic, qos: 1 }]), unsubscribePacket(2, [topic])]))
      await new Promise((r) => setTimeout(r, 300))
      assert.equal(await registryHolds(), aedesHolds(), 'after SUBSCRIBE + UNSUBSCRIBE')
      // UNSUBSCRIBE then SUBSCRIBE
      client.socket.write(Buffer.concat([unsubscribePacket(3, [topic]), subscribePacket(4, [{ topic, qos: 1 }])]))
      await new Promise((r) => setTimeout(r, 300))
      // (Aedes can end without the topic here: its UNSUBSCRIBE completes after the SUBSCRIBE
      // found the topic still held. What matters is that the hub records what Aedes does.)
      assert.equal(await registryHolds(), aedesHolds(), 'after UNSUBSCRIBE + SUBSCRIBE')
      const pushed = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${d.id}/attributes`, { x: 1 })
      assert.deepEqual(pushed.body.pushedTo, aedesHolds() ? ['one-read'] : [], 'pushedTo names the session exactly when it receives the push')
      client.socket.destroy()
    } finally {
      await t.stop()
    }
  })
})
