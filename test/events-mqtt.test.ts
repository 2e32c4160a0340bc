/**
 * MQTT presence topics, embedded mode: a superuser subscribed to `$iothub/events/#` gets a
 * device's connect, subscribe and disconnect as events, in order, QoS 1, the same events the
 * hub's stream has; a device cannot subscribe to them (SUBACK 0x80), and no client — a superuser
 * neither — can publish there.
 *
 * Real parts: a hub on a SQLite file, real mqtt.js clients, the stream read over HTTP.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, superuserLogin, type TestHub } from './helpers/hub.js'
import { metricValue, rejectedCount } from './helpers/metrics.js'
import { SseStream } from './helpers/sse.js'

interface Received {
  topic: string
  qos: number
  event: { seq: number; type: string; clientId: string; deviceId: string }
}

function collect(client: MqttClient): Received[] {
  const received: Received[] = []
  client.on('message', (topic, payload, packet) => received.push({ topic, qos: packet.qos, event: JSON.parse(payload.toString('utf8')) as Received['event'] }))
  return received
}

describe('MQTT presence topics ($iothub/events/…)', () => {
  let hub: TestHub
  before(async () => {
    hub = await startTestHub({ eventsHeartbeat: 1 })
  })
  after(() => hub.stop())

  it('while no session holds a $iothub/ filter, no event is made or published', async () => {
    const published = () => metricValue(hub.api, 'iothub_events_mqtt_published_total{outcome="published"}')
    const failed = () => metricValue(hub.api, 'iothub_events_mqtt_published_total{outcome="failed"}')
    const device = await hub.createDevice()
    const client = await hub.connect({ clientId: device.id, username: device.id, password: device.token })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    // a superuser watching everything else: `#` cannot match a `$` topic (MQTT 3.1.1 4.7.2-1)
    const other = await hub.connect({ clientId: 'presence-not-watching', ...superuserLogin() })
    await other.subscribeAsync('#', { qos: 1 })
    await client.endAsync()
    await other.endAsync()
    // the device's end is in the log once its session is gone from the API
    await eventually(async () => (await hub.api('GET', `/v1/sessions/${device.id}`)).status === 404)
    assert.equal(await published(), 0)
    assert.equal(await failed(), 0)
  })

  it('a device cannot subscribe to them (SUBACK 0x80)', async () => {
    const device = await hub.createDevice()
    const client = await hub.connect({ clientId: device.id, username: device.id, password: device.token })
    const before = await rejectedCount(hub.api, 'outside_namespace')
    // mqtt.js rejects a SUBACK holding a failure: the packet it carries says what was granted
    const refused = await client.subscribeAsync(['$iothub/events/#', '$iothub/events/session.connected/+', 'v1/devices/me/attributes'], { qos: 1 }).then(
      () => assert.fail('a device subscribed to the events'),
      (error: { packet?: { granted?: number[] } }) => error.packet?.granted
    )
    assert.deepEqual(refused, [0x80, 0x80, 1])
    assert.equal(await rejectedCount(hub.api, 'outside_namespace'), before + 2)
    await client.endAsync()
  })

  it('a superuser gets the events of a device connecting, subscribing and leaving, in order, QoS 1; nobody can forge one', async () => {
    const watcher = await hub.connect({ clientId: 'presence-watcher', ...superuserLogin() })
    const received = collect(watcher)
    const granted = await watcher.subscribeAsync('$iothub/events/#', { qos: 1 })
    assert.equal(granted[0]!.qos, 1)

    const device = await hub.createDevice({ owner: 'carol' })
    const { stream } = await SseStream.open(`${hub.httpUrl}/v1/events?deviceId=${device.id}&types=session.connected,session.subscribed,session.unsubscribed,session.disconnected,session.ended`, {
      authorization: BASIC_ADMIN
    })
    for (let round = 0; round < 3; round++) {
      const client = await hub.connect({ clientId: device.id, username: device.id, password: device.token, clean: round !== 1 })
      await client.subscribeAsync(['v1/devices/me/attributes', `r${round}`], { qos: 1 })
      await client.unsubscribeAsync(`r${round}`)
      await client.endAsync()
      await hub.hub.registry.settled()
    }
    const mine = () => received.filter((r) => r.event.clientId === device.id)
    await stream!.until((s) => s.events<{ type: string }>().filter((e) => e.type === 'session.ended').length === 2, 20_000, 'two clean sessions ended')
    const expected = stream!.events<Received['event']>()
    stream!.close()
    await eventually(() => mine().length >= expected.length, 20_000, 'the events on MQTT')
    assert.deepEqual(
      mine().map((r) => r.event.seq),
      expected.map((e) => e.seq),
      'the same events as the stream, in order'
    )
    assert.deepEqual(
      mine().map((r) => r.event.type),
      [
        ...['session.connected', 'session.subscribed', 'session.unsubscribed', 'session.ended'],
        ...['session.connected', 'session.subscribed', 'session.unsubscribed', 'session.disconnected'],
        ...['session.connected', 'session.subscribed', 'session.unsubscribed', 'session.ended']
      ]
    )
    for (const r of mine()) {
      assert.equal(r.topic, `$iothub/events/${r.event.type}/${device.id}`)
      assert.equal(r.qos, 1)
    }

    // a forged event: the superuser's publish there is refused (its connection closed), nobody gets it
    const forger = await hub.connect({ clientId: 'forger', ...superuserLogin() })
    const closed = new Promise<void>((resolve) => forger.once('close', () => resolve()))
    forger.publish('$iothub/events/session.connected/forged', JSON.stringify({ seq: 0, type: 'session.connected', clientId: 'forged' }), { qos: 1 })
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the forged publish was taken')), 20_000).unref())])
    const probe = await hub.createDevice()
    const client = await hub.connect({ clientId: probe.id, username: probe.id, password: probe.token })
    await client.endAsync()
    await eventually(() => received.some((r) => r.event.clientId === probe.id && r.event.type === 'session.ended'), 20_000, 'a later event')
    assert.ok(!received.some((r) => r.event.clientId === 'forged'), 'the forged event reached nobody')
    await watcher.endAsync()
  })
})
