/**
 * A session entity's four steps with real mqtt.js clients against a real hub: connect creates the
 * session entity, subscribe and unsubscribe change its topics, disconnect ends a clean one and
 * leaves a persistent one offline — seen through the native API and the EMQX v4 one.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

interface ApiSession {
  id: string
  clientId: string
  deviceId: string
  protocol: string
  connected: boolean
  cleanStart: boolean
  topics: { topic: string; brokerTopic: string; qos: number }[]
  version: number
  peerPort: number
  sockPort: number
  disconnectReason: string | null
  incarnation: string
}

describe('session entity lifecycle', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(async () => {
    await t.stop()
  })

  it('creates, updates and deletes a clean session entity through its four steps', async () => {
    const device = await t.createDevice({ name: 'thermostat' })
    const client = await t.connect({ clientId: 'lifecycle-clean', username: device.id, password: device.token, keepalive: 30 })

    // 1. connected → session created, before CONNACK (no waiting needed)
    const created = await t.api<ApiSession>('GET', '/v1/sessions/lifecycle-clean')
    assert.equal(created.status, 200)
    assert.equal(created.body.protocol, 'mqtt')
    assert.equal(created.body.deviceId, device.id)
    assert.equal(created.body.connected, true)
    assert.equal(created.body.cleanStart, true)
    assert.equal(created.body.peerPort, (client.stream as import('node:net').Socket).localPort)
    assert.deepEqual(created.body.topics, [])

    // 2. subscribe → topics added with their QoS, durable before the SUBACK
    await client.subscribeAsync({ 'v1/devices/me/attributes': { qos: 1 }, 'v1/devices/me/telemetry': { qos: 0 } })
    const subscribed = await t.api<ApiSession>('GET', '/v1/sessions/lifecycle-clean')
    assert.deepEqual(
      subscribed.body.topics.sort((a, b) => a.topic.localeCompare(b.topic)),
      [
        { topic: 'v1/devices/me/attributes', brokerTopic: `${device.id}/v1/devices/me/attributes`, qos: 1 },
        { topic: 'v1/devices/me/telemetry', brokerTopic: `${device.id}/v1/devices/me/telemetry`, qos: 0 }
      ]
    )
    assert.ok(subscribed.body.version > created.body.version)

    const compat = await t.api<{ data: { clientid: string; topic: string; qos: number }[] }>('GET', '/api/v4/subscriptions?clientid=lifecycle-clean')
    assert.equal(compat.body.data.length, 2)

    // 3. unsubscribe → removed
    await client.unsubscribeAsync('v1/devices/me/telemetry')
    const unsubscribed = await eventually(async () => {
      const r = await t.api<ApiSession>('GET', '/v1/sessions/lifecycle-clean')
      return r.body.topics.length === 1 ? r.body : undefined
    })
    assert.deepEqual(unsubscribed.topics, [{ topic: 'v1/devices/me/attributes', brokerTopic: `${device.id}/v1/devices/me/attributes`, qos: 1 }])

    // 4. disconnect → a clean session's entity is deleted
    await client.endAsync()
    await eventually(async () => (await t.api('GET', '/v1/sessions/lifecycle-clean')).status === 404, 5000, 'session deleted')
    const clients = await t.api<{ data: unknown[] }>('GET', '/api/v4/clients?clientid=lifecycle-clean')
    assert.equal(clients.body.data.length, 0)
  })

  it('keeps a persistent session offline with its topics, and resumes it on reconnect', async () => {
    const device = await t.createDevice()
    const options = { clientId: 'lifecycle-persistent', username: device.id, password: device.token, clean: false }
    const first = await t.connect(options)
    await first.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    await first.endAsync()

    const offline = await eventually(async () => {
      const r = await t.api<ApiSession>('GET', '/v1/sessions/lifecycle-persistent')
      return r.body.connected === false ? r.body : undefined
    })
    assert.equal(offline.disconnectReason, 'client_disconnect')
    assert.deepEqual(offline.topics, [{ topic: 'v1/devices/me/commands', brokerTopic: `${device.id}/v1/devices/me/commands`, qos: 1 }])

    const v4 = await t.api<{ data: { connected: boolean; clean_start: boolean; disconnected_at?: string; expiry_interval: number }[] }>(
      'GET',
      '/api/v4/clients?clientid=lifecycle-persistent'
    )
    assert.equal(v4.body.data[0]?.connected, false)
    assert.equal(v4.body.data[0]?.clean_start, false)
    assert.equal(v4.body.data[0]?.expiry_interval, 7200)
    assert.match(v4.body.data[0]?.disconnected_at ?? '', /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)

    const second = await t.connect(options)
    const resumed = await t.api<ApiSession>('GET', '/v1/sessions/lifecycle-persistent')
    assert.equal(resumed.body.connected, true)
    assert.notEqual(resumed.body.incarnation, offline.incarnation)
    assert.deepEqual(resumed.body.topics, [{ topic: 'v1/devices/me/commands', brokerTopic: `${device.id}/v1/devices/me/commands`, qos: 1 }])

    // the resumed subscription delivers without a new SUBSCRIBE
    const received = new Promise<string>((resolve) => second.once('message', (_topic, payload) => resolve(payload.toString())))
    const publisher = await t.connect({ clientId: 'lifecycle-publisher', username: device.id, password: device.token })
    await publisher.publishAsync('v1/devices/me/commands', 'reboot', { qos: 1 })
    assert.equal(await received, 'reboot')
  })

  it('stores only the granted topics of a persistent SUBSCRIBE, and restores only those', async () => {
    const device = await t.createDevice()
    const options = { clientId: 'lifecycle-refused-topic', username: device.id, password: device.token, clean: false }
    const client = await t.connect(options)
    const tooLong = `v1/${'x'.repeat(2000)}`
    // mqtt.js rejects a SUBACK with a failure code; the SUBACK itself rides on the error
    const suback = await client.subscribeAsync({ 'v1/devices/me/raw': { qos: 1 }, [tooLong]: { qos: 1 } }).then(
      () => assert.fail('the too-long topic was granted'),
      (error: { packet: { granted: number[] } }) => error.packet
    )
    assert.deepEqual(suback.granted, [1, 128])
    await client.endAsync()
    const again = await t.connect(options)
    const session = await t.api<ApiSession>('GET', '/v1/sessions/lifecycle-refused-topic')
    assert.deepEqual(session.body.topics, [{ topic: 'v1/devices/me/raw', brokerTopic: `${device.id}/v1/devices/me/raw`, qos: 1 }])
    await again.endAsync()
  })

  it('refuses a wrong token with CONNACK "not authorized" and counts it', async () => {
    const device = await t.createDevice()
    await assert.rejects(t.connect({ clientId: 'intruder', username: device.id, password: 'wrong' }), /Not authorized/i)
    await assert.rejects(t.connect({ clientId: 'nobody', username: 'no-such-device', password: 'x' }), /Not authorized/i)
    await assert.rejects(t.connect({ clientId: 'anonymous' }), /Not authorized/i)
    assert.equal((await t.api('GET', '/v1/sessions/intruder')).status, 404)
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    const refused = /iothub_rejected_inputs_total\{reason="not_authorized"\} (\d+)/.exec(metrics)
    assert.ok(refused && Number(refused[1]) >= 3, 'three refusals counted')
  })
})
