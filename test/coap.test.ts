/**
 * CoAP devices on the embedded hub, with the `coap` package as the client (real UDP datagrams):
 * EMQX 5's connection mode (connect, heartbeat, publish, observe, cancel, close, timeout),
 * pushes to CoAP observers, MQTT and CoAP devices on one broker, and bad input.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createSocket } from 'node:dgram'
import { after, before, describe, it } from 'node:test'
import * as coap from 'coap'
import { generate as generatePacket, parse as parsePacket, type NamedOption } from 'coap-packet'
import { block1, block2, coapCall, coapObserve, keptAlive, observe, option, RawCoap, readBlock1, readBlock2, requestTag, uint, uintBytes, uri } from './helpers/coap.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { metricValue } from './helpers/metrics.js'

/** Connects device `id` over CoAP; resolves with the connection's token. */
async function connect(port: number, id: string, password: string): Promise<string> {
  const answer = await coapCall(port, 'POST', '/mqtt/connection', `clientid=${id}&username=${id}&password=${password}`)
  assert.equal(answer.code, '2.01', answer.payload)
  return answer.payload
}

describe('CoAP gateway (EMQX 5 connection mode), with a 20 ms ACK_TIMEOUT and a 1 s heartbeat', () => {
  // short timers, for what they make quick to see: timeouts, EXCHANGE_LIFETIME, answers sent
  // separately. Exchanges a loaded machine could reorder under them are in the 2 s describe below.
  let t: TestHub
  let port: number
  before(async () => {
    t = await startTestHub({ coapHeartbeat: 1, coapAckTimeout: 20 })
    port = t.hub.address.coap!.port
  })
  after(() => t.stop())

  it('connect, heartbeat and close make and end a coap session entity', async () => {
    const d = await t.createDevice({ id: 'coap-1' })
    assert.equal((await coapCall(port, 'POST', '/mqtt/connection', 'clientid=coap-1&password=wrong')).code, '4.01')
    const token = await connect(port, 'coap-1', d.token)
    const session = (await t.api<{ protocol: string; connected: boolean; deviceId: string; mountpoint: string }>('GET', '/v1/sessions/coap-1')).body
    assert.deepEqual([session.protocol, session.connected, session.deviceId, session.mountpoint], ['coap', true, 'coap-1', 'coap-1/'])
    const listed = (await t.api<{ data: { clientid: string; proto_name: string }[] }>('GET', '/api/v4/clients?clientid=coap-1')).body.data
    assert.deepEqual(listed.map((c) => c.proto_name), ['CoAP'])
    assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-1&token=${token}`)).code, '2.04')
    assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', 'clientid=coap-1&token=not-it')).code, '4.01')
    assert.equal((await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-1&token=${token}`)).code, '2.02')
    assert.equal((await t.api('GET', '/v1/sessions/coap-1')).status, 404)
  })

  it("EMQX's kick, DELETE /api/v4/clients/{id}, ends a CoAP connection too: its token stops working", async () => {
    const d = await t.createDevice({ id: 'coap-kicked' })
    const token = await connect(port, 'coap-kicked', d.token)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    const kicked = await t.api<{ code: number }>('DELETE', '/api/v4/clients/coap-kicked')
    assert.deepEqual([kicked.status, kicked.body.code], [200, 0])
    assert.equal((await t.api('GET', '/v1/sessions/coap-kicked')).status, 404)
    assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-kicked&token=${token}`)).code, '4.01')
    const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
    const kicks = (m: string) => Number(/^iothub_disconnects_total\{protocol="coap",reason="kicked"\} (\d+)/m.exec(m)?.[1] ?? 0)
    assert.equal(kicks(after) - kicks(before), 1, 'counted as a kick of a coap connection')
  })

  it('a silent connection ends with keepalive_timeout after 1.5 heartbeats', async () => {
    const d = await t.createDevice({ id: 'coap-quiet' })
    await connect(port, 'coap-quiet', d.token)
    assert.equal((await t.api('GET', '/v1/sessions/coap-quiet')).status, 200)
    await eventually(async () => (await t.api('GET', '/v1/sessions/coap-quiet')).status === 404, 4000, 'session ended by the heartbeat timeout')
  })

  it('observe makes a subscription entity; a push arrives as a notification; cancel deletes it', async (ctx) => {
    const { token } = await keptAlive(ctx, t, port, 'coap-obs')
    const observation = await coapObserve(ctx, port, '/ps/v1/devices/me/attributes', `clientid=coap-obs&token=${token}&qos=1`)
    assert.equal(observation.code, '2.05')
    const entities = (await t.api<{ data: { sessionId: string; properties: string[] }[] }>('GET', '/v1/subscriptions?deviceId=coap-obs')).body.data
    assert.deepEqual(entities.map((e) => [e.sessionId, e.properties]), [['coap-obs', ['attributes']]])
    const pushed = await t.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/coap-obs/attributes', { colour: 'blue' })
    assert.deepEqual(pushed.body.pushedTo, ['coap-obs'])
    await eventually(() => observation.notifications.length === 1, 3000, 'notification')
    assert.deepEqual(JSON.parse(observation.notifications[0]!), { colour: 'blue' })
    // cancel: GET with Observe 1 (a raw request: node-coap's client keeps an observe's socket open)
    const cancelled = await new RawCoap(ctx, port).get(['ps', 'v1', 'devices', 'me', 'attributes'], ['clientid=coap-obs', `token=${token}`], [observe(1)])
    assert.equal(cancelled.code, '2.05')
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-obs')).body.data.length, 0)
    assert.deepEqual((await t.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/coap-obs/attributes', { colour: 'red' })).body.pushedTo, [])
    observation.stream.close()
  })

  it('a CoAP publish reaches MQTT subscribers and, on a property topic, the device entity', async () => {
    const d = await t.createDevice({ id: 'coap-pub' })
    const token = await connect(port, 'coap-pub', d.token)
    const watcher = await t.connect({ clientId: 'watcher', username: 'admin', password: 'public' })
    const seen: string[] = []
    watcher.on('message', (topic, payload) => seen.push(`${topic} ${payload.toString()}`))
    await watcher.subscribeAsync('coap-pub/#', { qos: 1 })
    assert.equal((await coapCall(port, 'POST', '/ps/v1/devices/me/attributes', `clientid=coap-pub&token=${token}`, '{"fw":"3"}')).code, '2.04')
    assert.equal((await coapCall(port, 'POST', '/ps/sensors/temp', `clientid=coap-pub&token=${token}`, '21.5')).code, '2.04')
    await eventually(() => seen.length === 2, 3000, 'both publishes routed')
    assert.deepEqual(seen.sort(), ['coap-pub/sensors/temp 21.5', 'coap-pub/v1/devices/me/attributes {"fw":"3"}'])
    const entity = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', '/apis/core/v1/entities/coap-pub?type=device')).body
    assert.equal(entity.properties.attributes.fw, '3')
    // a payload the topic does not take: 4.00, stored nothing
    assert.equal((await coapCall(port, 'POST', '/ps/v1/devices/me/attributes', `clientid=coap-pub&token=${token}`, 'not json')).code, '4.00')
    await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-pub&token=${token}`)
  })

  it('an MQTT device and a CoAP device subscribed to the same change each get only their own push', async (ctx) => {
    const mqttDevice = await t.createDevice({ id: 'mix-mqtt' })
    const coapDevice = await t.createDevice({ id: 'mix-coap' })
    const client = await t.connect({ clientId: 'mix-mqtt', username: mqttDevice.id, password: mqttDevice.token })
    const got: string[] = []
    client.on('message', (_topic, payload) => got.push(payload.toString()))
    await client.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    const token = await connect(port, 'mix-coap', coapDevice.token)
    const observation = await coapObserve(ctx, port, '/ps/v1/devices/me/commands', `clientid=mix-coap&token=${token}`)
    const toCoap = await t.api<{ pushedTo: string[] }>('POST', '/v1/devices/mix-coap/commands', { name: 'reboot' })
    const toMqtt = await t.api<{ pushedTo: string[] }>('POST', '/v1/devices/mix-mqtt/commands', { name: 'blink' })
    assert.deepEqual([toCoap.body.pushedTo, toMqtt.body.pushedTo], [['mix-coap'], ['mix-mqtt']])
    await eventually(() => got.length === 1 && observation.notifications.length === 1, 3000, 'both pushes')
    assert.equal((JSON.parse(got[0]!) as { name: string }).name, 'blink')
    assert.equal((JSON.parse(observation.notifications[0]!) as { name: string }).name, 'reboot')
    observation.stream.close()
    await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=mix-coap&token=${token}`)
  })

  it('an observer that stops answering is dropped with its subscription entity', async (ctx) => {
    const { token } = await keptAlive(ctx, t, port, 'coap-gone')
    // observe from a socket that then closes: the confirmable notification is never acknowledged
    const socket = createSocket('udp4')
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()))
    const agent = new coap.Agent({ socket })
    await new Promise<void>((resolve, reject) => {
      const req = coap.request({ hostname: '127.0.0.1', port, method: 'GET', pathname: '/ps/v1/devices/me/attributes', query: `clientid=coap-gone&token=${token}`, observe: 0, agent })
      req.on('response', () => resolve())
      req.on('error', reject)
      req.end()
    })
    socket.close()
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-gone')).body.data.length, 1)
    await t.api('PATCH', '/v1/devices/coap-gone/attributes', { x: 1 })
    await eventually(async () => (await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-gone')).body.data.length === 0, 8000, 'silent observer dropped')
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/coap-gone')).body.connected, true, 'the connection itself stays')
  })

  it('an MQTT connection with the clientId of a CoAP device takes its session over', async (ctx) => {
    const { d, token } = await keptAlive(ctx, t, port, 'coap-taken')
    const observation = await coapObserve(ctx, port, '/ps/v1/devices/me/attributes', `clientid=coap-taken&token=${token}`)
    try {
      assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-taken')).body.data.length, 1)
      const before = (await t.api<string>('GET', '/metrics', undefined, null)).body

      const client = await t.connect({ clientId: 'coap-taken', username: d.id, password: d.token })
      const session = (await t.api<{ protocol: string; connected: boolean; topics: unknown[] }>('GET', '/v1/sessions/coap-taken')).body
      assert.deepEqual([session.protocol, session.connected, session.topics], ['mqtt', true, []])
      assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-taken')).body.data.length, 0)
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(disconnects(after, 'coap', 'taken_over') - disconnects(before, 'coap', 'taken_over'), 1)

      // the gateway forgot the CoAP connection: its token no longer works, its observation stopped
      assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-taken&token=${token}`)).code, '4.01')
      const watcher = await t.connect({ clientId: 'taken-watcher', username: 'admin', password: 'public' })
      await watcher.publishAsync('coap-taken/v1/devices/me/attributes', '{"late":1}', { qos: 1 })
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.deepEqual(observation.notifications, [])
      // and its heartbeat timeout, long past, did not end the MQTT session
      await new Promise((resolve) => setTimeout(resolve, 1600))
      assert.equal((await t.api<{ protocol: string }>('GET', '/v1/sessions/coap-taken')).body.protocol, 'mqtt')
      assert.equal(client.connected, true)
    } finally {
      observation.stream.close()
    }
  })

  it('a CoAP connect with the clientId of an MQTT connection takes its session over and closes it', async () => {
    const d = await t.createDevice({ id: 'mqtt-taken' })
    const client = await t.connect({ clientId: 'mqtt-taken', username: d.id, password: d.token })
    await client.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=mqtt-taken')).body.data.length, 1)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body

    const token = await connect(port, 'mqtt-taken', d.token)
    await eventually(() => !client.connected, 3000, 'the taken-over MQTT connection closed')
    const session = (await t.api<{ protocol: string; connected: boolean; topics: unknown[] }>('GET', '/v1/sessions/mqtt-taken')).body
    assert.deepEqual([session.protocol, session.connected, session.topics], ['coap', true, []])
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=mqtt-taken')).body.data.length, 0)
    const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.equal(disconnects(after, 'mqtt', 'taken_over') - disconnects(before, 'mqtt', 'taken_over'), 1)
    assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=mqtt-taken&token=${token}`)).code, '2.04')
    await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=mqtt-taken&token=${token}`)
  })

  it('bad requests get CoAP error codes, are counted, and store nothing', async () => {
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.equal((await coapCall(port, 'GET', '/nowhere', '')).code, '4.04')
    assert.equal((await coapCall(port, 'POST', '/mqtt/connection', 'username=x&password=y')).code, '4.00')
    assert.equal((await coapCall(port, 'POST', '/ps/t', 'clientid=nobody&token=nothing', 'x')).code, '4.01')
    assert.equal((await coapCall(port, 'DELETE', '/ps/t', 'clientid=nobody&token=nothing')).code, '4.05')
    const d = await t.createDevice({ id: 'coap-bad' })
    const token = await connect(port, 'coap-bad', d.token)
    assert.equal((await coapCall(port, 'POST', `/ps/$SYS/x`, `clientid=coap-bad&token=${token}`, 'x')).code, '4.03')
    assert.equal((await coapCall(port, 'POST', '/ps/a/+', `clientid=coap-bad&token=${token}`, 'x')).code, '4.00')
    // a datagram that is not CoAP at all
    const socket = createSocket('udp4')
    await new Promise<void>((resolve) => socket.send(Buffer.from([0xff, 0x00, 0x01]), port, '127.0.0.1', () => resolve()))
    socket.close()
    await eventually(async () => {
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      return count(after, 'malformed_packet') - count(before, 'malformed_packet') === 1
    }, 2000, 'the malformed datagram counted')
    const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.equal(count(after, 'bad_coap_request') - count(before, 'bad_coap_request'), 2)
    assert.equal(count(after, 'not_authorized') - count(before, 'not_authorized'), 1)
    assert.equal((await t.api('GET', '/v1/sessions/nobody')).status, 404)
    await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-bad&token=${token}`)
  })

  it('a copy of a request answered separately (after an empty ACK) gets the empty ACK again and is not handled again', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-slow' })
    // this device's connect takes 200 ms to store: past the piggyback delay (10 ms for the 20 ms ACK_TIMEOUT here)
    const registry = t.hub.registry
    const apply = registry.apply.bind(registry)
    registry.apply = async (event) => {
      if (event.kind === 'connected' && event.clientId === 'coap-slow') await new Promise((resolve) => setTimeout(resolve, 200))
      return apply(event)
    }
    const device = new RawCoap(ctx, port)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const connectRequest = {
        code: '0.02',
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: uri(['mqtt', 'connection'], ['clientid=coap-slow', `password=${d.token}`])
      }
      await device.send(connectRequest, false)
      await eventually(() => device.emptyAcks.length === 1, 1000, "node-coap's empty ACK")
      // the client did not get that ACK and sends the request again: the ACK again, nothing more
      await device.send(connectRequest, false)
      await eventually(() => device.emptyAcks.length === 2, 1000, 'the empty ACK again')
      const answer = await eventually(() => device.received[0], 2000, 'the separate answer')
      assert.deepEqual([answer.code, answer.confirmable], ['2.01', true])
      // a copy after the answer: still only the empty ACK (the answer is node-coap's to repeat until acknowledged)
      await device.send(connectRequest, false)
      await eventually(() => device.emptyAcks.length === 3, 1000, 'the empty ACK to the late copy')
      await new Promise((resolve) => setTimeout(resolve, 400))
      assert.deepEqual(device.emptyAcks, [connectRequest.messageId, connectRequest.messageId, connectRequest.messageId])
      // one answer — node-coap may send it again (it is confirmable, and ACK_TIMEOUT is 20 ms here),
      // but a retransmission keeps its message id: a second handling would bring another id and token
      assert.deepEqual([...new Set(device.received.map((p) => `${p.messageId}:${p.payload.toString()}`))], [`${answer.messageId}:${answer.payload.toString()}`], 'one answer')
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(events(after, 'connected', 'applied') - events(before, 'connected', 'applied'), 1, 'one connect stored')
      const token = answer.payload.toString()
      assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-slow&token=${token}`)).code, '2.04')
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-slow&token=${token}`)
    } finally {
      registry.apply = apply
      device.close()
    }
  })

  it('RFC 7959 Block1: half-sent bodies are bounded (a connection\'s fifth makes its first forgotten) and forgotten after EXCHANGE_LIFETIME', async (ctx) => {
    const { token } = await keptAlive(ctx, t, port, 'coap-b1-bound')
    const device = new RawCoap(ctx, port)
    try {
      const request = uri(['ps', 'blobs', 'bound'], ['clientid=coap-b1-bound', `token=${token}`])
      const block = (tag: Buffer, num: number, more: boolean) => ({
        code: '0.02',
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: [...request, block1(num, more, 0), requestTag(tag)],
        payload: Buffer.alloc(16, num)
      })
      const tags = [1, 2, 3, 4, 5].map(() => randomBytes(4))
      for (const tag of tags) assert.equal((await device.send(block(tag, 0, true))).code, '2.31')
      // four bodies at most per peer: the fifth made the first forgotten
      assert.equal((await device.send(block(tags[0]!, 1, true))).code, '4.08')
      assert.equal((await device.send(block(tags[4]!, 1, true))).code, '2.31')
      // EXCHANGE_LIFETIME is 3 s with this hub's 20 ms ACK_TIMEOUT: a body not continued for longer is gone
      await new Promise((resolve) => setTimeout(resolve, 3300))
      assert.equal((await device.send(block(tags[4]!, 2, false))).code, '4.08')
    } finally {
      device.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-b1-bound&token=${token}`)
    }
  })

})

function count(metrics: string, reason: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`iothub_rejected_inputs_total{reason="${reason}"}`))
  return line ? Number(line.split(' ')[1]) : 0
}

function events(metrics: string, kind: string, outcome: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`iothub_lifecycle_events_total{kind="${kind}",outcome="${outcome}"}`))
  return line ? Number(line.split(' ')[1]) : 0
}

function disconnects(metrics: string, protocol: string, reason: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`iothub_disconnects_total{protocol="${protocol}",reason="${reason}"}`))
  return line ? Number(line.split(' ')[1]) : 0
}

describe('CoAP gateway with the default ACK_TIMEOUT (2 s)', () => {
  // exchanges whose messages a 20 ms timer would let cross under load (answers sent separately,
  // retransmissions interleaved with answers); the heartbeat is the default 30 s
  let t: TestHub
  let port: number
  before(async () => {
    t = await startTestHub({ maxSubscriptionsPerSession: 3 })
    port = t.hub.address.coap!.port
  })
  after(() => t.stop())

  it('garbage datagrams are never answered with more than they brought, nor with error text; counted; a device is served meanwhile', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-amid' })
    const token = await connect(port, 'coap-amid', d.token)
    ctx.after(() => coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-amid&token=${token}`).catch(() => undefined))
    const device = new RawCoap(ctx, port)
    const path = ['ps', 'feed']
    const query = ['clientid=coap-amid', `token=${token}`]
    assert.equal((await device.get(path, query, [observe(0)])).code, '2.05')

    // the hostile sender: a socket of its own that keeps every datagram it is sent
    const hostile = createSocket('udp4')
    ctx.after(() => hostile.close())
    await new Promise<void>((resolve) => hostile.bind(0, '127.0.0.1', () => resolve()))
    const answers: Buffer[] = []
    hostile.on('message', (message) => answers.push(message))
    let pingId = 0x7000
    /**
     * Sends `datagram`, then a CoAP ping, and resolves with what came back before the ping's
     * Reset: the gateway reads one socket's datagrams in order, so any answer to the first has
     * left by then (no timer involved).
     */
    const answersTo = async (datagram: Buffer): Promise<Buffer[]> => {
      const mark = answers.length
      const id = pingId++
      await new Promise<void>((resolve) => hostile.send(datagram, port, '127.0.0.1', () => resolve()))
      await new Promise<void>((resolve) => hostile.send(Buffer.from([0x40, 0x00, id >> 8, id & 0xff]), port, '127.0.0.1', () => resolve()))
      const isPingReset = (b: Buffer) => b.length === 4 && b[0] === 0x70 && b.readUInt16BE(2) === id
      await eventually(() => answers.slice(mark).some(isPingReset), 10_000, `the Reset of ping ${id}`)
      return answers.slice(mark).filter((b) => !isPingReset(b))
    }
    const reset = (messageId: number) => Buffer.from([0x70, 0x00, messageId >> 8, messageId & 0xff])
    const metrics = async () => (await t.api<string>('GET', '/metrics', undefined, null)).body
    const before = await metrics()

    const shapes: { name: string; datagram: Buffer; expect: Buffer[] | 'small' }[] = [
      { name: 'one byte', datagram: Buffer.from([0x40]), expect: [] },
      { name: 'three bytes', datagram: Buffer.from([0xff, 0x00, 0x01]), expect: [] },
      { name: 'version 2', datagram: Buffer.from([0x80, 0x01, 0x12, 0x34, 0xb2, 0x70, 0x73]), expect: [] },
      // Uri-Path of 5 bytes with 2 present: a Confirmable message with a format error gets a Reset
      { name: 'a truncated option (CON)', datagram: Buffer.from([0x40, 0x01, 0x00, 0x21, 0xb5, 0x70, 0x73]), expect: [reset(0x21)] },
      { name: 'a truncated option (NON)', datagram: Buffer.from([0x50, 0x01, 0x00, 0x22, 0xb5, 0x70, 0x73]), expect: [] },
      { name: 'a CON with token length 9', datagram: Buffer.from([0x49, 0x01, 0x00, 0x23, 1, 2, 3, 4, 5, 6, 7, 8, 9]), expect: [reset(0x23)] },
      { name: 'a CON with token length 15', datagram: Buffer.from([0x4f, 0x01, 0x00, 0x24, 1, 2]), expect: [reset(0x24)] },
      { name: 'a token longer than the datagram', datagram: Buffer.from([0x44, 0x01, 0x00, 0x25, 1]), expect: [reset(0x25)] },
      { name: 'an option delta of 15', datagram: Buffer.from([0x40, 0x01, 0x00, 0x26, 0xf1, 0x00]), expect: [reset(0x26)] },
      { name: 'an extended option delta cut off', datagram: Buffer.from([0x40, 0x01, 0x00, 0x27, 0xe0, 0x01]), expect: [reset(0x27)] },
      { name: 'a payload marker and no payload', datagram: Buffer.from([0x40, 0x01, 0x00, 0x28, 0xff]), expect: [reset(0x28)] },
      { name: 'an Empty message with a byte after it', datagram: Buffer.from([0x40, 0x00, 0x00, 0x29, 0x00]), expect: [reset(0x29)] },
      { name: 'a CON of the reserved class 7', datagram: Buffer.from([0x40, 0xe0, 0x00, 0x2a]), expect: [reset(0x2a)] },
      // well formed, but refused by node-coap itself (Observe on a POST: it answered a 5.00 with its error text)
      { name: 'a POST with Observe', datagram: Buffer.from([0x40, 0x02, 0x00, 0x2b, 0x60]), expect: 'small' },
      // well formed, to no resource: a 4.04 whose diagnostic does not fit is sent without it
      { name: 'a GET of /x', datagram: Buffer.from([0x40, 0x01, 0x00, 0x2c, 0xb1, 0x78]), expect: 'small' }
    ]
    let published = 0
    for (const shape of shapes) {
      const got = await answersTo(shape.datagram)
      for (const answer of got) {
        assert.ok(answer.length <= shape.datagram.length, `${shape.name}: ${answer.length} bytes answered to ${shape.datagram.length}`)
        assert.doesNotMatch(answer.toString('latin1'), /[a-z]{3}/i, `${shape.name}: no text in ${answer.toString('hex')}`)
      }
      if (shape.expect === 'small') {
        assert.equal(got.length, 1, `${shape.name}: one answer`)
        const answer = parsePacket(got[0]!)
        assert.deepEqual([answer.ack, answer.messageId, answer.payload.length], [true, shape.datagram.readUInt16BE(2), 0], shape.name)
        assert.match(answer.code, /^[45]\./, shape.name)
      } else {
        assert.deepEqual(got.map((b) => b.toString('hex')), shape.expect.map((b) => b.toString('hex')), shape.name)
      }
      // the well-behaved device is served all along: its publish is notified to its observation
      assert.equal((await coapCall(port, 'POST', '/ps/feed', `clientid=coap-amid&token=${token}`, `after ${shape.name}`)).code, '2.04')
      published++
      await eventually(() => device.notifications.length === published, 10_000, `the notification after ${shape.name}`)
      assert.equal(device.notifications.at(-1)!.payload.toString(), `after ${shape.name}`)
    }

    const after = await metrics()
    assert.equal(count(after, 'malformed_packet') - count(before, 'malformed_packet'), 13, 'every datagram that is no well-formed message counted')
    assert.equal(count(after, 'bad_coap_request') - count(before, 'bad_coap_request'), 2, 'the two refused requests counted')
    assert.equal(events(after, 'connected', 'applied') - events(before, 'connected', 'applied'), 0, 'nothing stored')
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/coap-amid')).body.connected, true)
  })

  it('observations per connection are bounded by maxSubscriptionsPerSession: one more is answered 4.03 and counted, a repeat is not', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-many' })
    const token = await connect(port, 'coap-many', d.token)
    ctx.after(() => coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-many&token=${token}`).catch(() => undefined))
    const device = new RawCoap(ctx, port)
    const query = ['clientid=coap-many', `token=${token}`]
    // the session's topics (subscription entities are made for property topics only)
    const subscriptions = async () => (await t.api<{ topics: unknown[] }>('GET', '/v1/sessions/coap-many')).body.topics.length
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    // this hub's limit is 3
    for (const topic of ['a', 'b', 'c']) assert.equal((await device.get(['ps', topic], query, [observe(0)])).code, '2.05', topic)
    const refused = await device.get(['ps', 'd'], query, [observe(0)])
    assert.equal(refused.code, '4.03')
    // an error answer is no notification: it carries no Observe option (RFC 7641 §4.2)
    assert.deepEqual(refused.options.filter((o) => o.name === 'Observe'), [])
    assert.equal(await subscriptions(), 3, 'no topic for the one refused')
    // observing a topic again replaces its observation: no more than before, so not refused
    assert.equal((await device.get(['ps', 'b'], query, [observe(0)])).code, '2.05')
    assert.equal(await subscriptions(), 3)
    // once one is cancelled there is room again
    assert.equal((await device.get(['ps', 'a'], query, [observe(1)])).code, '2.05')
    assert.equal((await device.get(['ps', 'd'], query, [observe(0)])).code, '2.05')
    assert.equal(await subscriptions(), 3)
    const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.equal(count(after, 'too_many_subscriptions') - count(before, 'too_many_subscriptions'), 1)
  })

  it('a notification larger than one block reaches a node-coap observer whole (RFC 7959 Block2)', async (ctx) => {
    const { token } = await keptAlive(ctx, t, port, 'coap-big')
    const observation = await coapObserve(ctx, port, '/ps/v1/devices/me/attributes', `clientid=coap-big&token=${token}`)
    try {
      // about 5,000 bytes that differ along their length, so blocks out of order would show
      const patch = { text: Array.from({ length: 1000 }, (_, i) => i.toString(36).padStart(4, '0')).join(' ') }
      assert.ok(JSON.stringify(patch).length > 5000)
      assert.deepEqual((await t.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/coap-big/attributes', patch)).body.pushedTo, ['coap-big'])
      await eventually(() => observation.notifications.length === 1, 3000, 'the large notification, reassembled')
      assert.equal(observation.notifications[0], JSON.stringify(patch))
      // node-coap fetched the later blocks by repeating its registration (Observe 0, same token)
      // with Block2: that neither added a subscription nor a second observation
      const entities = (await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-big')).body.data
      assert.equal(entities.length, 1)
      await t.api('PATCH', '/v1/devices/coap-big/attributes', { small: true })
      await eventually(() => observation.notifications.length === 2, 3000, 'a small notification after it')
      await new Promise((resolve) => setTimeout(resolve, 100))
      assert.deepEqual(observation.notifications.slice(1).map((n) => JSON.parse(n) as unknown), [{ small: true }])
    } finally {
      observation.stream.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-big&token=${token}`)
    }
  })

  it('RFC 7959 §2.6: the first block comes in the notification, the rest by GETs without Observe, in the size asked', async (ctx) => {
    const { token } = await keptAlive(ctx, t, port, 'coap-blocks')
    const device = new RawCoap(ctx, port)
    const publisher = await t.connect({ clientId: 'blocks-publisher', username: 'admin', password: 'public' })
    const path = ['ps', 'v1', 'devices', 'me', 'raw']
    const query = ['clientid=coap-blocks', `token=${token}`]
    const subscriptions = async () => (await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-blocks')).body.data.length
    const sessionTopics = async () => (await t.api<{ topics: unknown[] }>('GET', '/v1/sessions/coap-blocks')).body.topics.length
    const metricsBefore = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const observeToken = randomBytes(4)
      const registered = await device.get(path, query, [{ name: 'Observe', value: Buffer.alloc(0) }], observeToken)
      assert.equal(registered.code, '2.05')
      assert.deepEqual([await subscriptions(), await sessionTopics()], [1, 1])

      const first = randomBytes(5000)
      await publisher.publishAsync('coap-blocks/v1/devices/me/raw', first, { qos: 1 })
      const notification = await eventually(() => device.notifications[0], 3000, 'the first block')
      assert.equal(notification.confirmable, true)
      assert.ok(notification.token.equals(observeToken))
      assert.notEqual(option(notification, 'Observe'), undefined)
      assert.deepEqual(readBlock2(notification), { num: 0, more: true, size: 1024 })
      assert.equal(uint(option(notification, 'Size2')), 5000)
      const etag = option(notification, 'ETag')
      assert.ok(etag && etag.length > 0)

      // the rest in 256-byte blocks (SZX 4): 1024 bytes are blocks 0-3 of that size
      const parts = [notification.payload]
      for (let num = 4; ; num++) {
        const answer = await device.get(path, query, [block2(num, 4)])
        assert.equal(answer.code, '2.05')
        assert.equal(option(answer, 'Observe'), undefined, 'a block answer is no notification')
        assert.ok(option(answer, 'ETag')?.equals(etag), 'same representation')
        const block = readBlock2(answer)!
        assert.deepEqual([block.num, block.size], [num, 256])
        parts.push(answer.payload)
        if (!block.more) break
      }
      assert.ok(Buffer.concat(parts).equals(first), 'the reassembled payload is what was published')

      // a block beyond the end: 4.02 Bad Option; SZX 7 is reserved: 4.00 (RFC 7959 §2.2); both counted
      assert.equal((await device.get(path, query, [block2(20, 4)])).code, '4.02')
      assert.equal((await device.get(path, query, [{ name: 'Block2', value: Buffer.from([0x17]) }])).code, '4.00')
      assert.equal((await device.get(path, query, [{ name: 'Block2', value: Buffer.from([0, 0, 0, 0x16]) }])).code, '4.02')
      // blocks of a topic with no observation: nothing to read
      assert.equal((await device.get(['ps', 'other'], query, [block2(1, 6)])).code, '4.04')
      // still no Observe and no Block2: refused as before
      assert.equal((await device.get(path, query)).code, '4.00')
      const metricsAfter = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(count(metricsAfter, 'bad_coap_request') - count(metricsBefore, 'bad_coap_request'), 5)

      // a block request carrying Observe 0 (with a token of its own) is answered as a block, not
      // registered: no Observe in the answer, no new subscription, no second observation
      const withObserve = await device.get(path, query, [{ name: 'Observe', value: Buffer.alloc(0) }, block2(1, 6)])
      assert.equal(withObserve.code, '2.05')
      assert.equal(option(withObserve, 'Observe'), undefined)
      assert.ok(withObserve.payload.equals(first.subarray(1024, 2048)))
      assert.deepEqual([await subscriptions(), await sessionTopics()], [1, 1])

      // a newer message replaces the representation: blocks now come from it, with another ETag
      const second = randomBytes(3000)
      await publisher.publishAsync('coap-blocks/v1/devices/me/raw', second, { qos: 1 })
      await eventually(() => device.notifications.length === 2, 3000, 'the second notification')
      await new Promise((resolve) => setTimeout(resolve, 100))
      assert.equal(device.notifications.length, 2, 'one observation, one notification')
      assert.ok(device.notifications.every((n) => n.token.equals(observeToken)))
      const changed = await device.get(path, query, [block2(1, 6)])
      assert.ok(!option(changed, 'ETag')!.equals(etag), 'a new ETag tells the client the representation changed')
      assert.ok(option(changed, 'ETag')!.equals(option(device.notifications[1]!, 'ETag')!))
      assert.ok(changed.payload.equals(second.subarray(1024, 2048)))
      // a client that saw the ETag change starts again at block 0, still without Observe
      const restart = await device.get(path, query, [block2(0, 6)])
      assert.deepEqual(readBlock2(restart), { num: 0, more: true, size: 1024 })
      assert.ok(restart.payload.equals(second.subarray(0, 1024)))
      assert.equal(uint(option(restart, 'Size2')), 3000)

      // a small message goes whole, without block options, as before
      await publisher.publishAsync('coap-blocks/v1/devices/me/raw', Buffer.from('small'), { qos: 1 })
      const small = await eventually(() => device.notifications[2], 3000, 'the small notification')
      assert.equal(small.payload.toString(), 'small')
      assert.deepEqual([option(small, 'Block2'), option(small, 'ETag'), option(small, 'Size2')], [undefined, undefined, undefined])
    } finally {
      device.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-blocks&token=${token}`)
    }
  })

  it('an observation registered with Block2 gets notifications in that block size; one over 64 KiB is not sent but counted', async (ctx) => {
    const { token } = await keptAlive(ctx, t, port, 'coap-szx')
    const device = new RawCoap(ctx, port)
    const publisher = await t.connect({ clientId: 'szx-publisher', username: 'admin', password: 'public' })
    const query = ['clientid=coap-szx', `token=${token}`]
    try {
      const registered = await device.get(['ps', 'feed'], query, [{ name: 'Observe', value: Buffer.alloc(0) }, block2(0, 5)])
      assert.equal(registered.code, '2.05')
      const message = randomBytes(700)
      await publisher.publishAsync('coap-szx/feed', message, { qos: 1 })
      const notification = await eventually(() => device.notifications[0], 3000, 'the first block')
      assert.deepEqual(readBlock2(notification), { num: 0, more: true, size: 512 })
      assert.ok(notification.payload.equals(message.subarray(0, 512)))
      const rest = await device.get(['ps', 'feed'], query, [block2(1, 5)])
      assert.deepEqual(readBlock2(rest), { num: 1, more: false, size: 512 })
      assert.ok(rest.payload.equals(message.subarray(512)))

      const dropped = (text: string) => Number(/^iothub_coap_notifications_dropped_total\{reason="too_large"\} (\d+)$/m.exec(text)?.[1] ?? 0)
      const before = dropped((await t.api<string>('GET', '/metrics', undefined, null)).body)
      await publisher.publishAsync('coap-szx/feed', randomBytes(64 * 1024 + 1), { qos: 1 })
      await publisher.publishAsync('coap-szx/feed', Buffer.from('after'), { qos: 1 })
      const next = await eventually(() => device.notifications[1], 3000, 'the notification after the dropped one')
      assert.equal(next.payload.toString(), 'after')
      assert.equal(dropped((await t.api<string>('GET', '/metrics', undefined, null)).body) - before, 1)
    } finally {
      device.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-szx&token=${token}`)
    }
  })

  it('RFC 7959 Block1: a body sent in three blocks, each with a new token and one Request-Tag, is published whole, once', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-b1' })
    const token = await connect(port, 'coap-b1', d.token)
    const watcher = await t.connect({ clientId: 'b1-watcher', username: 'admin', password: 'public' })
    const seen: Buffer[] = []
    watcher.on('message', (_topic, payload) => seen.push(payload))
    await watcher.subscribeAsync('coap-b1/#', { qos: 1 })
    const device = new RawCoap(ctx, port)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const body = randomBytes(612) // blocks of 256 bytes (SZX 4): 256 + 256 + 100
      const tag = randomBytes(4)
      const request = uri(['ps', 'blobs', 'one'], ['clientid=coap-b1', `token=${token}`])
      // as libcoap 4.3 sends it: Size1 with each block, a new token per block, one Request-Tag
      const blocks = [0, 1, 2].map((num) => ({
        code: '0.02',
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: [...request, block1(num, num < 2, 4), { name: 'Size1' as const, value: uintBytes(body.length) }, requestTag(tag)],
        payload: body.subarray(num * 256, (num + 1) * 256)
      }))
      for (const num of [0, 1]) {
        const answer = await device.send(blocks[num]!)
        // piggybacked on the ACK of the block, with its token, the block acknowledged in Block1
        assert.deepEqual([answer.code, answer.ack, answer.messageId], ['2.31', true, blocks[num]!.messageId])
        assert.deepEqual(readBlock1(answer), { num, more: true, size: 256 })
      }
      // a retransmitted block (same message id) is answered as before and stored once
      const received = device.received.length
      await device.send(blocks[1]!, false)
      const repeated = await eventually(() => device.received[received], 2000, 'the answer to the retransmitted block')
      assert.deepEqual([repeated.code, repeated.messageId, readBlock1(repeated)], ['2.31', blocks[1]!.messageId, { num: 1, more: true, size: 256 }])
      // sent again with a message id of its own (its 2.31 lost, say): continued as well, stored once
      const resent = await device.send({ ...blocks[1]!, messageId: device.nextMessageId() })
      assert.deepEqual([resent.code, readBlock1(resent)], ['2.31', { num: 1, more: true, size: 256 }])

      const final = await device.send(blocks[2]!)
      assert.deepEqual([final.code, final.ack, final.messageId], ['2.04', true, blocks[2]!.messageId])
      // RFC 7959 §2.3: the final answer carries the Block1 of the last block, M clear
      assert.deepEqual(readBlock1(final), { num: 2, more: false, size: 256 })
      await eventually(() => seen.length === 1, 3000, 'the reassembled publish')
      assert.ok(seen[0]!.equals(body), 'the body whole, in order')

      // the last block retransmitted: the same answer again (node-coap's cache), no second publish
      const mark = device.received.length
      await device.send(blocks[2]!, false)
      const again = await eventually(() => device.received[mark], 2000, 'the answer to the retransmitted last block')
      assert.deepEqual([again.code, again.messageId], ['2.04', blocks[2]!.messageId])
      await new Promise((resolve) => setTimeout(resolve, 100))
      assert.equal(seen.length, 1)
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(count(after, 'bad_coap_request') - count(before, 'bad_coap_request'), 0)
    } finally {
      device.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-b1&token=${token}`)
    }
  })

  it("RFC 7959 Block1: node-coap's client, one token for all the blocks and no Request-Tag, publishes block-wise as before", async () => {
    const d = await t.createDevice({ id: 'coap-b1-node' })
    const token = await connect(port, 'coap-b1-node', d.token)
    const watcher = await t.connect({ clientId: 'b1-node-watcher', username: 'admin', password: 'public' })
    const seen: Buffer[] = []
    watcher.on('message', (_topic, payload) => seen.push(payload))
    await watcher.subscribeAsync('coap-b1-node/#', { qos: 1 })
    try {
      const body = randomBytes(5000)
      const answer = await new Promise<coap.IncomingMessage>((resolve, reject) => {
        const req = coap.request({ hostname: '127.0.0.1', port, method: 'POST', pathname: '/ps/blobs/node', query: `clientid=coap-b1-node&token=${token}`, agent: false })
        req.setOption('Block1', Buffer.from([4])) // node-coap's client sends block-wise when given the SZX: 256 bytes
        req.on('response', resolve)
        req.on('error', reject)
        req.end(body)
      })
      assert.equal(answer.code, '2.04')
      await eventually(() => seen.length === 1, 3000, 'the block-wise publish')
      assert.ok(seen[0]!.equals(body))
    } finally {
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-b1-node&token=${token}`)
    }
  })

  it('RFC 7959 Block1: a missing or unknown block is answered 4.08, a bad Block1 4.00; counted, nothing published', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-b1-gap' })
    const token = await connect(port, 'coap-b1-gap', d.token)
    const watcher = await t.connect({ clientId: 'b1-gap-watcher', username: 'admin', password: 'public' })
    const seen: Buffer[] = []
    watcher.on('message', (_topic, payload) => seen.push(payload))
    await watcher.subscribeAsync('coap-b1-gap/#', { qos: 1 })
    const device = new RawCoap(ctx, port)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const request = uri(['ps', 'blobs', 'gap'], ['clientid=coap-b1-gap', `token=${token}`])
      const tag = randomBytes(4)
      const block = (num: number, more: boolean, payload: Buffer, extra: NamedOption[] = []) => ({
        code: '0.02',
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: [...request, block1(num, more, 0), requestTag(tag), ...extra],
        payload
      })
      assert.equal((await device.send(block(0, true, Buffer.alloc(16, 'a')))).code, '2.31')
      // block 1 never arrives: the last block, 2, does not continue what was received
      const last = block(2, false, Buffer.from('c'))
      assert.equal((await device.send(last)).code, '4.08')
      // its retransmission (same message id) is answered the same, and not counted again
      assert.equal((await device.send(last)).code, '4.08')
      // and the transfer is forgotten: block 1 now continues nothing either
      assert.equal((await device.send(block(1, true, Buffer.alloc(16, 'b')))).code, '4.08')
      // SZX 7 is reserved (RFC 7959 §2.2); a block with M set holds exactly SZX's size
      assert.equal((await device.send({ ...block(0, true, Buffer.alloc(16)), options: [...request, { name: 'Block1', value: Buffer.from([0x0f]) }] })).code, '4.00')
      assert.equal((await device.send(block(0, true, Buffer.alloc(10)))).code, '4.00')
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.deepEqual(seen, [], 'nothing published')
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(count(after, 'bad_coap_request') - count(before, 'bad_coap_request'), 4)
    } finally {
      device.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-b1-gap&token=${token}`)
    }
  })

  it('RFC 7959 Block1: a body no publish would take is refused at its first block, as its whole request would be, and nothing of it is kept; counted', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-b1-auth' })
    const token = await connect(port, 'coap-b1-auth', d.token)
    const device = new RawCoap(ctx, port)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const tag = randomBytes(4)
      const block = (path: string[], query: string[], num: number, more: boolean, code = '0.02') => ({
        code,
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: [...uri(path, query), block1(num, more, 0), requestTag(tag)],
        payload: Buffer.alloc(16, 'x')
      })
      const own = ['clientid=coap-b1-auth', `token=${token}`]
      const guessed = ['clientid=coap-b1-auth', 'token=0000000000000000']
      // another's token: 4.01 before anything is kept (the blocks of a peer without a connection
      // once held up to four bodies each until EXCHANGE_LIFETIME) — so the body's last block finds
      // nothing to continue (kept, it would have made the whole body, and the gateway's 4.01)
      assert.equal((await device.send(block(['ps', 'blobs'], guessed, 0, true))).code, '4.01')
      assert.equal((await device.send(block(['ps', 'blobs'], guessed, 1, false))).code, '4.08')
      assert.equal((await device.send(block(['ps', 'blobs'], ['clientid=coap-b1-auth'], 0, true))).code, '4.01')
      // outside the device's namespace, a wildcard, a bad QoS, no such resource, a request that takes no body
      assert.equal((await device.send(block(['ps', '$SYS', 'x'], own, 0, true))).code, '4.03')
      assert.equal((await device.send(block(['ps', 'blobs', '#'], own, 0, true))).code, '4.00')
      assert.equal((await device.send(block(['ps', 'blobs'], [...own, 'qos=3'], 0, true))).code, '4.00')
      assert.equal((await device.send(block(['blobs'], own, 0, true))).code, '4.04')
      assert.equal((await device.send(block(['ps', 'blobs'], own, 0, true, '0.01'))).code, '4.02')
      assert.equal((await device.send(block(['mqtt', 'connection'], own, 0, true))).code, '4.02')
      // its own token, its own topic: taken, block by block
      assert.equal((await device.send(block(['ps', 'blobs'], own, 0, true))).code, '2.31')
      assert.equal((await device.send(block(['ps', 'blobs'], own, 1, false))).code, '2.04')
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      const counted = (reason: string) => count(after, reason) - count(before, reason)
      assert.deepEqual(
        { not_authorized: counted('not_authorized'), outside_namespace: counted('outside_namespace'), bad_topic: counted('bad_topic'), bad_coap_request: counted('bad_coap_request') },
        { not_authorized: 2, outside_namespace: 1, bad_topic: 1, bad_coap_request: 5 }
      )
    } finally {
      device.close()
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-b1-auth&token=${token}`)
    }
  })

  it('a confirmable connect sent twice back to back (a retransmission) is handled once: one session, one token', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-dup' })
    const device = new RawCoap(ctx, port)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const connectRequest = {
        code: '0.02',
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: uri(['mqtt', 'connection'], ['clientid=coap-dup', `password=${d.token}`])
      }
      await device.send(connectRequest, false)
      await device.send(connectRequest, false)
      await eventually(() => device.received.length >= 1, 3000, 'the answer to the connect')
      await new Promise((resolve) => setTimeout(resolve, 300))
      // a retransmission after the answer: node-coap answers it from its cache, the same way
      await device.send(connectRequest, false)
      await eventually(() => device.received.length >= 2, 3000, 'the answer to the late retransmission')
      await new Promise((resolve) => setTimeout(resolve, 100))
      const answers = device.received.map((p) => `${p.code} ${p.payload.toString()}`)
      assert.equal(new Set(answers).size, 1, `one answer, maybe repeated: ${answers.join(', ')}`)
      assert.ok(answers.length <= 3)
      const [code, token] = answers[0]!.split(' ')
      assert.equal(code, '2.01')
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(events(after, 'connected', 'applied') - events(before, 'connected', 'applied'), 1, 'one connect stored')
      // the token answered is the connection's
      assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-dup&token=${token!}`)).code, '2.04')
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-dup&token=${token!}`)
    } finally {
      device.close()
    }
  })


  it('an observer that acknowledges nothing has at most 32 notifications awaiting their ACK: more messages are not notified, and counted; acknowledged, it is notified again', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-backlog' })
    const token = await connect(port, 'coap-backlog', d.token)
    ctx.after(() => coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-backlog&token=${token}`).catch(() => undefined))
    // an observer that hears everything and acknowledges nothing (until told to)
    const silent = createSocket('udp4')
    ctx.after(() => silent.close())
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', () => resolve()))
    const registered = new Promise<void>((resolve) => silent.once('message', () => resolve()))
    // confirmable notifications by message id: a retransmission is the same one again
    const notified = new Map<number, string>()
    silent.on('message', (message) => {
      const packet = parsePacket(message)
      if (packet.confirmable) notified.set(packet.messageId, packet.payload.toString())
    })
    silent.send(generatePacket({ code: '0.01', confirmable: true, messageId: 1, token: Buffer.from([7, 7]), options: [observe(0), ...uri(['ps', 'flood'], ['clientid=coap-backlog', `token=${token}`])] }), port, '127.0.0.1')
    await registered
    const dropped = () => metricValue(t.api, 'iothub_coap_notifications_dropped_total{reason="backlog"}')
    const droppedBefore = await dropped()

    // its own device's topic, flooded (a superuser here; the device itself could, at its rate)
    const publisher = await t.connect({ clientId: 'backlog-publisher', username: 'admin', password: 'public' })
    ctx.after(() => publisher.endAsync())
    for (let i = 0; i < 40; i++) await publisher.publishAsync('coap-backlog/flood', `m${i}`, { qos: 1 })
    await eventually(async () => (await dropped()) - droppedBefore === 8, 10_000, 'eight messages not notified')
    await eventually(() => notified.size === 32, 10_000, 'the first 32 notified')
    assert.deepEqual([...notified.values()].sort(), Array.from({ length: 32 }, (_, i) => `m${i}`).sort())

    // it acknowledges them: the next message is notified
    for (const messageId of notified.keys()) silent.send(generatePacket({ code: '0.00', ack: true, messageId }), port, '127.0.0.1')
    await eventually(
      async () => {
        await publisher.publishAsync('coap-backlog/flood', 'after', { qos: 1 })
        return [...notified.values()].includes('after')
      },
      10_000,
      'a notification once the observer acknowledged'
    )
  })
})

describe('CoAP gateway with the default ACK_TIMEOUT (2 s) and a 1,000-byte publish limit', () => {
  let t: TestHub
  let port: number
  before(async () => {
    // the gateway publishes payloads up to the MQTT packet limit: a small one keeps the test short
    t = await startTestHub({ maxPacketSize: 1000 })
    port = t.hub.address.coap!.port
  })
  after(() => t.stop())

  it('an answer that takes 200 ms to store still comes piggybacked on the ACK (within half the ACK_TIMEOUT)', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-piggyback' })
    const registry = t.hub.registry
    const apply = registry.apply.bind(registry)
    registry.apply = async (event) => {
      if (event.kind === 'connected' && event.clientId === 'coap-piggyback') await new Promise((resolve) => setTimeout(resolve, 200))
      return apply(event)
    }
    const device = new RawCoap(ctx, port)
    try {
      const messageId = device.nextMessageId()
      const answer = await device.send({ code: '0.02', confirmable: true, messageId, token: randomBytes(4), options: uri(['mqtt', 'connection'], ['clientid=coap-piggyback', `password=${d.token}`]) })
      assert.deepEqual([answer.code, answer.ack, answer.messageId], ['2.01', true, messageId])
      assert.deepEqual(device.emptyAcks, [], 'no empty ACK before it')
      await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-piggyback&token=${answer.payload.toString()}`)
    } finally {
      registry.apply = apply
      device.close()
    }
  })

  it('a body announced (Size1) or grown past the limit is refused with 4.13 and Size1 = the limit; counted, nothing published', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-b1-big' })
    const connected = await coapCall(port, 'POST', '/mqtt/connection', `clientid=coap-b1-big&password=${d.token}`)
    assert.equal(connected.code, '2.01')
    const token = connected.payload
    const watcher = await t.connect({ clientId: 'b1-big-watcher', username: 'admin', password: 'public' })
    const seen: Buffer[] = []
    watcher.on('message', (_topic, payload) => seen.push(payload))
    await watcher.subscribeAsync('coap-b1-big/#', { qos: 1 })
    const device = new RawCoap(ctx, port)
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    try {
      const request = uri(['ps', 'blobs', 'big'], ['clientid=coap-b1-big', `token=${token}`])
      const block = (tag: Buffer, num: number, more: boolean, extra: NamedOption[] = []) => ({
        code: '0.02',
        confirmable: true,
        messageId: device.nextMessageId(),
        token: randomBytes(4),
        options: [...request, block1(num, more, 4), requestTag(tag), ...extra],
        payload: randomBytes(256)
      })
      // Size1 announces 2,000 bytes: refused at the first block
      const announced = await device.send(block(randomBytes(4), 0, true, [{ name: 'Size1', value: uintBytes(2000) }]))
      assert.equal(announced.code, '4.13')
      assert.equal(uint(option(announced, 'Size1')), 1000, 'Size1 tells the largest body taken')
      // no Size1: blocks 0-2 (768 bytes) continue, block 3 would make 1,024
      const tag = randomBytes(4)
      for (const num of [0, 1, 2]) assert.equal((await device.send(block(tag, num, true))).code, '2.31')
      const grown = await device.send(block(tag, 3, false))
      assert.equal(grown.code, '4.13')
      assert.equal(uint(option(grown, 'Size1')), 1000)
      await new Promise((resolve) => setTimeout(resolve, 200))
      assert.deepEqual(seen, [], 'nothing published')
      const after = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.equal(count(after, 'packet_too_large') - count(before, 'packet_too_large'), 2)
      assert.equal(count(after, 'bad_coap_request') - count(before, 'bad_coap_request'), 0)
    } finally {
      device.close()
    }
  })
})

describe('CoAP gateway with a 100 ms ACK_TIMEOUT', () => {
  // RFC 7252 §4.8.2 with ACK_TIMEOUT 0.1 s: a confirmable message is sent at most 5 times, the
  // last by MAX_TRANSMIT_SPAN (2.25 s), and given up by MAX_TRANSMIT_WAIT (4.65 s); node-coap's
  // own timer would end the observation only after EXCHANGE_LIFETIME (13 s here)
  let t: TestHub
  let port: number
  before(async () => {
    t = await startTestHub({ coapAckTimeout: 100 })
    port = t.hub.address.coap!.port
  })
  after(() => t.stop())

  it('an observer that never acknowledges a notification loses its observation once the retransmissions are spent (RFC 7641 §4.5)', async (ctx) => {
    const d = await t.createDevice({ id: 'coap-deaf' })
    const token = await connect(port, 'coap-deaf', d.token)
    ctx.after(() => coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-deaf&token=${token}`).catch(() => undefined))
    const subscriptions = async () => (await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-deaf')).body.data.length

    // an observer that hears everything and answers nothing
    const deaf = createSocket('udp4')
    ctx.after(() => deaf.close())
    await new Promise<void>((resolve) => deaf.bind(0, '127.0.0.1', () => resolve()))
    const registered = new Promise<void>((resolve) => deaf.once('message', () => resolve()))
    const copies: { at: number; messageId: number }[] = []
    deaf.on('message', (message) => {
      const packet = parsePacket(message)
      if (packet.confirmable) copies.push({ at: Date.now(), messageId: packet.messageId })
    })
    const request = generatePacket({ code: '0.01', confirmable: true, messageId: 1, token: Buffer.from([9, 9]), options: [observe(0), ...uri(['ps', 'v1', 'devices', 'me', 'attributes'], ['clientid=coap-deaf', `token=${token}`])] })
    deaf.send(request, port, '127.0.0.1')
    await registered
    assert.equal(await subscriptions(), 1)

    // beside it, an observer that acknowledges, notified just before: it keeps its observation
    const h = await t.createDevice({ id: 'coap-hearing' })
    const hearingToken = await connect(port, 'coap-hearing', h.token)
    ctx.after(() => coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-hearing&token=${hearingToken}`).catch(() => undefined))
    const hearing = new RawCoap(ctx, port)
    const hearingPath = ['ps', 'v1', 'devices', 'me', 'attributes']
    assert.equal((await hearing.get(hearingPath, ['clientid=coap-hearing', `token=${hearingToken}`], [observe(0)])).code, '2.05')
    await t.api('PATCH', '/v1/devices/coap-hearing/attributes', { y: 1 })
    await eventually(() => hearing.notifications.length === 1, 10_000, 'the acknowledged notification')

    await t.api('PATCH', '/v1/devices/coap-deaf/attributes', { x: 1 })
    await eventually(async () => (await subscriptions()) === 0, 30_000, 'the observation ended')
    const ended = Date.now()
    // the acknowledged one, notified earlier, would have ended first had its ACK not counted
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-hearing')).body.data.length, 1, 'the acknowledging observer keeps its observation')
    await t.api('PATCH', '/v1/devices/coap-hearing/attributes', { y: 2 })
    await eventually(() => hearing.notifications.length === 2, 10_000, 'a later notification to the acknowledging observer')
    assert.ok(copies.length >= 2, `the notification was retransmitted (${copies.length} copies)`)
    assert.ok(copies.length <= 5, `at most MAX_RETRANSMIT (4) retransmissions, got ${copies.length - 1}`)
    assert.equal(new Set(copies.map((c) => c.messageId)).size, 1, 'copies of one notification')
    const waited = ended - copies[0]!.at
    // not before the retransmissions could be spent (1.5 s at the least), and well before EXCHANGE_LIFETIME (13 s)
    assert.ok(waited >= 1500, `ended ${waited} ms after the notification`)
    // before node-coap's own EXCHANGE_LIFETIME (13 s here) would have ended it: the margin is for load
    assert.ok(waited < 12_500, `ended ${waited} ms after the notification`)
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/coap-deaf')).body.connected, true, 'the connection itself stays')
  })
})
