/**
 * A persistent session offline past IOTHUB_SESSION_EXPIRY ends with its topics and the
 * messages queued for it; one whose client returns in time does not.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import mqtt, { type IConnackPacket } from 'mqtt'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

describe('session expiry', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub({ sessionExpiry: 1, expirySweepInterval: 1 })
  })
  after(async () => {
    await t.stop()
  })

  it('ends an offline persistent session after its expiry interval, with its topics and queued messages', async () => {
    const device = await t.createDevice()
    const options = { clientId: 'expiring', clean: false, username: device.id, password: device.token }
    const client = await t.connect(options)
    await client.subscribeAsync('expiry/commands', { qos: 1 })
    await client.endAsync()
    const publisher = await t.connect({ clientId: 'expiry-publisher', username: device.id, password: device.token })
    await publisher.publishAsync('expiry/commands', 'too late', { qos: 1 })

    const offline = await t.api<{ connected: boolean; expiryInterval: number }>('GET', '/v1/sessions/expiring')
    assert.equal(offline.body.connected, false)
    assert.equal(offline.body.expiryInterval, 1)
    await eventually(async () => (await t.api('GET', '/v1/sessions/expiring')).status === 404, 5000, 'session expired')
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/api/v4/subscriptions?clientid=expiring')).body.data.length, 0)

    // the client returns: a new session, nothing left of the old one — no subscription, no message
    const returned = mqtt.connect(t.mqttUrl, { ...options, reconnectPeriod: 0, protocolVersion: 4 })
    const received: string[] = []
    returned.on('message', (_topic, payload) => received.push(payload.toString()))
    const connack = await new Promise<IConnackPacket>((resolve) => returned.once('connect', resolve))
    assert.equal(connack.sessionPresent, false)
    await publisher.publishAsync('expiry/commands', 'after expiry', { qos: 1 })
    await new Promise((r) => setTimeout(r, 200))
    assert.deepEqual(received, [], 'neither the queued message nor the new one reached the returned client')
    await returned.endAsync()
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /iothub_lifecycle_events_total\{kind="sessionExpired",outcome="applied"\} [1-9]/)
  })
})
