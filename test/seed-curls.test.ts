/**
 * The four curl calls of docs/ARCHITECTURE.md ("Shapes users already know") against a running
 * hub, with only host and port changed (and their device id and owner made real): the answers
 * have the shapes EMQX 4 and tKeel core answer with. Plus the tKeel entity read's other types,
 * its tenant isolation and its Bearer token, and the EMQX publish API's errors.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

const ADMIN_BASIC = 'Basic YWRtaW46cHVibGlj' // the examples' header: admin:public, the default credentials
const TOKEN = 'example-bearer-token-0123456789'
const OWNER = 'usr-1-7af89d4a8d512740053ea07c000aa143'
const DEVICE_ID = '71e7ce32-dc94-4c44-af95-e16002388993'

/** Runs a curl-equivalent request: the example's method, path, headers and body. */
async function curl(t: TestHub, method: string, path: string, headers: Record<string, string>, body?: string) {
  const response = await fetch(`${t.httpUrl}${path}`, { method, headers, body })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

const keysOf = (value: unknown): string[] => Object.keys(value as object).sort()

describe('the documented curl calls', () => {
  let t: TestHub
  let device: MqttClient
  const received: { topic: string; payload: string }[] = []

  before(async () => {
    t = await startTestHub({ apiToken: TOKEN })
    const d = await t.createDevice({ id: DEVICE_ID, owner: OWNER, name: 'dev_name', desc: 'dev_desc', group: 'default', ext: { other: 'other', version: '1.1' } })
    device = await t.connect({ clientId: 'trest', username: d.id, password: d.token, clean: false, keepalive: 60 })
    device.on('message', (topic, payload) => received.push({ topic, payload: payload.toString() }))
    await device.subscribeAsync({ 'v1/devices/me/attributes': { qos: 1 }, 'test/#': { qos: 0 } })
    await device.publishAsync('v1/devices/me/raw', JSON.stringify({ msg: 'iothub' }), { qos: 1 })
  })
  after(async () => {
    await t.stop()
  })

  it('GET /api/v4/clients?_page=1&_limit=10&_=… answers EMQX 4’s shape', async () => {
    const { status, body } = await curl(t, 'GET', '/api/v4/clients?_page=1&_limit=10&_=1640597122737', { Authorization: ADMIN_BASIC })
    assert.equal(status, 200)
    assert.equal(body.code, 0)
    assert.deepEqual(body.meta, { page: 1, limit: 10, hasnext: false, count: 1 })
    const [client] = body.data as Record<string, unknown>[]
    const emqxKeys = ['recv_cnt', 'heap_size', 'zone', 'proto_ver', 'node', 'send_pkt', 'send_oct', 'max_awaiting_rel', 'max_inflight', 'clientid', 'created_at', 'expiry_interval', 'proto_name', 'send_msg', 'recv_msg', 'max_mqueue', 'reductions', 'awaiting_rel', 'recv_oct', 'username', 'mqueue_len', 'port', 'subscriptions_cnt', 'ip_address', 'is_bridge', 'max_subscriptions', 'mountpoint', 'keepalive', 'connected_at', 'inflight', 'mqueue_dropped', 'connected', 'send_cnt', 'recv_pkt', 'mailbox_len', 'clean_start']
    for (const key of emqxKeys) assert.ok(key in client!, `clients[0].${key}`)
    assert.equal(client!.clientid, 'trest')
    assert.equal(client!.username, DEVICE_ID)
    assert.equal(client!.mountpoint, `${DEVICE_ID}/`, 'the device’s mountpoint, as EMQX’s %u/ makes it')
    assert.equal(client!.proto_name, 'MQTT')
    assert.equal(client!.subscriptions_cnt, 2)
    assert.equal(client!.clean_start, false)
    assert.match(client!.connected_at as string, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/)
  })

  it('GET /api/v4/subscriptions?_page=1&_limit=1000 shows the mounted topics, as EMQX does', async () => {
    const { status, body } = await curl(t, 'GET', '/api/v4/subscriptions?_page=1&_limit=1000', { Authorization: ADMIN_BASIC })
    assert.equal(status, 200)
    assert.equal(body.code, 0)
    assert.deepEqual(body.meta, { page: 1, limit: 1000, hasnext: false, count: 2 })
    const rows = (body.data as Record<string, unknown>[]).sort((a, b) => String(a.topic).localeCompare(String(b.topic)))
    assert.deepEqual(rows.map(keysOf), [['clientid', 'node', 'qos', 'topic'], ['clientid', 'node', 'qos', 'topic']])
    assert.deepEqual(
      rows.map((r) => [r.topic, r.qos, r.clientid]),
      [
        [`${DEVICE_ID}/test/#`, 0, 'trest'],
        [`${DEVICE_ID}/v1/devices/me/attributes`, 1, 'trest']
      ]
    )
  })

  it('POST /api/v4/mqtt/publish with the documented body reaches the device on its own topic', async () => {
    const body = JSON.stringify({ topic: `${DEVICE_ID}/v1/devices/me/attributes`, payload: 'Hello World', qos: 1, retain: false, clientid: 'python-mqtt-34' })
    const response = await curl(t, 'POST', '/api/v4/mqtt/publish', { Authorization: ADMIN_BASIC, 'Content-Type': 'application/json' }, body)
    assert.equal(response.status, 200)
    assert.deepEqual(response.body, { code: 0 })
    await eventually(() => received.some((m) => m.payload === 'Hello World'), 3000, 'publish delivered')
    assert.deepEqual(received.find((m) => m.payload === 'Hello World'), { topic: 'v1/devices/me/attributes', payload: 'Hello World' })
  })

  it('GET /apis/core/v1/entities/{id}?type=device&owner=&source=device with a Bearer token answers tKeel core’s entity shape', async () => {
    await eventually(async () => {
      const e = await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=device&owner=${OWNER}&source=device`, { Authorization: `Bearer ${TOKEN}` })
      return (e.body.properties as { connectinfo: { _online?: boolean } } | undefined)?.connectinfo._online === true
    }, 3000, 'connectinfo written')
    const { status, body } = await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=device&owner=${OWNER}&source=device`, { Authorization: `Bearer ${TOKEN}` })
    assert.equal(status, 200)
    assert.deepEqual(keysOf(body), ['configs', 'id', 'owner', 'properties', 'source', 'type'])
    assert.equal(body.id, DEVICE_ID)
    assert.equal(body.source, 'device')
    assert.equal(body.owner, OWNER)
    assert.equal(body.type, 'device')
    assert.deepEqual(body.configs, {})
    const p = body.properties as Record<string, Record<string, unknown>>
    for (const key of ['attributes', 'connectinfo', 'dev', 'rawData', 'sysField']) assert.ok(key in p, `properties.${key}`)
    assert.deepEqual(keysOf(p.connectinfo), ['_clientid', '_online', '_owner', '_peerhost', '_protocol', '_socketport', '_timestamp', '_username'])
    assert.equal(p.connectinfo!._clientid, 'trest')
    assert.equal(p.connectinfo!._online, true)
    assert.equal(p.connectinfo!._owner, OWNER)
    assert.equal(p.connectinfo!._peerhost, '127.0.0.1')
    assert.equal(p.connectinfo!._protocol, 'mqtt')
    assert.equal(p.connectinfo!._socketport, new URL(t.mqttUrl).port, 'the hub’s port, as a string')
    assert.equal(p.connectinfo!._username, DEVICE_ID)
    assert.deepEqual(p.dev, { name: 'dev_name', desc: 'dev_desc', group: 'default', ext: { other: 'other', version: '1.1' } })
    assert.deepEqual(keysOf(p.rawData), ['data', 'timestamp', 'topic'])
    assert.deepEqual(p.rawData!.data, { msg: 'iothub' })
    assert.equal(p.rawData!.topic, `${DEVICE_ID}/v1/devices/me/raw`)
    // no `_token`: the hub keeps only its hash, and shows the token once, when it is made
    assert.deepEqual(keysOf(p.sysField), ['_createdAt', '_enable', '_id', '_updatedAt'])
    assert.equal(p.sysField!._id, DEVICE_ID)
    assert.equal(p.sysField!._enable, true)
    assert.ok((p.sysField!._updatedAt as number) >= (p.sysField!._createdAt as number))
    assert.ok((p.sysField!._createdAt as number) > 1.6e18, 'nanoseconds, as tKeel writes them')
  })

  it('answers 404 for another tenant or source, and 401 without valid credentials', async () => {
    const path = `/apis/core/v1/entities/${DEVICE_ID}?type=device&owner=usr-someone-else&source=device`
    const other = await curl(t, 'GET', path, { Authorization: `Bearer ${TOKEN}` })
    assert.equal(other.status, 404)
    const missing = await curl(t, 'GET', `/apis/core/v1/entities/no-such?type=device&owner=usr-someone-else`, { Authorization: `Bearer ${TOKEN}` })
    assert.equal(missing.status, 404)
    // indistinguishable from a device that does not exist: the tenant learns nothing
    assert.deepEqual(other.body, { ...missing.body, message: String(missing.body.message).replace('no-such', DEVICE_ID) })
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=device&owner=${OWNER}&source=elsewhere`, { Authorization: ADMIN_BASIC })).status, 404)
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=device`, { Authorization: 'Bearer not-the-token-at-all' })).status, 401)
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=device`, { Authorization: `bearer ${TOKEN}` })).status, 200, 'the scheme is case-insensitive')
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=device`, {})).status, 401)
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}?type=gadget`, { Authorization: ADMIN_BASIC })).status, 400)
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/${DEVICE_ID}`, { Authorization: ADMIN_BASIC })).status, 400, 'type is required')
  })

  it('reads session and subscription entities the same way', async () => {
    const session = await curl(t, 'GET', `/apis/core/v1/entities/trest?type=session&owner=${OWNER}`, { Authorization: `Bearer ${TOKEN}` })
    assert.equal(session.status, 200)
    assert.equal(session.body.type, 'session')
    assert.equal(session.body.owner, OWNER)
    assert.equal((session.body.properties as { deviceId: string }).deviceId, DEVICE_ID)
    const [subscription] = (await t.api<{ data: { id: string }[] }>('GET', `/v1/subscriptions?sessionId=trest`)).body.data
    const entity = await curl(t, 'GET', `/apis/core/v1/entities/${subscription!.id}?type=subscription&owner=${OWNER}&source=iothub`, { Authorization: ADMIN_BASIC })
    assert.equal(entity.status, 200)
    assert.equal(entity.body.type, 'subscription')
    assert.equal((entity.body.properties as { filter: string }).filter, `insert into ${subscription!.id} select ${DEVICE_ID}.attributes`)
    assert.equal((await curl(t, 'GET', `/apis/core/v1/entities/trest?type=session&owner=other`, { Authorization: ADMIN_BASIC })).status, 404)
  })

  it('answers bad publish bodies as EMQX does, and publishes nothing', async () => {
    const headers = { Authorization: ADMIN_BASIC, 'Content-Type': 'application/json' }
    const before = received.length
    const cases: [string, number][] = [
      [JSON.stringify({ payload: 'no topic' }), 107],
      [JSON.stringify({ topic: 'a/+/b', payload: 'x' }), 108],
      [JSON.stringify({ topic: `${DEVICE_ID}/v1/devices/me/attributes`, qos: 3 }), 108],
      [JSON.stringify({ topic: `${DEVICE_ID}/v1/devices/me/attributes`, payload: '***', encoding: 'base64' }), 108],
      [JSON.stringify({ topic: `${'x/'.repeat(40)}x`, payload: 'deep' }), 108],
      ['{not json', 109]
    ]
    for (const [body, code] of cases) {
      const response = await curl(t, 'POST', '/api/v4/mqtt/publish', headers, body)
      assert.equal(response.status, 400, body)
      assert.equal(response.body.code, code, body)
      assert.equal(typeof response.body.message, 'string')
    }
    await new Promise((r) => setTimeout(r, 150))
    assert.equal(received.length, before)
  })
})
