/**
 * CoAP devices on the embedded hub, with the `coap` package as the client (real UDP datagrams):
 * EMQX 5's connection mode (connect, heartbeat, publish, observe, cancel, close, timeout),
 * pushes to CoAP observers, MQTT and CoAP devices on one broker, and bad input.
 */
import assert from 'node:assert/strict'
import { createSocket } from 'node:dgram'
import { after, before, describe, it } from 'node:test'
import * as coap from 'coap'
import { generate as generatePacket, parse as parsePacket } from 'coap-packet'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

interface Answer {
  code: string
  payload: string
}

function coapCall(port: number, method: 'GET' | 'POST' | 'PUT' | 'DELETE', pathname: string, query: string, payload?: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = coap.request({ hostname: '127.0.0.1', port, method, pathname, query, confirmable: true, agent: false })
    req.on('response', (res: coap.IncomingMessage) => {
      resolve({ code: res.code, payload: res.payload.toString('utf8') })
    })
    req.on('error', reject)
    req.end(payload)
  })
}

/**
 * GET with Observe 1, sent as a raw datagram: node-coap's client takes any request with an
 * Observe option for an observation and keeps its socket open for notifications.
 */
async function cancelObserve(port: number, path: string[], query: string[]): Promise<string> {
  const socket = createSocket('udp4')
  const options = [
    { name: 'Observe' as const, value: Buffer.from([1]) },
    ...path.map((p) => ({ name: 'Uri-Path' as const, value: Buffer.from(p) })),
    ...query.map((q) => ({ name: 'Uri-Query' as const, value: Buffer.from(q) }))
  ]
  const answer = new Promise<string>((resolve) => socket.once('message', (message) => resolve(parsePacket(message).code)))
  socket.send(generatePacket({ code: '0.01', confirmable: true, messageId: 4242, token: Buffer.from([7, 7]), options }), port, '127.0.0.1')
  try {
    return await answer
  } finally {
    socket.close()
  }
}

/** An observation: its first answer, then each notification's payload. */
function coapObserve(port: number, pathname: string, query: string): Promise<{ code: string; notifications: string[]; stream: coap.ObserveReadStream }> {
  return new Promise((resolve, reject) => {
    const req = coap.request({ hostname: '127.0.0.1', port, method: 'GET', pathname, query, observe: 0, confirmable: true, agent: false })
    req.on('response', (res: coap.IncomingMessage) => {
      const notifications: string[] = []
      let first = true
      res.on('data', (chunk: Buffer) => {
        if (first) first = false
        else notifications.push(chunk.toString('utf8'))
      })
      resolve({ code: res.code, notifications, stream: res as unknown as coap.ObserveReadStream })
    })
    req.on('error', reject)
    req.end()
  })
}

describe('CoAP gateway (EMQX 5 connection mode)', () => {
  let t: TestHub
  let port: number
  before(async () => {
    t = await startTestHub({ coapHeartbeat: 1, coapAckTimeout: 20 })
    port = t.hub.address.coap!.port
  })
  after(() => t.stop())

  const connect = async (id: string, password: string): Promise<string> => {
    const answer = await coapCall(port, 'POST', '/mqtt/connection', `clientid=${id}&username=${id}&password=${password}`)
    assert.equal(answer.code, '2.01', answer.payload)
    return answer.payload
  }

  it('connect, heartbeat and close make and end a coap session entity', async () => {
    const d = await t.createDevice({ id: 'coap-1' })
    assert.equal((await coapCall(port, 'POST', '/mqtt/connection', 'clientid=coap-1&password=wrong')).code, '4.01')
    const token = await connect('coap-1', d.token)
    const session = (await t.api<{ protocol: string; connected: boolean; deviceId: string; mountpoint: string }>('GET', '/v1/sessions/coap-1')).body
    assert.deepEqual([session.protocol, session.connected, session.deviceId, session.mountpoint], ['coap', true, 'coap-1', 'coap-1/'])
    const listed = (await t.api<{ data: { clientid: string; proto_name: string }[] }>('GET', '/api/v4/clients?clientid=coap-1')).body.data
    assert.deepEqual(listed.map((c) => c.proto_name), ['CoAP'])
    assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-1&token=${token}`)).code, '2.04')
    assert.equal((await coapCall(port, 'PUT', '/mqtt/connection', 'clientid=coap-1&token=not-it')).code, '4.01')
    assert.equal((await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=coap-1&token=${token}`)).code, '2.02')
    assert.equal((await t.api('GET', '/v1/sessions/coap-1')).status, 404)
  })

  it('a silent connection ends with keepalive_timeout after 1.5 heartbeats', async () => {
    const d = await t.createDevice({ id: 'coap-quiet' })
    await connect('coap-quiet', d.token)
    assert.equal((await t.api('GET', '/v1/sessions/coap-quiet')).status, 200)
    await eventually(async () => (await t.api('GET', '/v1/sessions/coap-quiet')).status === 404, 4000, 'session ended by the heartbeat timeout')
  })

  it('observe makes a subscription entity; a push arrives as a notification; cancel deletes it', async () => {
    const d = await t.createDevice({ id: 'coap-obs' })
    const token = await connect('coap-obs', d.token)
    const heartbeat = setInterval(() => void coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-obs&token=${token}`), 300)
    try {
      const observation = await coapObserve(port, '/ps/v1/devices/me/attributes', `clientid=coap-obs&token=${token}&qos=1`)
      assert.equal(observation.code, '2.05')
      const entities = (await t.api<{ data: { sessionId: string; properties: string[] }[] }>('GET', '/v1/subscriptions?deviceId=coap-obs')).body.data
      assert.deepEqual(entities.map((e) => [e.sessionId, e.properties]), [['coap-obs', ['attributes']]])
      const pushed = await t.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/coap-obs/attributes', { colour: 'blue' })
      assert.deepEqual(pushed.body.pushedTo, ['coap-obs'])
      await eventually(() => observation.notifications.length === 1, 3000, 'notification')
      assert.deepEqual(JSON.parse(observation.notifications[0]!), { colour: 'blue' })
      // cancel: GET with Observe 1
      assert.equal(await cancelObserve(port, ['ps', 'v1', 'devices', 'me', 'attributes'], ['clientid=coap-obs', `token=${token}`]), '2.05')
      assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=coap-obs')).body.data.length, 0)
      assert.deepEqual((await t.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/coap-obs/attributes', { colour: 'red' })).body.pushedTo, [])
      observation.stream.close()
    } finally {
      clearInterval(heartbeat)
    }
  })

  it('a CoAP publish reaches MQTT subscribers and, on a property topic, the device entity', async () => {
    const d = await t.createDevice({ id: 'coap-pub' })
    const token = await connect('coap-pub', d.token)
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

  it('an MQTT device and a CoAP device subscribed to the same change each get only their own push', async () => {
    const mqttDevice = await t.createDevice({ id: 'mix-mqtt' })
    const coapDevice = await t.createDevice({ id: 'mix-coap' })
    const client = await t.connect({ clientId: 'mix-mqtt', username: mqttDevice.id, password: mqttDevice.token })
    const got: string[] = []
    client.on('message', (_topic, payload) => got.push(payload.toString()))
    await client.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    const token = await connect('mix-coap', coapDevice.token)
    const observation = await coapObserve(port, '/ps/v1/devices/me/commands', `clientid=mix-coap&token=${token}`)
    const toCoap = await t.api<{ pushedTo: string[] }>('POST', '/v1/devices/mix-coap/commands', { name: 'reboot' })
    const toMqtt = await t.api<{ pushedTo: string[] }>('POST', '/v1/devices/mix-mqtt/commands', { name: 'blink' })
    assert.deepEqual([toCoap.body.pushedTo, toMqtt.body.pushedTo], [['mix-coap'], ['mix-mqtt']])
    await eventually(() => got.length === 1 && observation.notifications.length === 1, 3000, 'both pushes')
    assert.equal((JSON.parse(got[0]!) as { name: string }).name, 'blink')
    assert.equal((JSON.parse(observation.notifications[0]!) as { name: string }).name, 'reboot')
    observation.stream.close()
    await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=mix-coap&token=${token}`)
  })

  it('an observer that stops answering is dropped with its subscription entity', async () => {
    const d = await t.createDevice({ id: 'coap-gone' })
    const token = await connect('coap-gone', d.token)
    const heartbeat = setInterval(() => void coapCall(port, 'PUT', '/mqtt/connection', `clientid=coap-gone&token=${token}`), 300)
    try {
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
    } finally {
      clearInterval(heartbeat)
    }
  })

  it('bad requests get CoAP error codes, are counted, and store nothing', async () => {
    const before = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.equal((await coapCall(port, 'GET', '/nowhere', '')).code, '4.04')
    assert.equal((await coapCall(port, 'POST', '/mqtt/connection', 'username=x&password=y')).code, '4.00')
    assert.equal((await coapCall(port, 'POST', '/ps/t', 'clientid=nobody&token=nothing', 'x')).code, '4.01')
    assert.equal((await coapCall(port, 'PUT', '/ps/t', 'clientid=nobody&token=nothing', 'x')).code, '4.05')
    const d = await t.createDevice({ id: 'coap-bad' })
    const token = await connect('coap-bad', d.token)
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
})

function count(metrics: string, reason: string): number {
  const line = metrics.split('\n').find((l) => l.startsWith(`iothub_rejected_inputs_total{reason="${reason}"}`))
  return line ? Number(line.split(' ')[1]) : 0
}
