/**
 * Input meant to hurt the hub, against a real hub over real sockets: JSON nested 10,000 levels
 * deep over MQTT, CoAP and the HTTP API; device batches naming one id twice or carrying a huge
 * `ext`; guessing the API credentials; requests that trickle in. Each is refused the documented
 * way, counted in `iothub_rejected_inputs_total{reason}`, stores nothing, and leaves everyone
 * else served.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createSocket } from 'node:dgram'
import { request as httpRequest } from 'node:http'
import { connect as tcpConnect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import * as coap from 'coap'
import { generate as generatePacket, parse as parsePacket, type NamedOption, type ParsedPacket } from 'coap-packet'
import type { MqttClient } from 'mqtt'
import { MAX_PROPERTY_BYTES } from '../src/domain/device-properties.js'
import { BASIC_ADMIN, eventually, startTestHub, type TestHub } from './helpers/hub.js'

/** `{"a":{"a":…1…}}`, 10,000 objects deep, about 60 KiB: what overflowed the stack. */
const DEEP = '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)
const nested = (depth: number): unknown => JSON.parse('{"a":'.repeat(depth) + '1' + '}'.repeat(depth))

async function rejected(t: TestHub): Promise<Map<string, number>> {
  const { body } = await t.api<string>('GET', '/metrics', undefined, null)
  const counts = new Map<string, number>()
  for (const m of body.matchAll(/^iothub_rejected_inputs_total\{reason="([^"]+)"\} (\d+)$/gm)) counts.set(m[1]!, Number(m[2]))
  return counts
}

/** What was counted since `before`, by reason, leaving out reasons that did not change. */
async function countedSince(t: TestHub, before: Map<string, number>): Promise<Record<string, number>> {
  const now = await rejected(t)
  const delta: Record<string, number> = {}
  for (const reason of new Set([...now.keys(), ...before.keys()])) {
    const d = (now.get(reason) ?? 0) - (before.get(reason) ?? 0)
    if (d !== 0) delta[reason] = d
  }
  return delta
}

/** `promise`, or a failure naming `what` once `ms` pass without it settling. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, deadline])
  } finally {
    clearTimeout(timer)
  }
}

/** One HTTP request with a raw body, from `localAddress` (127.0.0.1 unless told). */
function http(
  t: TestHub,
  method: string,
  path: string,
  options: { body?: string; authorization?: string | null; localAddress?: string } = {}
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: unknown }> {
  const authorization = options.authorization === undefined ? BASIC_ADMIN : options.authorization
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${t.httpUrl}${path}`,
      {
        method,
        localAddress: options.localAddress ?? '127.0.0.1',
        headers: { ...(authorization ? { authorization } : {}), ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}) }
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8')
          let body: unknown = text
          try {
            body = JSON.parse(text)
          } catch {
            // not JSON: the text
          }
          resolve({ status: res.statusCode!, headers: res.headers, body })
        })
      }
    )
    req.on('error', reject)
    req.end(options.body)
  })
}

function coapCall(port: number, method: 'POST' | 'DELETE', pathname: string, query: string, payload?: string): Promise<{ code: string; payload: string }> {
  return new Promise((resolve, reject) => {
    const req = coap.request({ hostname: '127.0.0.1', port, method, pathname, query, confirmable: true, agent: false })
    req.on('response', (res: coap.IncomingMessage) => resolve({ code: res.code, payload: res.payload.toString('utf8') }))
    req.on('error', reject)
    req.end(payload)
  })
}

/** An unsigned integer CoAP option value in as few bytes as it takes (0 is empty). */
function uintBytes(n: number): Buffer {
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256)
  return Buffer.from(bytes)
}

/**
 * POSTs `body` to `/{path}?{query}` in Block1 blocks of 1,024 bytes (RFC 7959), one token for all
 * of them, as raw confirmable datagrams; resolves with the code of the answer to the last block.
 * (node-coap's client sends nothing larger than one datagram.)
 */
async function coapPostInBlocks(port: number, path: string[], query: string[], body: Buffer): Promise<string> {
  const SIZE = 1024
  const SZX = 6
  const socket = createSocket('udp4')
  const token = randomBytes(4)
  const waiting = new Map<number, (packet: ParsedPacket) => void>()
  socket.on('message', (message) => {
    const packet = parsePacket(message)
    waiting.get(packet.messageId)?.(packet)
  })
  const options: NamedOption[] = [...path.map((p) => ({ name: 'Uri-Path' as const, value: Buffer.from(p) })), ...query.map((q) => ({ name: 'Uri-Query' as const, value: Buffer.from(q) }))]
  try {
    const blocks = Math.ceil(body.length / SIZE)
    let code = ''
    for (let num = 0; num < blocks; num++) {
      const messageId = 30_000 + num
      const more = num < blocks - 1
      const answered = new Promise<ParsedPacket>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no answer to block ${num}`)), 5000)
        waiting.set(messageId, (packet) => {
          clearTimeout(timer)
          resolve(packet)
        })
      })
      const block1 = { name: 'Block1' as const, value: uintBytes(num * 16 + (more ? 8 : 0) + SZX) }
      socket.send(generatePacket({ code: '0.02', confirmable: true, messageId, token, options: [...options, block1], payload: body.subarray(num * SIZE, (num + 1) * SIZE) }), port, '127.0.0.1')
      code = (await answered).code
      if (more && code !== '2.31') return code
    }
    return code
  } finally {
    socket.close()
  }
}

describe('JSON nested 10,000 levels deep', () => {
  let t: TestHub
  let device: { id: string; token: string }
  let client: MqttClient
  let closed = 0

  before(async () => {
    t = await startTestHub()
    device = await t.createDevice({ id: 'deep' })
    // persistent, QoS 1: the client that, refused by a closed connection, sent it again forever
    client = await t.connect({ clientId: 'deep-client', username: device.id, password: device.token, clean: false })
    client.on('close', () => closed++)
  })
  after(() => t.stop())

  const attributes = () => t.hub.properties.get(device.id, 'attributes')

  it('over MQTT on the attributes topic: PUBACK, refused as bad_payload, nothing stored, the connection stays', async () => {
    const before = await rejected(t)
    await within(client.publishAsync('v1/devices/me/attributes', DEEP, { qos: 1 }), 5000, 'PUBACK')
    assert.deepEqual(await countedSince(t, before), { bad_payload: 1 })
    assert.equal(attributes(), undefined, 'nothing stored')
    // the same connection still works: its next update is applied
    await within(client.publishAsync('v1/devices/me/attributes', JSON.stringify({ colour: 'red' }), { qos: 1 }), 5000, 'PUBACK')
    assert.deepEqual(attributes(), { colour: 'red' })
    assert.equal(closed, 0, 'the connection was never closed')
    assert.equal(client.connected, true)
  })

  it('over MQTT on the raw topic: kept as the text it is', async () => {
    await within(client.publishAsync('v1/devices/me/raw', DEEP, { qos: 1 }), 5000, 'PUBACK')
    const { body } = await t.api<{ properties: { rawData?: { data: unknown } } }>('GET', `/v1/devices/${device.id}`)
    assert.equal(body.properties.rawData?.data, DEEP)
    assert.equal(closed, 0)
  })

  it('over the API: 400, counted as bad_api_request, nothing stored', async () => {
    const before = await rejected(t)
    const r = await http(t, 'PATCH', `/v1/devices/${device.id}/attributes`, { body: DEEP })
    assert.equal(r.status, 400, JSON.stringify(r.body))
    assert.match((r.body as { message: string }).message, /nested more than 32 levels/)
    assert.deepEqual(await countedSince(t, before), { bad_api_request: 1 })
    assert.deepEqual(attributes(), { colour: 'red' })
  })

  it('over the API, in a device or a command: 400, nothing created or sent', async () => {
    const before = await rejected(t)
    const created = await http(t, 'POST', '/v1/devices', { body: `{"id":"deep-ext","ext":${DEEP}}` })
    assert.equal(created.status, 400)
    assert.equal(t.hub.devices.get('deep-ext'), undefined)
    const command = await http(t, 'POST', `/v1/devices/${device.id}/commands`, { body: `{"name":"reboot","params":${DEEP}}` })
    assert.equal(command.status, 400)
    assert.deepEqual(await countedSince(t, before), { bad_api_request: 2 })
    assert.equal(t.hub.properties.get(device.id, 'commands'), undefined)
  })

  it('takes JSON exactly IOTHUB_MAX_JSON_DEPTH deep and refuses one level more', async () => {
    // the body is one level: the patch's values may nest 31 more
    assert.equal((await t.api('PATCH', `/v1/devices/${device.id}/attributes`, { deep: nested(31) })).status, 200)
    assert.equal((await t.api('PATCH', `/v1/devices/${device.id}/attributes`, { deeper: nested(32) })).status, 400)
    const stored = attributes() as Record<string, unknown>
    assert.ok('deep' in stored && !('deeper' in stored))
  })

  it('over CoAP: 4.00, counted as bad_payload, nothing stored', async () => {
    const port = t.hub.address.coap!.port
    const coapDevice = await t.createDevice({ id: 'deep-coap' })
    const connected = await coapCall(port, 'POST', '/mqtt/connection', `clientid=deep-coap&username=deep-coap&password=${coapDevice.token}`)
    assert.equal(connected.code, '2.01', connected.payload)
    const query = `clientid=deep-coap&token=${connected.payload}`
    try {
      const before = await rejected(t)
      const code = await coapPostInBlocks(port, ['ps', 'v1', 'devices', 'me', 'attributes'], query.split('&'), Buffer.from(DEEP))
      assert.equal(code, '4.00')
      assert.deepEqual(await countedSince(t, before), { bad_payload: 1 })
      assert.equal(t.hub.properties.get('deep-coap', 'attributes'), undefined, 'nothing stored')
    } finally {
      await coapCall(port, 'DELETE', '/mqtt/connection', query)
    }
  })
})

describe('POST /v1/devices: ids named twice, a huge ext', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(() => t.stop())

  it('an id twice in one array → 400 naming it, counted, no device of the array created', async () => {
    const before = await rejected(t)
    const r = await http(t, 'POST', '/v1/devices', { body: JSON.stringify([{ id: 'twin-a' }, { id: 'single' }, { id: 'twin-a' }]) })
    assert.equal(r.status, 400, JSON.stringify(r.body))
    assert.match((r.body as { message: string }).message, /twin-a/)
    assert.doesNotMatch((r.body as { message: string }).message, /single/)
    assert.deepEqual(await countedSince(t, before), { bad_api_request: 1 })
    assert.equal(t.hub.devices.get('twin-a'), undefined)
    assert.equal(t.hub.devices.get('single'), undefined)
  })

  it('an id that already exists is still 409', async () => {
    await t.createDevice({ id: 'exists' })
    const r = await http(t, 'POST', '/v1/devices', { body: JSON.stringify([{ id: 'new-one' }, { id: 'exists' }]) })
    assert.equal(r.status, 409)
    assert.equal(t.hub.devices.get('new-one'), undefined)
  })

  it(`an ext larger than ${MAX_PROPERTY_BYTES} bytes of JSON → 400, counted, nothing created; one just under is taken`, async () => {
    const before = await rejected(t)
    const big = { blob: 'x'.repeat(7 * 1024 * 1024) }
    const r = await http(t, 'POST', '/v1/devices', { body: JSON.stringify([{ id: 'small-ext' }, { id: 'big-ext', ext: big }]) })
    assert.equal(r.status, 400, JSON.stringify(r.body).slice(0, 300))
    assert.match((r.body as { message: string }).message, /body\/1\/ext/)
    assert.deepEqual(await countedSince(t, before), { bad_api_request: 1 })
    assert.equal(t.hub.devices.get('big-ext'), undefined)
    assert.equal(t.hub.devices.get('small-ext'), undefined)

    const fits = { blob: 'x'.repeat(MAX_PROPERTY_BYTES - 20) }
    assert.ok(JSON.stringify(fits).length <= MAX_PROPERTY_BYTES)
    assert.equal((await http(t, 'POST', '/v1/devices', { body: JSON.stringify({ id: 'fitting-ext', ext: fits }) })).status, 201)
    const over = { blob: 'x'.repeat(MAX_PROPERTY_BYTES - 10) }
    assert.equal((await http(t, 'POST', '/v1/devices', { body: JSON.stringify({ id: 'over-ext', ext: over }) })).status, 400)
  })
})

describe('guessing the API credentials', () => {
  const ATTACKER = '127.0.0.2'
  const WRONG = `Basic ${Buffer.from('admin:guess').toString('base64')}`
  // a first wait of 5 s, not 1: the throttled address is checked within it on a loaded machine too
  const FIRST_WAIT_MS = 5000
  let t: TestHub
  before(async () => {
    t = await startTestHub({ loginFailuresAllowed: 3, loginBackoffFirst: FIRST_WAIT_MS })
  })
  after(() => t.stop())

  it('wrong credentials are counted as api_unauthorized; past the allowance the address gets 429 with Retry-After, even with the right ones', async () => {
    const before = await rejected(t)
    for (let i = 0; i < 4; i++) assert.equal((await http(t, 'GET', '/v1/sessions', { authorization: WRONG, localAddress: ATTACKER })).status, 401, `guess ${i}`)
    const throttled = await http(t, 'GET', '/v1/sessions', { localAddress: ATTACKER }) // the right credentials
    assert.equal(throttled.status, 429, JSON.stringify(throttled.body))
    // the first wait, in whole seconds left (fewer when the machine was slow to get here)
    const retryAfter = Number(throttled.headers['retry-after'])
    assert.ok(retryAfter >= 1 && retryAfter <= FIRST_WAIT_MS / 1000, `Retry-After ${String(throttled.headers['retry-after'])}`)
    assert.match((throttled.body as { message: string }).message, /too many wrong logins/)
    assert.deepEqual(await countedSince(t, before), { api_unauthorized: 4, login_throttled: 1 })

    // another address is served meanwhile
    assert.equal((await http(t, 'GET', '/v1/sessions')).status, 200)
    // the probes and metrics stay open to the throttled address
    assert.equal((await http(t, 'GET', '/healthz', { authorization: null, localAddress: ATTACKER })).status, 200)
  })

  it('once the wait is over the right credentials get in, and that forgets the failures', async () => {
    await eventually(async () => (await http(t, 'GET', '/v1/sessions', { localAddress: ATTACKER })).status === 200, FIRST_WAIT_MS + 10_000, 'the attacker address let in again')
    for (let i = 0; i < 3; i++) assert.equal((await http(t, 'GET', '/v1/sessions', { authorization: WRONG, localAddress: ATTACKER })).status, 401)
    assert.equal((await http(t, 'GET', '/v1/sessions', { localAddress: ATTACKER })).status, 200, 'three failures are allowed again')
  })

  it('requests without credentials are counted but do not throttle', async () => {
    const before = await rejected(t)
    for (let i = 0; i < 5; i++) assert.equal((await http(t, 'GET', '/v1/sessions', { authorization: null, localAddress: '127.0.0.3' })).status, 401)
    assert.equal((await http(t, 'GET', '/v1/sessions', { localAddress: '127.0.0.3' })).status, 200)
    assert.deepEqual(await countedSince(t, before), { api_unauthorized: 5 })
  })
})

describe('requests that trickle in', () => {
  const TIMEOUT = 1000
  let t: TestHub
  const sockets: Socket[] = []
  const timers: NodeJS.Timeout[] = []
  before(async () => {
    t = await startTestHub({ httpRequestTimeout: TIMEOUT })
  })
  after(async () => {
    for (const timer of timers) clearInterval(timer)
    for (const socket of sockets) socket.destroy()
    await t.stop()
  })

  /** Opens a socket, sends `head`, then one byte of `drip` every 100 ms; resolves with what came back and when the hub closed it. */
  function trickle(head: string, drip: string): Promise<{ answer: string; afterMs: number }> {
    return new Promise((resolve, reject) => {
      const socket = tcpConnect(t.hub.address.http.port, '127.0.0.1')
      sockets.push(socket)
      const started = Date.now()
      const chunks: Buffer[] = []
      let dripped = 0
      let timer: NodeJS.Timeout | undefined
      socket.on('data', (c: Buffer) => chunks.push(c))
      socket.on('error', () => undefined) // a reset is a close too
      const held = setTimeout(() => reject(new Error('the hub held the trickling request for 10 s')), 10_000)
      socket.on('close', () => {
        clearInterval(timer)
        clearTimeout(held)
        resolve({ answer: Buffer.concat(chunks).toString('utf8'), afterMs: Date.now() - started })
      })
      socket.once('connect', () => {
        socket.write(head)
        timer = setInterval(() => {
          if (socket.writable) socket.write(drip[dripped++ % drip.length]!)
        }, 100)
        timers.push(timer)
      })
    })
  }

  it('a body that trickles in gets 408 and is closed, while another client is served meanwhile', async () => {
    const body = JSON.stringify({ id: 'slow-device', name: 'x'.repeat(200) })
    const head = `POST /v1/devices HTTP/1.1\r\nHost: hub\r\nAuthorization: ${BASIC_ADMIN}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`
    const slow = trickle(head, body)
    assert.equal((await t.api('GET', '/v1/sessions')).status, 200, 'another client is answered')
    const { answer, afterMs } = await slow
    assert.match(answer, /^HTTP\/1\.1 408/, answer)
    assert.ok(afterMs >= TIMEOUT * 0.9 && afterMs < TIMEOUT + 5000, `closed after ${afterMs} ms`)
    assert.equal(t.hub.devices.get('slow-device'), undefined)
  })

  it('headers that trickle in are closed too', async () => {
    const { answer, afterMs } = await trickle(`GET /v1/sessions HTTP/1.1\r\nHost: hub\r\n`, 'X-Slow: yes\r\n')
    assert.match(answer, /^HTTP\/1\.1 408/, answer)
    assert.ok(afterMs >= TIMEOUT * 0.9 && afterMs < TIMEOUT + 5000, `closed after ${afterMs} ms`)
  })
})
