/**
 * What one device can make the embedded hub hold has a limit, and a device over it is refused
 * with the protocol's own answer and counted — while the hub and the other devices go on.
 */
import assert from 'node:assert/strict'
import { connect as tcpConnect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { encodePacket } from '../src/embedded/packet-codec.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import { connectClient, eventually, startTestHub, superuserLogin, tempDir, type TestHub } from './helpers/hub.js'
import { coapCall } from './helpers/coap.js'
import { metricValue, rejectedCount } from './helpers/metrics.js'
import { connectPacket, PacketType, PINGREQ, publishPacket, RawMqttClient, subackGranted, subscribePacket, unsubscribePacket } from './helpers/raw-mqtt.js'

const SUBACK_FAILURE = 0x80

describe('limits per device', () => {
  let t: TestHub
  const raws: RawMqttClient[] = []
  const port = () => Number(new URL(t.mqttUrl).port)

  before(async () => {
    t = await startTestHub({ maxSubscriptionsPerSession: 3, maxSessionsPerDevice: 2 })
  })
  after(async () => {
    for (const r of raws) r.destroy()
    await t.stop()
  })

  async function raw(options: Parameters<typeof connectPacket>[0]): Promise<{ client: RawMqttClient; returnCode: number }> {
    const result = await RawMqttClient.connect(port(), options)
    raws.push(result.client)
    return result
  }

  it('grants a session at most maxSubscriptionsPerSession topics: the rest get SUBACK 0x80, counted', async () => {
    const device = await t.createDevice()
    // mqtt.js fails a whole SUBSCRIBE on one 0x80: the raw client reads every code
    const { client } = await raw({ clientId: 'subs-limit', username: device.id, password: device.token })
    let messageId = 0
    const subscribe = async (...topics: string[]) => {
      client.send(subscribePacket(++messageId, topics.map((topic) => ({ topic, qos: 1 }))))
      return subackGranted(await client.next(PacketType.SUBACK)).granted
    }
    const before = await rejectedCount(t.api, 'too_many_subscriptions')
    assert.deepEqual(await subscribe('a', 'b', 'c', 'd', 'e'), [1, 1, 1, SUBACK_FAILURE, SUBACK_FAILURE])
    // a topic the session already holds is no new one
    assert.deepEqual(await subscribe('b'), [1])
    assert.deepEqual(await subscribe('f'), [SUBACK_FAILURE])
    client.send(unsubscribePacket(++messageId, ['a']))
    await client.next(PacketType.UNSUBACK)
    assert.deepEqual(await subscribe('f'), [1])
    const session = (await t.api<{ topics: { topic: string }[] }>('GET', '/v1/sessions/subs-limit')).body
    assert.deepEqual(session.topics.map((s) => s.topic).sort(), ['b', 'c', 'f'])
    assert.equal((await rejectedCount(t.api, 'too_many_subscriptions')) - before, 3)
  })

  it('lets a device hold at most maxSessionsPerDevice sessions; its own sessions still resume; others are unaffected', async () => {
    const greedy = await t.createDevice()
    const other = await t.createDevice()
    const login = { username: greedy.id, password: greedy.token, clean: false }
    for (const clientId of ['greedy-1', 'greedy-2']) await (await connectClient(t.mqttUrl, { ...login, clientId })).endAsync()
    const before = await rejectedCount(t.api, 'too_many_sessions')
    await assert.rejects(connectClient(t.mqttUrl, { ...login, clientId: 'greedy-3' }), (e: Error & { code?: number }) => e.code === 5)
    assert.equal((await rejectedCount(t.api, 'too_many_sessions')) - before, 1)
    assert.equal((await t.api('GET', '/v1/sessions/greedy-3')).status, 404)
    // resuming one of its own kept sessions opens none
    const resumed = await connectClient(t.mqttUrl, { ...login, clientId: 'greedy-1' })
    await resumed.endAsync()
    const fine = await connectClient(t.mqttUrl, { clientId: 'other-1', username: other.id, password: other.token })
    await fine.endAsync()
  })

  it('refuses sessions a device opens all at once beyond its limit, not only one by one', async () => {
    const device = await t.createDevice()
    const attempts = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => connectClient(t.mqttUrl, { clientId: `burst-${i}`, username: device.id, password: device.token, clean: false }))
    )
    const connected = attempts.filter((a) => a.status === 'fulfilled').map((a) => (a).value)
    assert.equal(connected.length, 2)
    await Promise.all(connected.map((c) => c.endAsync()))
    const held = (await t.api<{ data: unknown[] }>('GET', `/v1/sessions?deviceId=${device.id}`)).body
    assert.equal(held.data.length, 2)
  })

  it('refuses an empty topic: SUBSCRIBE "" gets 0x80, PUBLISH "" closes the connection; nothing stored or delivered', async () => {
    const device = await t.createDevice()
    const watcher = await t.connect({ clientId: 'empty-watcher', ...superuserLogin() })
    const seen: string[] = []
    watcher.on('message', (topic) => seen.push(topic))
    await watcher.subscribeAsync(`${device.id}/#`)
    const { client, returnCode } = await raw({ clientId: 'empty-topic', username: device.id, password: device.token })
    assert.equal(returnCode, 0)
    const badTopics = await rejectedCount(t.api, 'bad_topic')
    client.send(subscribePacket(1, [{ topic: '', qos: 0 }, { topic: 'fine', qos: 0 }]))
    assert.deepEqual(subackGranted(await client.next(PacketType.SUBACK)).granted, [SUBACK_FAILURE, 0])
    const session = (await t.api<{ topics: { topic: string }[] }>('GET', '/v1/sessions/empty-topic')).body
    assert.deepEqual(session.topics.map((s) => s.topic), ['fine'])
    client.send(publishPacket({ topic: '', payload: 'nothing' }))
    assert.equal(await client.closesWithin(5000), true)
    assert.equal((await rejectedCount(t.api, 'bad_topic')) - badTopics, 2, 'each refusal counted once')
    // the watcher's own round trip, after the publish: had it been routed, it would be here
    await watcher.publishAsync(`${device.id}/fine`, 'marker')
    await eventually(() => seen.includes(`${device.id}/fine`), 5000, 'marker')
    assert.deepEqual(seen, [`${device.id}/fine`])
  })

  it("refuses a will outside the device's namespace at CONNECT (CONNACK 5)", async () => {
    const device = await t.createDevice()
    const before = await rejectedCount(t.api, 'outside_namespace')
    const { returnCode } = await raw({ clientId: 'evil-will', username: device.id, password: device.token, will: { topic: '$SYS/broker/uptime', payload: 'forged', retain: true } })
    assert.equal(returnCode, 5)
    assert.equal((await rejectedCount(t.api, 'outside_namespace')) - before, 1)
    const { returnCode: ok } = await raw({ clientId: 'good-will', username: device.id, password: device.token, will: { topic: 'status', payload: 'gone' } })
    assert.equal(ok, 0)
  })

  it('says "session present" when resuming a kept session that has no subscriptions', async () => {
    const device = await t.createDevice()
    const login = { clientId: 'present-no-subs', username: device.id, password: device.token, clean: false }
    const first = await raw(login)
    assert.equal(first.returnCode, 0)
    assert.equal(first.client.packets.length, 0)
    first.client.destroy()
    await eventually(async () => (await t.api<{ connected: boolean }>('GET', '/v1/sessions/present-no-subs')).body.connected === false, 5000, 'offline')
    const again = await RawMqttClient.open(port())
    raws.push(again)
    again.send(connectPacket(login))
    const connack = await again.next(PacketType.CONNACK)
    assert.equal(connack.body[0], 1, 'session present flag')
    assert.equal(connack.body[1], 0)
    // a clean start has none
    const clean = await RawMqttClient.open(port())
    raws.push(clean)
    clean.send(connectPacket({ ...login, clientId: 'present-clean', clean: true }))
    assert.equal((await clean.next(PacketType.CONNACK)).body[0], 0)
  })
})

describe('a client id belongs to a device', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(() => t.stop())

  it("refuses a device that uses another device's id as its client id; the owner connects as usual", async () => {
    const victim = await t.createDevice()
    const squatter = await t.createDevice()
    const before = await rejectedCount(t.api, 'client_id_reserved')
    await assert.rejects(
      connectClient(t.mqttUrl, { clientId: victim.id, username: squatter.id, password: squatter.token, clean: false }),
      (e: Error & { code?: number }) => e.code === 5
    )
    assert.equal((await rejectedCount(t.api, 'client_id_reserved')) - before, 1)
    const owner = await t.connect({ clientId: victim.id, username: victim.id, password: victim.token })
    assert.equal(owner.connected, true)
  })

  it('lets a device take its own id back over CoAP from an MQTT client of another device holding it', async () => {
    const device = await t.createDevice()
    const coapPort = t.hub.address.coap!.port
    const operator = await connectClient(t.mqttUrl, { clientId: device.id, clean: false, ...superuserLogin() })
    const operatorClosed = new Promise<void>((resolve) => operator.once('close', () => resolve()))
    const answer = await coapCall(coapPort, 'POST', '/mqtt/connection', `clientid=${device.id}&password=${device.token}`)
    assert.equal(answer.code, '2.01')
    await operatorClosed
    const session = (await t.api<{ deviceId: string; protocol: string }>('GET', `/v1/sessions/${device.id}`)).body
    assert.deepEqual([session.deviceId, session.protocol], [device.id, 'coap'])
    operator.end(true)
  })

  it('lets a device take its own id back from a superuser holding it: the holder is closed and its session discarded', async () => {
    const device = await t.createDevice()
    const operator = await connectClient(t.mqttUrl, { clientId: device.id, clean: false, ...superuserLogin() })
    await operator.subscribeAsync('ops/#', { qos: 1 })
    const operatorClosed = new Promise<void>((resolve) => operator.once('close', () => resolve()))
    const owner = await t.connect({ clientId: device.id, username: device.id, password: device.token, clean: false })
    await operatorClosed
    const session = (await t.api<{ deviceId: string; topics: unknown[]; connected: boolean }>('GET', `/v1/sessions/${device.id}`)).body
    assert.equal(session.deviceId, device.id)
    assert.equal(session.connected, true)
    assert.deepEqual(session.topics, [], "the superuser's topics are not the device's")
    assert.equal(owner.connected, true)
    operator.end(true)
  })
})

describe('connections and their timing', () => {
  // two hubs: idle sockets held for the connection limit must outlive the other's short connect timeout
  let t: TestHub
  let full: TestHub
  const sockets: Socket[] = []
  before(async () => {
    t = await startTestHub({ connectTimeout: 300 })
    full = await startTestHub({ maxConnections: 4 })
  })
  after(async () => {
    for (const s of sockets) s.destroy()
    await Promise.all([t.stop(), full.stop()])
  })

  function open(hub: TestHub = t): Promise<{ socket: Socket; closed: Promise<void> }> {
    return new Promise((resolve, reject) => {
      const socket = tcpConnect({ port: Number(new URL(hub.mqttUrl).port), host: '127.0.0.1' }, () => resolve({ socket, closed }))
      const closed = new Promise<void>((r) => socket.once('close', () => r()))
      socket.on('error', () => undefined)
      socket.once('error', reject)
      sockets.push(socket)
    })
  }

  it('closes a connection that sends no CONNECT in time, counted as connect_timeout (not malformed)', async () => {
    const timeouts = await rejectedCount(t.api, 'connect_timeout')
    const malformed = await rejectedCount(t.api, 'malformed_packet')
    const { closed } = await open()
    await closed
    assert.equal((await rejectedCount(t.api, 'connect_timeout')) - timeouts, 1)
    assert.equal(await rejectedCount(t.api, 'malformed_packet'), malformed)
  })

  it('closes connections beyond maxConnections as they are accepted; the API and those inside go on', async () => {
    const held = await Promise.all([open(full), open(full), open(full), open(full)])
    const before = await rejectedCount(full.api, 'too_many_connections')
    const extra = await open(full)
    await extra.closed
    assert.equal((await rejectedCount(full.api, 'too_many_connections')) - before, 1)
    assert.equal((await full.api('GET', '/healthz')).status, 200)
    // still ready (the API and the connected devices are served), and saying why new ones are refused
    const ready = await full.api<{ status: string; checks: { mqtt: { ok: boolean; detail?: string } } }>('GET', '/readyz', undefined, null)
    assert.deepEqual([ready.status, ready.body.checks.mqtt], [200, { ok: true, detail: 'at its connection limit (4): new MQTT connections are refused' }])
    // one leaves: the next one is let in
    held[0].socket.destroy()
    await held[0].closed
    await eventually(async () => {
      const room = await full.api<{ checks: { mqtt: { ok: boolean; detail?: string } } }>('GET', '/readyz', undefined, null)
      return room.body.checks.mqtt.detail === undefined
    }, 5000, 'the limit no longer reported once the hub saw the connection close')
    const device = await full.createDevice()
    await eventually(async () => {
      const c = await connectClient(full.mqttUrl, { clientId: 'after-full', username: device.id, password: device.token }).catch(() => undefined)
      await c?.endAsync()
      return c !== undefined
    }, 5000, 'a connection once one left')
  })
})

describe('idle connections of one address', () => {
  let t: TestHub
  const sockets: Socket[] = []
  before(async () => {
    t = await startTestHub({ maxPendingConnectionsPerAddress: 2 })
  })
  after(async () => {
    for (const s of sockets) s.destroy()
    await t.stop()
  })

  function openFrom(localAddress: string): Promise<{ socket: Socket; closed: Promise<void> }> {
    return new Promise((resolve, reject) => {
      const socket = tcpConnect({ port: Number(new URL(t.mqttUrl).port), host: '127.0.0.1', localAddress }, () => resolve({ socket, closed }))
      const closed = new Promise<void>((r) => socket.once('close', () => r()))
      socket.on('error', () => undefined)
      socket.once('error', reject)
      sockets.push(socket)
    })
  }

  it('are held to maxPendingConnectionsPerAddress until they send CONNECT; other addresses go on', async () => {
    const before = await rejectedCount(t.api, 'too_many_pending_connections')
    const [first] = await Promise.all([openFrom('127.0.0.9'), openFrom('127.0.0.9')])
    const third = await openFrom('127.0.0.9')
    await third.closed
    assert.equal((await rejectedCount(t.api, 'too_many_pending_connections')) - before, 1)
    // another host is not held back by this one
    const device = await t.createDevice()
    const elsewhere = await RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: 'pending-other', username: device.id, password: device.token }, '127.0.0.10')
    assert.equal(elsewhere.returnCode, 0)
    elsewhere.client.destroy()
    // one of the idle ones sends its CONNECT: it is no longer pending, and a new one may come (its
    // own CONNACK proves it was let in; a refused one is closed before it, and tried again)
    first.socket.write(connectPacket({ clientId: 'pending-first', username: device.id, password: device.token }))
    const next = await eventually(
      () => RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: 'pending-next', username: device.id, password: device.token }, '127.0.0.9'),
      10_000,
      'a new connection from the address once one sent CONNECT'
    )
    assert.equal(next.returnCode, 0)
    next.client.destroy()
  })
})

describe('a CONNECT followed by a flood', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(() => t.stop())

  it('closes a client that sends 1,000 PINGREQs behind its CONNECT in one write, and counts it', async () => {
    const device = await t.createDevice()
    const before = await rejectedCount(t.api, 'packets_before_connack')
    const client = await RawMqttClient.open(Number(new URL(t.mqttUrl).port))
    client.send(Buffer.concat([connectPacket({ clientId: 'ping-flood', username: device.id, password: device.token }), ...Array.from({ length: 1000 }, () => PINGREQ)]))
    await client.closed
    assert.equal((await rejectedCount(t.api, 'packets_before_connack')) - before, 1)
    const polite = await RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: 'ping-polite', username: device.id, password: device.token })
    assert.equal(polite.returnCode, 0)
    await polite.client.ping()
    polite.client.destroy()
  })
})

describe('a device sending faster than its rate', () => {
  // low rates, so that a test sends a few seconds' worth in one write
  const MESSAGE_RATE = 100
  const BYTE_RATE = 256 * 1024
  let t: TestHub
  let watcher: MqttClient
  /** Every message the superuser watcher heard: its topic, payload, and when (performance.now()). */
  const heard: { topic: string; payload: string; at: number }[] = []
  const heardOn = (topic: string) => heard.filter((m) => m.topic === topic)

  before(async () => {
    t = await startTestHub({ maxMessageRate: MESSAGE_RATE, maxByteRate: BYTE_RATE })
    watcher = await t.connect({ clientId: 'rate-watcher', ...superuserLogin() })
    watcher.on('message', (topic, payload) => heard.push({ topic, payload: payload.length > 64 ? `${payload.length} bytes` : payload.toString(), at: performance.now() }))
    await watcher.subscribeAsync('#', { qos: 0 })
  })
  after(() => t.stop())

  const held = (limit: string) => metricValue(t.api, `iothub_mqtt_reads_held_total{limit="${limit}"}`)

  it('is read at its message rate: nothing refused or lost, in order, while a neighbour is heard at once', async () => {
    const flooder = await t.createDevice()
    const neighbour = await t.createDevice()
    const neighbourClient = await t.connect({ clientId: 'rate-neighbour', username: neighbour.id, password: neighbour.token })
    const { client } = await RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: 'rate-flooder', username: flooder.id, password: flooder.token })
    const heldBefore = await held('messages')
    const COUNT = 5 * MESSAGE_RATE
    const sent = performance.now()
    // five seconds' worth in one write: a second's worth passes at once, the rest at the rate
    client.send(Buffer.concat(Array.from({ length: COUNT }, (_, i) => publishPacket({ topic: 'flood', payload: String(i) }))))
    await neighbourClient.publishAsync('hello', 'hi', { qos: 1 })
    await eventually(() => heardOn(`${neighbour.id}/hello`).length === 1, 10_000, "the neighbour's message")
    // the neighbour's message did not wait behind the flood
    assert.ok(heardOn(`${flooder.id}/flood`).length < COUNT, 'the neighbour was heard only after the whole flood')
    await eventually(() => heardOn(`${flooder.id}/flood`).length === COUNT, 30_000, 'every flood message')
    const flood = heardOn(`${flooder.id}/flood`)
    assert.deepEqual(flood.map((m) => m.payload), Array.from({ length: COUNT }, (_, i) => String(i)))
    // no faster than the rate allows (a busy machine only slows it): a second's worth starts in each
    // second, so the fifth second's worth starts in the fifth second from the one it was sent in —
    // at least three seconds after it was sent
    const tookMs = flood.at(-1)!.at - sent
    assert.ok(tookMs >= 3000, `the flood took ${tookMs.toFixed(0)} ms`)
    assert.ok((await held('messages')) > heldBefore)
    // held, not refused: the connection is still there
    assert.equal(client.isClosed, false)
    await client.ping()
    client.destroy()
  })

  it('is read at its byte rate too: a SUBSCRIBE behind large publishes waits its turn', async () => {
    const device = await t.createDevice()
    const { client } = await RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: 'rate-bytes', username: device.id, password: device.token })
    const heldBefore = await held('bytes')
    const big = Buffer.alloc(64 * 1024, 0x62)
    const COUNT = 12 // 768 KiB and their headers
    const sent = performance.now()
    client.send(Buffer.concat(Array.from({ length: COUNT }, () => publishPacket({ topic: 'big', payload: big }))))
    // behind the publishes, its SUBSCRIBE waits its turn too
    client.send(subscribePacket(7, [{ topic: 'after', qos: 0 }]))
    const suback = await client.next(PacketType.SUBACK, 30_000)
    const subackMs = performance.now() - sent
    assert.equal(subackGranted(suback).messageId, 7)
    await eventually(() => heardOn(`${device.id}/big`).length === COUNT, 30_000, 'every large message')
    // just over three seconds' worth of bytes went before it: it starts in the fourth second
    assert.ok(COUNT * (big.length + 9) > 3 * BYTE_RATE)
    assert.ok(subackMs >= 2000, `SUBACK after ${subackMs.toFixed(0)} ms`)
    assert.ok((await held('bytes')) > heldBefore)
    client.destroy()
  })

  it('answers a CoAP device over its rate 4.29 with the seconds to wait, and routes nothing it refused', async () => {
    const device = await t.createDevice()
    const coapPort = t.hub.address.coap!.port
    const connected = await coapCall(coapPort, 'POST', '/mqtt/connection', `clientid=${device.id}&username=${device.id}&password=${device.token}`)
    assert.equal(connected.code, '2.01')
    const query = `clientid=${device.id}&token=${connected.payload}`
    const refusedBefore = await rejectedCount(t.api, 'rate_limited')
    // ten seconds' worth at once: some are refused unless the hub took over nine seconds to read them
    const answers = await Promise.all(Array.from({ length: 10 * MESSAGE_RATE }, (_, i) => coapCall(coapPort, 'POST', '/ps/coap-flood', query, String(i))))
    const passed = answers.filter((a) => a.code === '2.04')
    const refused = answers.filter((a) => a.code === '4.29')
    assert.equal(passed.length + refused.length, answers.length, `answers: ${[...new Set(answers.map((a) => a.code))].join(', ')}`)
    assert.ok(passed.length >= MESSAGE_RATE, `a second's worth passes: ${passed.length}`)
    assert.ok(refused.length > 0)
    for (const answer of refused) assert.ok(answer.maxAge !== undefined && answer.maxAge >= 1, `Max-Age ${answer.maxAge}`)
    assert.equal((await rejectedCount(t.api, 'rate_limited')) - refusedBefore, refused.length)
    // each publish is routed before it is answered: what the watcher hears is what passed
    await eventually(() => heardOn(`${device.id}/coap-flood`).length === passed.length, 10_000, 'the publishes that passed')
    assert.equal(heardOn(`${device.id}/coap-flood`).length, passed.length)
  })

  it("leaves a superuser's connection alone: an operator's tool is never held", async () => {
    const heldBefore = (await held('messages')) + (await held('bytes'))
    const tool = await t.connect({ clientId: 'rate-tool', ...superuserLogin() })
    const COUNT = 3 * MESSAGE_RATE
    await Promise.all(Array.from({ length: COUNT }, (_, i) => tool.publishAsync('ops/broadcast', String(i), { qos: 0 })))
    await eventually(() => heardOn('ops/broadcast').length === COUNT, 10_000, "the tool's messages")
    assert.equal((await held('messages')) + (await held('bytes')), heldBefore)
  })
})

describe('a slow consumer', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub({ maxPacketSize: 128 * 1024, maxInflightBytes: 256 * 1024, slowConsumerTimeout: 60_000 })
  })
  after(() => t.stop())

  it('is closed once too much waits for its socket, while another device keeps getting its messages', async (ctx) => {
    const stuck = await t.createDevice()
    const neighbour = await t.createDevice()
    const { client: sink, returnCode } = await RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: 'stuck', username: stuck.id, password: stuck.token })
    assert.equal(returnCode, 0)
    // paused, it would never see the hub's FIN: destroyed whatever the test's outcome
    ctx.after(() => sink.destroy())
    sink.send(subscribePacket(1, [{ topic: 'flood', qos: 0 }]))
    await sink.next(PacketType.SUBACK)
    sink.socket.pause() // reads nothing more: the kernel's buffers fill, then the hub's
    const other = await t.connect({ clientId: 'neighbour', username: neighbour.id, password: neighbour.token })
    let heard = 0
    other.on('message', () => heard++)
    await other.subscribeAsync('news', { qos: 1 })
    const before = await rejectedCount(t.api, 'slow_consumer')
    const publisher = await t.connect({ clientId: 'flooder', ...superuserLogin() })
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    // 400 × 64 KiB: far more than the loopback's buffers hold
    for (let i = 0; i < 400; i++) await publisher.publishAsync(`${stuck.id}/flood`, chunk, { qos: 0 })
    for (let i = 0; i < 20; i++) await publisher.publishAsync(`${neighbour.id}/news`, `n${i}`, { qos: 1 })
    await eventually(() => heard === 20, 10_000, "the neighbour's messages")
    await eventually(async () => (await t.api('GET', '/v1/sessions/stuck')).status === 404, 10_000, 'the slow consumer closed')
    assert.equal((await rejectedCount(t.api, 'slow_consumer')) - before, 1)
    const disconnects = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(disconnects, /^iothub_disconnects_total\{protocol="mqtt",reason="slow_consumer"\} 1$/m)
    sink.destroy()
  })
})

describe('wills the previous run left', () => {
  it("publishes a lost client's will only inside its namespace, as a live client's", async () => {
    const dataDir = tempDir('iothub-wills-rules-')
    const lostWill = (clientId: string, topic: string, mountpoint?: string) => ({
      op: 'will.put' as const,
      clientId,
      packet: encodePacket({ cmd: 'publish', topic, payload: Buffer.from(`${clientId} is gone`), qos: 0, retain: true, brokerId: 'previous#run', clientId, ...(mountpoint !== undefined ? { mountpoint } : {}) })
    })
    // as a crash leaves them: one will in its device's namespace, one a device aimed at another
    // device, one stored before wills carried their namespace on the broker's own `$SYS/`
    const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000 })
    await store.load()
    await store.commit([lostWill('good', 'dev-a/status', 'dev-a/'), lostWill('aimed', 'dev-b/status', 'dev-a/'), lostWill('legacy', '$SYS/broker/uptime')])
    await store.close()

    const t = await startTestHub({}, dataDir)
    try {
      const retained = async (topic: string) => {
        // Aedes' persistence is public in its JavaScript, not in its types
        const { persistence } = t.hub.broker!.aedes as unknown as { persistence: { createRetainedStream(pattern: string): AsyncIterable<unknown> } }
        const stream = persistence.createRetainedStream(topic)
        const found: unknown[] = []
        for await (const packet of stream) found.push(packet)
        return found.length
      }
      assert.equal(await retained('dev-a/status'), 1)
      assert.equal(await retained('dev-b/status'), 0)
      assert.equal(await retained('$SYS/broker/uptime'), 0)
      assert.equal(await rejectedCount(t.api, 'outside_namespace'), 2)
    } finally {
      await t.stop()
    }
  })
})

describe('a device connecting in a loop', () => {
  let t: TestHub
  before(async () => {
    // a ban long enough that a loaded machine still makes the checks below within it
    t = await startTestHub({ maxConnectsPerDevice: 5, flappingBan: 5000 })
  })
  after(() => t.stop())

  it('is refused for the ban once over its connects a minute, over MQTT and CoAP; other devices and superusers are not', async () => {
    const flapper = await t.createDevice()
    const neighbour = await t.createDevice()
    const login = { clientId: `flap-${flapper.id}`, username: flapper.id, password: flapper.token }
    const before = await rejectedCount(t.api, 'flapping')
    for (let i = 0; i < 5; i++) await (await connectClient(t.mqttUrl, login)).endAsync()
    await assert.rejects(connectClient(t.mqttUrl, login), /Not authorized/i)
    assert.equal((await rejectedCount(t.api, 'flapping')) - before, 1)
    // the whole device is held, whatever the client id and protocol
    await assert.rejects(connectClient(t.mqttUrl, { ...login, clientId: `flap-other-${flapper.id}` }), /Not authorized/i)
    const coap = await coapCall(t.hub.address.coap!.port, 'POST', '/mqtt/connection', `clientid=${flapper.id}&password=${flapper.token}`)
    // with what is left of the ban (at most its 5 s) as its Max-Age (RFC 8516)
    assert.equal(coap.code, '4.29')
    assert.ok(coap.maxAge !== undefined && coap.maxAge >= 1 && coap.maxAge <= 5, `Max-Age ${coap.maxAge}`)

    // nobody else is: another device, and the operators' tools however often they connect
    await (await connectClient(t.mqttUrl, { clientId: `flap-${neighbour.id}`, username: neighbour.id, password: neighbour.token })).endAsync()
    for (let i = 0; i < 8; i++) await (await connectClient(t.mqttUrl, { clientId: 'flap-operator', ...superuserLogin() })).endAsync()

    // the ban is over: connected again (the refused attempts meanwhile are not counted)
    const back = await eventually<MqttClient | false>(() => connectClient(t.mqttUrl, login).catch(() => false), 20_000, 'the device let in again')
    await back.endAsync()
  })
})

describe('wrong device logins', () => {
  // a first wait of 5 s, not 1: what each test checks while a key is throttled, a loaded machine
  // still does within it
  const FIRST_WAIT_MS = 5000
  let t: TestHub
  const raws: RawMqttClient[] = []
  before(async () => {
    t = await startTestHub({ loginFailuresAllowed: 2, loginBackoffFirst: FIRST_WAIT_MS, loginBackoffMax: FIRST_WAIT_MS })
  })
  after(async () => {
    for (const r of raws) r.destroy()
    await t.stop()
  })

  async function login(deviceId: string, password: string, from: string): Promise<number> {
    // a login held for its device id's wait answers once the wait is over
    const { client, returnCode } = await RawMqttClient.connect(Number(new URL(t.mqttUrl).port), { clientId: `login-${raws.length}`, username: deviceId, password }, from, FIRST_WAIT_MS + 10_000)
    raws.push(client)
    return returnCode
  }

  it('refuses an address that guessed too often, unseen, right token included; other addresses go on', async () => {
    const device = await t.createDevice()
    const before = await rejectedCount(t.api, 'login_throttled')
    for (let i = 0; i < 3; i++) assert.equal(await login(device.id, 'guess', '127.0.0.3'), 5)
    // throttled: the right token from that address is not even looked at
    assert.equal(await login(device.id, device.token, '127.0.0.3'), 5)
    assert.equal((await rejectedCount(t.api, 'login_throttled')) - before, 1)
    const other = await t.createDevice()
    assert.equal(await login(other.id, other.token, '127.0.0.4'), 0)
    // the wait is over: the address may log in again
    await eventually(async () => (await login(device.id, device.token, '127.0.0.3')) === 0, FIRST_WAIT_MS + 10_000, 'the address let in again')
  })

  it('holds logins to a device others guessed at, and lets the device itself in once the wait is over', async () => {
    const device = await t.createDevice()
    assert.equal(await login(device.id, 'guess', '127.0.0.5'), 5)
    assert.equal(await login(device.id, 'guess', '127.0.0.6'), 5)
    // the third wrong guess starts the device id's first wait: a lower bound a slow machine only lengthens
    const started = performance.now()
    assert.equal(await login(device.id, 'guess', '127.0.0.7'), 5)
    assert.equal(await login(device.id, device.token, '127.0.0.8'), 0, 'the device is let in, not locked out')
    assert.ok(performance.now() - started >= FIRST_WAIT_MS - 100, 'its login was held for the wait of its device id')
  })

  it('answers a CoAP device whose address guessed too often 4.29', async () => {
    const device = await t.createDevice()
    const coapPort = t.hub.address.coap!.port
    // from 127.0.0.1: the CoAP helper's own address
    for (let i = 0; i < 3; i++) assert.equal((await coapCall(coapPort, 'POST', '/mqtt/connection', `clientid=${device.id}&password=guess`)).code, '4.01')
    const throttled = await coapCall(coapPort, 'POST', '/mqtt/connection', `clientid=${device.id}&password=${device.token}`)
    assert.equal(throttled.code, '4.29')
    // the address' wait (its first) as Max-Age: the whole seconds left of it
    assert.ok(throttled.maxAge !== undefined && throttled.maxAge >= 1 && throttled.maxAge <= FIRST_WAIT_MS / 1000, `Max-Age ${String(throttled.maxAge)}`)
  })
})
