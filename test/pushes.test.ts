/**
 * Downstream pushes and upstream data with real mqtt.js devices: an API change reaches exactly
 * the sessions holding a subscription entity for it; what a device publishes on its property
 * topics changes its entity, is not echoed back to it, and is refused (not stored, not routed,
 * connection kept) when the payload is not what the topic expects.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { publishPacket, RawMqttClient } from './helpers/raw-mqtt.js'

interface Received {
  topic: string
  payload: Buffer
}

function collect(client: MqttClient): Received[] {
  const received: Received[] = []
  client.on('message', (topic, payload) => received.push({ topic, payload }))
  return received
}

/** The value of one sample on /metrics (0 when absent). */
async function metric(t: TestHub, sample: string): Promise<number> {
  const text = (await t.api<string>('GET', '/metrics', undefined, null)).body
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  return line === undefined ? 0 : Number(line.slice(sample.length + 1))
}

const settle = () => new Promise((r) => setTimeout(r, 150))

interface ApiDevice {
  properties: { attributes: Record<string, unknown>; telemetry: Record<string, { value: unknown; ts: number }>; commands: Record<string, Record<string, unknown>>; rawData: Record<string, unknown> }
}

describe('downstream pushes', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(async () => {
    await t.stop()
  })

  const device = async (clientId: string, topics: string[] = [], extra: Record<string, unknown> = {}) => {
    const d = await t.createDevice()
    const client = await t.connect({ clientId, username: d.id, password: d.token, ...extra })
    const received = collect(client)
    if (topics.length > 0) await client.subscribeAsync(topics, { qos: 1 })
    return { ...d, client, received }
  }

  it('pushes an attribute change to exactly the sessions that subscribed to it', async () => {
    const subscribed = await device('push-attr', ['v1/devices/me/attributes'])
    const wildcard = await device('push-wild', ['v1/devices/me/#'])
    const telemetryOnly = await device('push-tele', ['v1/devices/me/telemetry'])
    const silent = await device('push-silent')

    const patch = await t.api<{ attributes: Record<string, unknown>; pushedTo: string[] }>('PATCH', `/v1/devices/${subscribed.id}/attributes`, { colour: 'red', level: 3 })
    assert.equal(patch.status, 200)
    assert.deepEqual(patch.body.attributes, { colour: 'red', level: 3 })
    assert.deepEqual(patch.body.pushedTo, ['push-attr'])
    await eventually(() => subscribed.received.length === 1, 3000, 'push delivered')
    assert.equal(subscribed.received[0]!.topic, 'v1/devices/me/attributes', 'the device sees its own topic, not the mounted one')
    assert.deepEqual(JSON.parse(subscribed.received[0]!.payload.toString()), { colour: 'red', level: 3 })

    // a second change merges; the device receives only what changed
    await t.api('PATCH', `/v1/devices/${subscribed.id}/attributes`, { level: 4 })
    await eventually(() => subscribed.received.length === 2, 3000, 'second push')
    assert.deepEqual(JSON.parse(subscribed.received[1]!.payload.toString()), { level: 4 })
    const entity = await t.api<ApiDevice>('GET', `/v1/devices/${subscribed.id}`)
    assert.deepEqual(entity.body.properties.attributes, { colour: 'red', level: 4 })

    // a wildcard subscriber of its own device receives its own device's changes
    const wild = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${wildcard.id}/attributes`, { on: true })
    assert.deepEqual(wild.body.pushedTo, ['push-wild'])
    await eventually(() => wildcard.received.length === 1, 3000, 'wildcard push')

    // devices without a matching subscription entity receive nothing
    const none = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${telemetryOnly.id}/attributes`, { x: 1 })
    assert.deepEqual(none.body.pushedTo, [])
    await t.api('PATCH', `/v1/devices/${silent.id}/attributes`, { x: 1 })
    await settle()
    assert.deepEqual(telemetryOnly.received, [])
    assert.deepEqual(silent.received, [])
    assert.equal(subscribed.received.length, 2, 'no other device’s change reached the first one')
    assert.equal(wildcard.received.length, 1)
  })

  it('pushes the PATCH body as the JSON text it came in, without a byte order mark, and answers the stored attributes', async () => {
    const d = await device('push-text', ['v1/devices/me/attributes'])
    await t.api('PATCH', `/v1/devices/${d.id}/attributes`, { kept: 1 })
    await eventually(() => d.received.length === 1, 3000, 'first push')
    const text = '{ "name": "caf\u00e9 ☕",\n  "nested": { "n": 1.50 }, "list": [1, 2] }'
    const answer = await fetch(`${t.httpUrl}/v1/devices/${d.id}/attributes`, {
      method: 'PATCH',
      headers: { authorization: BASIC_ADMIN, 'content-type': 'application/json' },
      body: `\ufeff${text}`
    })
    assert.equal(answer.status, 200)
    assert.match(answer.headers.get('content-type') ?? '', /^application\/json/)
    const patch = { name: 'café ☕', nested: { n: 1.5 }, list: [1, 2] }
    assert.deepEqual(await answer.json(), { attributes: { kept: 1, ...patch }, pushedTo: ['push-text'] })
    await eventually(() => d.received.length === 2, 3000, 'second push')
    assert.equal(d.received[1]!.payload.toString('utf8'), text, 'the body as sent, less its byte order mark')
    assert.deepEqual(JSON.parse(d.received[1]!.payload.toString('utf8')), patch)
  })

  it('sends a command, and records the device’s answer on the entity', async () => {
    const d = await device('push-cmd', ['v1/devices/me/commands'])
    const sent = await t.api<{ command: { id: string; status: string }; pushedTo: string[] }>('POST', `/v1/devices/${d.id}/commands`, { name: 'reboot', params: { delay: 5 } })
    assert.equal(sent.status, 200)
    assert.deepEqual(sent.body.pushedTo, ['push-cmd'])
    assert.equal(sent.body.command.status, 'sent')
    await eventually(() => d.received.length === 1, 3000, 'command delivered')
    assert.equal(d.received[0]!.topic, 'v1/devices/me/commands')
    assert.deepEqual(JSON.parse(d.received[0]!.payload.toString()), { id: sent.body.command.id, name: 'reboot', params: { delay: 5 } })

    await d.client.publishAsync('v1/devices/me/command/response', JSON.stringify({ id: sent.body.command.id, result: { ok: true } }), { qos: 1 })
    const entity = await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)
    const command = entity.body.properties.commands[sent.body.command.id]!
    assert.equal(command.status, 'answered')
    assert.deepEqual(command.result, { ok: true })
    assert.equal(typeof command.respondedAt, 'number')

    const again = await t.api('POST', `/v1/devices/${d.id}/commands`, { name: 'reboot', id: sent.body.command.id })
    assert.equal(again.status, 409, 'a command id is sent once')
    assert.equal((await t.api('POST', `/v1/devices/${d.id}/commands`, { params: {} })).status, 400)
  })

  it('passes raw bytes through to the subscribed device', async () => {
    const d = await device('push-raw', ['v1/devices/me/raw'])
    const bytes = Buffer.from([0x00, 0xff, 0x10, 0x80])
    const response = await fetch(`${t.httpUrl}/v1/devices/${d.id}/raw`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('admin:public').toString('base64')}`, 'content-type': 'application/octet-stream' },
      body: bytes
    })
    assert.equal(response.status, 200)
    assert.deepEqual(await response.json(), { bytes: 4, pushedTo: ['push-raw'] })
    await eventually(() => d.received.length === 1, 3000, 'raw delivered')
    assert.deepEqual(d.received[0]!.payload, bytes)
    const rawData = (await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties.rawData
    assert.deepEqual({ ...rawData, timestamp: 0 }, { data: bytes.toString('base64'), encoding: 'base64', timestamp: 0, topic: `${d.id}/v1/devices/me/raw` })
  })

  it('delivers a push at the QoS the device was granted', async () => {
    const d = await device('push-qos0')
    const packets: { qos: number }[] = []
    d.client.on('message', (_topic, _payload, packet) => packets.push(packet))
    await d.client.subscribeAsync('v1/devices/me/attributes', { qos: 0 })
    await t.api('PATCH', `/v1/devices/${d.id}/attributes`, { q: 0 })
    await eventually(() => packets.length === 1, 3000, 'push delivered')
    assert.equal(packets[0]!.qos, 0, 'pushed at QoS 1, granted 0')
  })

  it('treats command ids as ids, even those an object already has', async () => {
    const d = await device('push-cmd-ids', ['v1/devices/me/commands'])
    assert.equal((await t.api('POST', `/v1/devices/${d.id}/commands`, { name: 'first' })).status, 200)
    for (const id of ['constructor', '__proto__', 'toString']) {
      const sent = await t.api<{ command: { id: string } }>('POST', `/v1/devices/${d.id}/commands`, { name: 'odd', id })
      assert.equal(sent.status, 200, `command id ${id}`)
      assert.equal(sent.body.command.id, id)
    }
    await d.client.publishAsync('v1/devices/me/command/response', JSON.stringify({ id: 'hasOwnProperty', result: 1 }), { qos: 1 })
    await d.client.publishAsync('v1/devices/me/command/response', JSON.stringify({ id: '__proto__', result: 'ok' }), { qos: 1 })
    const commands = (await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties.commands
    assert.deepEqual(Object.keys(commands).filter((k) => k !== Object.keys(commands)[0]).sort(), ['__proto__', 'constructor', 'toString'])
    const byId = new Map(Object.entries(commands))
    assert.equal(byId.get('__proto__')!.status, 'answered')
    assert.equal(byId.get('constructor')!.status, 'sent')
    assert.ok(!Object.hasOwn(commands, 'hasOwnProperty'), 'a response to a command never sent stores nothing')
  })

  it('stores nothing for a command id already sent', async () => {
    const d = await t.createDevice({ owner: 'o' })
    assert.equal((await t.api('POST', `/v1/devices/${d.id}/commands`, { name: 'x', id: 'once' })).status, 200)
    const read = async () => (await t.api<{ properties: { sysField: { _updatedAt: number } } }>('GET', `/apis/core/v1/entities/${d.id}?type=device`)).body.properties.sysField._updatedAt
    const before = await read()
    await new Promise((r) => setTimeout(r, 5))
    assert.equal((await t.api('POST', `/v1/devices/${d.id}/commands`, { name: 'x', id: 'once' })).status, 409)
    assert.equal(await read(), before, 'the refused command wrote nothing')
  })

  it('answers 404 for an unknown device and 400 for bodies that are not what the route expects', async () => {
    assert.equal((await t.api('PATCH', '/v1/devices/no-such-device/attributes', { a: 1 })).status, 404)
    assert.equal((await t.api('POST', '/v1/devices/no-such-device/commands', { name: 'x' })).status, 404)
    const raw = await fetch(`${t.httpUrl}/v1/devices/no-such-device/raw`, { method: 'POST', headers: { authorization: BASIC_ADMIN, 'content-type': 'application/octet-stream' }, body: 'bytes' })
    assert.equal(raw.status, 404)
    assert.deepEqual(await t.hub.store.readProperties('no-such-device'), [], 'nothing stored for a device that is not registered')
    const d = await t.createDevice()
    assert.equal((await t.api('PATCH', `/v1/devices/${d.id}/attributes`, [1, 2])).status, 400)
    assert.equal((await t.api('PATCH', `/v1/devices/${d.id}/attributes`, {})).status, 400)
    assert.equal((await t.api('PATCH', `/v1/devices/${d.id}/attributes`, { big: 'x'.repeat(300 * 1024) })).status, 400, 'attributes are bounded')
    assert.deepEqual((await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties.attributes, {}, 'a refused change stores nothing')
  })

  it('queues a push for a persistent device offline, and delivers it on its return', async () => {
    const d = await t.createDevice()
    const options = { clientId: 'push-offline', clean: false, username: d.id, password: d.token }
    const first = await t.connect(options)
    await first.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await first.endAsync()
    await eventually(async () => (await t.api<{ connected: boolean }>('GET', '/v1/sessions/push-offline')).body.connected === false, 3000, 'offline')

    const pushed = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${d.id}/attributes`, { firmware: '2.0' })
    assert.deepEqual(pushed.body.pushedTo, ['push-offline'], 'the offline session still holds its subscription entity')

    const back = await t.connect({ ...options })
    const received = collect(back)
    await eventually(() => received.length === 1, 5000, 'queued push delivered on return')
    assert.equal(received[0]!.topic, 'v1/devices/me/attributes')
    assert.deepEqual(JSON.parse(received[0]!.payload.toString()), { firmware: '2.0' })
  })
})

describe('upstream data and namespaces', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(async () => {
    await t.stop()
  })

  it('merges attributes, keeps telemetry with timestamps and rawData as tKeel core has it', async () => {
    const d = await t.createDevice()
    const client = await t.connect({ clientId: 'up-1', username: d.id, password: d.token })
    await client.publishAsync('v1/devices/me/attributes', JSON.stringify({ a: 1, b: 'x' }), { qos: 1 })
    await client.publishAsync('v1/devices/me/attributes', JSON.stringify({ b: 'y' }), { qos: 1 })
    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ temp: 21.5 }), { qos: 1 })
    await client.publishAsync('v1/devices/me/raw', JSON.stringify({ msg: 'iothub' }), { qos: 1 })
    // QoS 1: the PUBACK comes once the change is stored
    const entity = (await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties
    assert.deepEqual(entity.attributes, { a: 1, b: 'y' })
    assert.equal(entity.telemetry.temp!.value, 21.5)
    assert.ok(entity.telemetry.temp!.ts > Date.now() * 1e6 - 60e9 && entity.telemetry.temp!.ts <= Date.now() * 1e6, 'ts is nanoseconds, now')
    assert.deepEqual(entity.rawData.data, { msg: 'iothub' })
    assert.equal(entity.rawData.topic, `${d.id}/v1/devices/me/raw`)
    assert.equal(typeof entity.rawData.timestamp, 'number')
  })

  it('does not echo a device’s change back to it, but a superuser watching the fleet sees it', async () => {
    const d = await t.createDevice()
    const client = await t.connect({ clientId: 'up-echo', username: d.id, password: d.token })
    const own = collect(client)
    await client.subscribeAsync('v1/devices/me/#', { qos: 1 })
    const watcher = await t.connect({ clientId: 'fleet-watch', username: 'admin', password: 'public' })
    const watched = collect(watcher)
    await watcher.subscribeAsync('+/v1/devices/me/telemetry', { qos: 1 })

    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ rpm: 900 }), { qos: 1 })
    await client.publishAsync('v1/devices/me/other', 'plain MQTT', { qos: 1 })
    await eventually(() => watched.length === 1 && own.length === 1, 3000, 'watcher got telemetry, device got its non-property message')
    assert.equal(watched[0]!.topic, `${d.id}/v1/devices/me/telemetry`)
    assert.deepEqual(own.map((m) => m.topic), ['v1/devices/me/other'], 'telemetry was not echoed; an ordinary topic is')
  })

  it('refuses a payload that is not what the topic expects: counted, nothing stored or routed, connection kept', async () => {
    const d = await t.createDevice()
    const client = await t.connect({ clientId: 'up-bad', username: d.id, password: d.token })
    const watcher = await t.connect({ clientId: 'bad-watch', username: 'admin', password: 'public' })
    const watched = collect(watcher)
    await watcher.subscribeAsync(`${d.id}/#`, { qos: 1 })
    const before = await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)

    await client.publishAsync('v1/devices/me/attributes', 'not json', { qos: 1 })
    await client.publishAsync('v1/devices/me/telemetry', '[1,2,3]', { qos: 1 })
    await client.publishAsync('v1/devices/me/command/response', JSON.stringify({ id: 'never-sent' }), { qos: 1 })
    await client.publishAsync('v1/devices/me/attributes', JSON.stringify({ good: true }), { qos: 1 })
    assert.equal(client.connected, true)

    const afterwards = (await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties
    assert.deepEqual(before.body.properties.attributes, {})
    assert.deepEqual(afterwards.attributes, { good: true })
    assert.deepEqual(afterwards.telemetry, {})
    assert.deepEqual(afterwards.commands, {})
    await eventually(() => watched.length === 1, 3000, 'the good publish routed')
    await settle()
    assert.deepEqual(watched.map((m) => m.payload.toString()), ['{"good":true}'], 'refused publishes were not routed')
    assert.equal(await metric(t, 'iothub_rejected_inputs_total{reason="bad_payload"}'), 3)
    assert.equal(await metric(t, 'iothub_upstream_total{property="attributes",outcome="refused"}'), 1)
  })

  it('routes a device’s changes and the API’s in the order they were stored', async () => {
    const d = await t.createDevice()
    const client = await t.connect({ clientId: 'order-dev', username: d.id, password: d.token })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 }) // so the API's changes are pushed
    const watcher = await t.connect({ clientId: 'order-watch', username: 'admin', password: 'public' })
    const seen = collect(watcher)
    await watcher.subscribeAsync(`${d.id}/v1/devices/me/attributes`, { qos: 1 })
    for (let i = 0; i < 20; i++) {
      await Promise.all([
        client.publishAsync('v1/devices/me/attributes', JSON.stringify({ v: `dev-${i}` }), { qos: 1 }),
        t.api('PATCH', `/v1/devices/${d.id}/attributes`, { v: `api-${i}` })
      ])
      await eventually(() => seen.length === 2 * (i + 1), 3000, `both changes of round ${i} seen`)
      const stored = (await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties.attributes.v
      const lastSeen = (JSON.parse(seen.at(-1)!.payload.toString()) as { v: string }).v
      assert.equal(lastSeen, stored, `round ${i}: the watcher's last view is what was stored last`)
    }
  })

  it('routes a QoS 2 upstream publish once, even when the device sends it again with DUP', async () => {
    const d = await t.createDevice()
    const watcher = await t.connect({ clientId: 'qos2-watch', username: 'admin', password: 'public' })
    const seen = collect(watcher)
    await watcher.subscribeAsync(`${d.id}/v1/devices/me/telemetry`, { qos: 2 })
    const { client } = await RawMqttClient.connect(t.hub.address.mqtt!.port, { clientId: 'qos2-dev', username: d.id, password: d.token })
    const packet = publishPacket({ topic: 'v1/devices/me/telemetry', payload: JSON.stringify({ n: 1 }), qos: 2, messageId: 7 })
    client.socket.write(packet)
    await settle()
    const resent = Buffer.from(packet)
    resent[0] = resent[0]! | 0x08 // DUP: the device did not see the PUBREC
    client.socket.write(resent)
    await settle()
    assert.equal(seen.length, 1, 'routed once')
    client.socket.destroy()
  })

  it('lets a device clear a retained message on a change topic', async () => {
    const d = await t.createDevice()
    const client = await t.connect({ clientId: 'retain-dev', username: d.id, password: d.token })
    await client.publishAsync('v1/devices/me/attributes', JSON.stringify({ r: 1 }), { qos: 1, retain: true })
    await client.publishAsync('v1/devices/me/attributes', '', { qos: 1, retain: true })
    const reader = await t.connect({ clientId: 'retain-read', username: 'admin', password: 'public' })
    const seen = collect(reader)
    await reader.subscribeAsync(`${d.id}/v1/devices/me/attributes`, { qos: 1 })
    await settle()
    assert.deepEqual(seen, [], 'the retained message is gone')
    assert.deepEqual((await t.api<ApiDevice>('GET', `/v1/devices/${d.id}`)).body.properties.attributes, { r: 1 }, 'clearing it changed no attribute')
  })

  it('keeps devices in their namespaces, even with wildcards', async () => {
    const a = await t.createDevice()
    const b = await t.createDevice()
    const clientA = await t.connect({ clientId: 'ns-a', username: a.id, password: a.token })
    const clientB = await t.connect({ clientId: 'ns-b', username: b.id, password: b.token })
    const seenByA = collect(clientA)
    const seenByB = collect(clientB)
    await clientA.subscribeAsync(['#', '+/v1/devices/me/#', `${b.id}/#`], { qos: 1 })
    // mqtt.js rejects a SUBACK with a failure code; the SUBACK itself rides on the error
    const refused = await clientA.subscribeAsync('$SYS/#', { qos: 0 }).then(
      () => assert.fail('$SYS/# was granted'),
      (error: { packet: { granted: number[] } }) => error.packet
    )
    assert.deepEqual(refused.granted, [128], '$SYS is outside a device namespace')

    // B's traffic, both directions, and a superuser's publish to B: none of it reaches A
    await clientB.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await clientB.publishAsync('v1/devices/me/telemetry', JSON.stringify({ t: 1 }), { qos: 1 })
    await t.api('PATCH', `/v1/devices/${b.id}/attributes`, { secret: 42 })
    // A naming B's topic publishes into its own namespace, and changes nothing of B's
    await clientA.publishAsync(`${b.id}/v1/devices/me/attributes`, JSON.stringify({ hijack: true }), { qos: 1 })
    await clientA.publishAsync('$SYS/broker/fake', 'x', { qos: 1 })
    assert.equal(clientA.connected, true, 'a publish outside the namespace is dropped, not a disconnect')

    await eventually(() => seenByB.length === 1, 3000, 'B got its push')
    await settle()
    assert.deepEqual(seenByB.map((m) => m.topic), ['v1/devices/me/attributes'])
    // A sees only its own publish to `${b.id}/v1/...`, which is inside A's namespace
    assert.ok(seenByA.length >= 1, 'A received its own publish')
    for (const m of seenByA) {
      assert.equal(m.topic, `${b.id}/v1/devices/me/attributes`)
      assert.equal(m.payload.toString(), '{"hijack":true}', 'nothing of B reached A')
    }
    assert.deepEqual((await t.api<ApiDevice>('GET', `/v1/devices/${b.id}`)).body.properties.attributes, { secret: 42 })
    assert.equal(await metric(t, 'iothub_rejected_inputs_total{reason="outside_namespace"}'), 2)
  })
})
