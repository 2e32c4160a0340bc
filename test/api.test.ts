/**
 * The HTTP API as users call it: device registration (and the CLI that uses it), session
 * listing with filters and cursor paging, and the EMQX v4 calls tools written for EMQX make,
 * whose responses must carry every field EMQX 4 answers with (docs/ARCHITECTURE.md, "Shapes
 * users already know").
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { runCli } from '../src/cli/program.js'
import { eventually, startTestHub, superuserLogin, type TestHub } from './helpers/hub.js'

/** Every key of a row of EMQX 4's `GET /api/v4/clients`. */
const EMQX_CLIENT_FIELDS = [
  'recv_cnt', 'heap_size', 'zone', 'proto_ver', 'node', 'send_pkt', 'send_oct', 'max_awaiting_rel', 'max_inflight',
  'clientid', 'created_at', 'expiry_interval', 'proto_name', 'send_msg', 'recv_msg', 'max_mqueue', 'reductions',
  'awaiting_rel', 'recv_oct', 'username', 'mqueue_len', 'port', 'subscriptions_cnt', 'ip_address', 'is_bridge',
  'max_subscriptions', 'mountpoint', 'keepalive', 'connected_at', 'inflight', 'mqueue_dropped', 'connected', 'send_cnt',
  'recv_pkt', 'mailbox_len', 'clean_start'
]

interface Page<T> {
  data: T[]
  next: string | null
}

describe('HTTP API', () => {
  let t: TestHub
  const clients: MqttClient[] = []
  let devices: { id: string; token: string; owner: string }[]

  before(async () => {
    t = await startTestHub()
    const created = await t.api<{ id: string; token: string; owner: string }[]>('POST', '/v1/devices', [
      { owner: 'alice' },
      { owner: 'alice' },
      { owner: 'bob', id: 'bob-sensor-1', name: 'sensor', group: 'lab', desc: 'a sensor', ext: { version: '1.1' } }
    ])
    assert.equal(created.status, 201)
    devices = created.body
    for (let i = 0; i < 7; i++) {
      const d = devices[i % 3]!
      const c = await t.connect({ clientId: `api-${i}`, username: d.id, password: d.token, clean: i !== 6, keepalive: 45 })
      await c.subscribeAsync([`api/${i}/a`, `api/${i}/b`], { qos: 1 })
      clients.push(c)
    }
  })
  after(async () => {
    await t.stop()
  })

  it('creates one device or many, each with a token, and refuses a duplicate id', async () => {
    assert.equal(devices.length, 3)
    assert.ok(devices.every((d) => d.token.length >= 32))
    const one = await t.api<{ id: string; name: string; group: string; ext: unknown }>('GET', '/v1/devices/bob-sensor-1')
    assert.equal(one.status, 200)
    assert.equal(one.body.name, 'sensor')
    assert.deepEqual(one.body.ext, { version: '1.1' })
    const single = await t.api<{ id: string; group: string }>('POST', '/v1/devices', {})
    assert.equal(single.status, 201)
    assert.equal(single.body.group, 'default')
    const duplicate = await t.api<{ message: string }>('POST', '/v1/devices', [{ id: 'fresh-1' }, { id: 'bob-sensor-1' }])
    assert.equal(duplicate.status, 409)
    assert.match(duplicate.body.message, /bob-sensor-1/)
    assert.equal((await t.api('GET', '/v1/devices/fresh-1')).status, 404, 'a refused batch stores none of its devices')
  })

  it('lists sessions with filters and pages through them with an opaque cursor', async () => {
    const all = await t.api<Page<{ id: string }>>('GET', '/v1/sessions')
    assert.deepEqual(all.body.data.map((s) => s.id), ['api-0', 'api-1', 'api-2', 'api-3', 'api-4', 'api-5', 'api-6'])
    assert.equal(all.body.next, null)

    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page: { body: Page<{ id: string }> } = await t.api<Page<{ id: string }>>('GET', `/v1/sessions?limit=3${cursor ? `&cursor=${cursor}` : ''}`)
      seen.push(...page.body.data.map((s) => s.id))
      cursor = page.body.next
      pages++
    } while (cursor)
    assert.equal(pages, 3)
    assert.deepEqual(seen, all.body.data.map((s) => s.id))

    const ofDevice = await t.api<Page<{ id: string; deviceId: string }>>('GET', `/v1/sessions?deviceId=${devices[0]!.id}`)
    assert.deepEqual(ofDevice.body.data.map((s) => s.id), ['api-0', 'api-3', 'api-6'])
    const byClient = await t.api<Page<{ id: string }>>('GET', '/v1/sessions?clientId=api-4&connected=true&protocol=mqtt')
    assert.deepEqual(byClient.body.data.map((s) => s.id), ['api-4'])
    assert.equal((await t.api<Page<unknown>>('GET', '/v1/sessions?protocol=coap')).body.data.length, 0)
    // a search by part of the client id, with the other filters and paged like any listing
    const holding = await t.api<Page<{ id: string }>>('GET', `/v1/sessions?clientIdContains=${encodeURIComponent('i-')}&deviceId=${devices[0]!.id}&limit=2`)
    assert.deepEqual([holding.body.data.map((s) => s.id), holding.body.next !== null], [['api-0', 'api-3'], true])
    const rest = await t.api<Page<{ id: string }>>('GET', `/v1/sessions?clientIdContains=i-&deviceId=${devices[0]!.id}&limit=2&cursor=${holding.body.next}`)
    assert.deepEqual(rest.body.data.map((s) => s.id), ['api-6'])
    assert.deepEqual((await t.api<Page<{ id: string }>>('GET', '/v1/sessions?clientIdContains=5')).body.data.map((s) => s.id), ['api-5'])
    assert.equal((await t.api('GET', '/v1/sessions?clientIdContains=')).status, 400)
  })

  it('answers EMQX 4’s GET /api/v4/clients call field for field', async () => {
    const r = await fetch(`${t.httpUrl}/api/v4/clients?_page=1&_limit=10&_=1640597122737`, {
      headers: { Authorization: 'Basic YWRtaW46cHVibGlj' }
    })
    assert.equal(r.status, 200)
    const body = (await r.json()) as { code: number; meta: Record<string, unknown>; data: Record<string, unknown>[] }
    assert.equal(body.code, 0)
    assert.deepEqual(body.meta, { page: 1, limit: 10, hasnext: false, count: 7 })
    const row = body.data.find((c) => c.clientid === 'api-6')!
    for (const field of EMQX_CLIENT_FIELDS) assert.ok(field in row, `field ${field} present`)
    assert.equal(row.proto_name, 'MQTT')
    assert.equal(row.proto_ver, 4)
    assert.equal(row.keepalive, 45)
    assert.equal(row.clean_start, false)
    assert.equal(row.expiry_interval, 7200)
    assert.equal(row.subscriptions_cnt, 2)
    assert.equal(row.connected, true)
    assert.equal(row.ip_address, '127.0.0.1')
    assert.equal(row.node, 'iothub@test')
    assert.match(String(row.connected_at), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)
  })

  it('pages and filters /api/v4/clients as EMQX does', async () => {
    const page2 = await t.api<{ meta: unknown; data: { clientid: string }[] }>('GET', '/api/v4/clients?_page=2&_limit=3')
    assert.deepEqual(page2.body.meta, { page: 2, limit: 3, hasnext: true, count: 7 })
    assert.deepEqual(page2.body.data.map((c) => c.clientid), ['api-3', 'api-4', 'api-5'])
    const like = await t.api<{ data: { clientid: string }[] }>('GET', '/api/v4/clients?_like_clientid=pi-1')
    assert.deepEqual(like.body.data.map((c) => c.clientid), ['api-1'])
    const persistent = await t.api<{ data: { clientid: string }[] }>('GET', '/api/v4/clients?clean_start=false&conn_state=connected&proto_name=MQTT')
    assert.deepEqual(persistent.body.data.map((c) => c.clientid), ['api-6'])
    const byUser = await t.api<{ data: { clientid: string }[] }>('GET', `/api/v4/clients?username=bob-sensor-1`)
    assert.deepEqual(byUser.body.data.map((c) => c.clientid), ['api-2', 'api-5'])
    const future = Date.now() + 60_000
    assert.equal((await t.api<{ data: unknown[] }>('GET', `/api/v4/clients?_gte_connected_at=${future}`)).body.data.length, 0)
  })

  it('answers EMQX 4’s GET /api/v4/subscriptions call', async () => {
    const r = await t.api<{ code: number; meta: unknown; data: { topic: string; qos: number; node: string; clientid: string }[] }>(
      'GET',
      '/api/v4/subscriptions?_page=1&_limit=1000'
    )
    assert.equal(r.body.code, 0)
    assert.deepEqual(r.body.meta, { page: 1, limit: 1000, hasnext: false, count: 14 })
    // as EMQX shows them: the broker's topic, under the device's mountpoint (api-0 and api-3 are devices[0]'s)
    const mount = `${devices[0]!.id}/`
    assert.deepEqual(r.body.data[0], { topic: `${mount}api/0/a`, qos: 1, node: 'iothub@test', clientid: 'api-0' })
    const matching = await t.api<{ data: { clientid: string; topic: string }[] }>('GET', `/api/v4/subscriptions?_match_topic=${mount}api/3/b`)
    assert.deepEqual(matching.body.data, [{ topic: `${mount}api/3/b`, qos: 1, node: 'iothub@test', clientid: 'api-3' }])
  })

  it('`iothub devices create` registers devices through the API and prints id and token lines', async () => {
    const lines: string[] = []
    const code = await runCli(['devices', 'create', '--count', '3', '--owner', 'carol', '--url', t.httpUrl, '--json'], { out: (line) => lines.push(line), err: (line) => assert.fail(line) })
    assert.equal(code, 0)
    assert.equal(lines.length, 3)
    for (const line of lines) {
      const { id, token } = JSON.parse(line) as { id: string; token: string }
      assert.match(token, /^[A-Za-z0-9_-]{32}$/)
      const stored = await t.api<{ owner: string; token?: string }>('GET', `/v1/devices/${id}`)
      assert.equal(stored.body.owner, 'carol')
      // shown once, by the creation's answer
      assert.equal(stored.body.token, undefined)
    }
  })

  it("shows an offline session's queue in /api/v4/clients, with the limits it is kept to", async () => {
    const device = devices[2]!
    const away = await t.connect({ clientId: 'api-queued', username: device.id, password: device.token, clean: false })
    await away.subscribeAsync('api/queued', { qos: 1 })
    await away.endAsync()
    const row = async () => {
      const r = await t.api<{ data: Record<string, unknown>[] }>('GET', '/api/v4/clients?clientid=api-queued')
      return r.body.data[0]!
    }
    await eventually(async () => (await row()).connected === false, 5000, 'the session offline')
    assert.equal((await row()).mqueue_len, 0)

    const operator = await t.connect({ clientId: 'api-operator', ...superuserLogin() })
    for (let i = 0; i < 3; i++) await operator.publishAsync(`${device.id}/api/queued`, `m${i}`, { qos: 1 })
    const queued = await eventually(async () => {
      const r = await row()
      return r.mqueue_len === 3 && r
    }, 5000, 'three messages queued')
    // the embedded broker's own limits (IOTHUB_MAX_QUEUED_PER_SESSION, IOTHUB_MAX_SUBSCRIPTIONS_PER_SESSION)
    assert.deepEqual([queued.max_mqueue, queued.max_subscriptions], [t.hub.config.maxQueuedPerSession, t.hub.config.maxSubscriptionsPerSession])

    // back, it receives them: the queue empties as it acknowledges
    const back = await t.connect({ clientId: 'api-queued', username: device.id, password: device.token, clean: false })
    const received: string[] = []
    back.on('message', (_topic, payload) => received.push(payload.toString()))
    await eventually(() => received.length === 3, 5000, 'the queued messages delivered')
    await eventually(async () => (await row()).mqueue_len === 0, 5000, 'the queue emptied')
  })
})
