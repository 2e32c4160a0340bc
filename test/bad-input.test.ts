/**
 * Bad input against a real hub over real sockets: oversized and malformed MQTT packets,
 * non-UTF-8 client ids and usernames, topics too long, too deep or invalid, bad HTTP query
 * parameters and bodies, missing API credentials. Each must be refused the documented way,
 * counted once in `iothub_rejected_inputs_total{reason}` (and under no other reason), change
 * nothing that is stored, and leave the hub serving everyone else.
 */
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { BASIC_ADMIN, connectClient, eventually, startTestHub, type TestHub } from './helpers/hub.js'
import {
  DISCONNECT,
  PacketType,
  RawMqttClient,
  connectPacket,
  encodeRemainingLength,
  publishOfTotalSize,
  publishPacket,
  publishTopic,
  subackGranted,
  subscribePacket,
  type ConnectOptions
} from './helpers/raw-mqtt.js'

const MAX_PACKET_SIZE = 2048
const MAX_TOPIC_LENGTH = 64
const MAX_TOPIC_LEVELS = 8
/** The device every MQTT client here logs in as; its topics are mounted under `${DEVICE_ID}/`. */
const DEVICE_ID = 'bad-input'
const MOUNT = `${DEVICE_ID}/`
/**
 * The limits apply to the broker's (mounted) topic: a device's own topic may be shorter by the
 * mountpoint's length, and one level shallower.
 */
const DEVICE_MAX_TOPIC_LENGTH = MAX_TOPIC_LENGTH - MOUNT.length
const DEVICE_MAX_TOPIC_LEVELS = MAX_TOPIC_LEVELS - 1

interface ApiSession {
  id: string
  connected: boolean
  disconnectReason: string | null
  topics: { topic: string; brokerTopic: string; qos: number }[]
}

interface ApiError {
  statusCode: number
  error: string
  message: string
}

const byTopic = (a: { topic: string }, b: { topic: string }) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0)

describe('bad input', () => {
  let t: TestHub
  let port: number
  let device: { id: string; token: string }
  /** A well-behaved client connected through everything; it must keep being served. */
  let bystander: MqttClient
  /** What the bystander received on `watch/#`. */
  const received: { topic: string; bytes: number }[] = []
  const raws: RawMqttClient[] = []
  let barriers = 0

  before(async () => {
    t = await startTestHub({ maxPacketSize: MAX_PACKET_SIZE, maxTopicLength: MAX_TOPIC_LENGTH, maxTopicLevels: MAX_TOPIC_LEVELS })
    port = t.hub.address.mqtt!.port
    device = await t.createDevice({ id: DEVICE_ID, name: 'bad-input' })
    bystander = await t.connect({ clientId: 'bystander', username: device.id, password: device.token })
    bystander.on('message', (topic, payload) => received.push({ topic, bytes: payload.length }))
    await bystander.subscribeAsync('watch/#', { qos: 0 })
  })

  after(async () => {
    for (const raw of raws) raw.destroy()
    await t.stop()
  })

  // ── helpers ──────────────────────────────────────────────────────────────────────────────

  const creds = (): Pick<ConnectOptions, 'username' | 'password'> => ({ username: device.id, password: device.token })

  async function open(): Promise<RawMqttClient> {
    const raw = await RawMqttClient.open(port)
    raws.push(raw)
    return raw
  }

  async function rawConnect(options: ConnectOptions, hubPort = port): Promise<{ client: RawMqttClient; returnCode: number }> {
    const result = await RawMqttClient.connect(hubPort, options)
    raws.push(result.client)
    return result
  }

  async function metricsText(hub: TestHub = t): Promise<string> {
    const { status, body } = await hub.api<string>('GET', '/metrics', undefined, null)
    assert.equal(status, 200)
    return body
  }

  /** `iothub_rejected_inputs_total` by reason. */
  async function rejected(hub: TestHub = t): Promise<Map<string, number>> {
    const counts = new Map<string, number>()
    for (const m of (await metricsText(hub)).matchAll(/^iothub_rejected_inputs_total\{reason="([^"]+)"\} (\d+)$/gm)) {
      counts.set(m[1]!, Number(m[2]))
    }
    return counts
  }

  /** `iothub_disconnects_total{reason}`, summed over protocols. */
  async function disconnects(reason: string): Promise<number> {
    let total = 0
    for (const m of (await metricsText()).matchAll(/^iothub_disconnects_total\{([^}]*)\} (\d+)$/gm)) {
      if (m[1]!.split(',').includes(`reason="${reason}"`)) total += Number(m[2])
    }
    return total
  }

  /**
   * Asserts that, since `before`, exactly `expected` was counted: those reasons by those
   * amounts and no other reason at all (so a refusal counted twice, or under a second reason,
   * fails). Waits for the counts to arrive, then a little longer for any late double count.
   */
  async function assertRejected(before: Map<string, number>, expected: Record<string, number>, hub: TestHub = t): Promise<void> {
    const deltas = async () => {
      const now = await rejected(hub)
      const delta: Record<string, number> = {}
      for (const reason of new Set([...now.keys(), ...before.keys()])) {
        const d = (now.get(reason) ?? 0) - (before.get(reason) ?? 0)
        if (d !== 0) delta[reason] = d
      }
      return delta
    }
    await eventually(async () => {
      const d = await deltas()
      return Object.entries(expected).every(([reason, n]) => (d[reason] ?? 0) >= n)
    }, 3000).catch(() => undefined) // the deepEqual below says what is missing
    await sleep(150)
    assert.deepEqual(await deltas(), expected)
  }

  async function sessionIds(hub: TestHub = t): Promise<string[]> {
    const { status, body } = await hub.api<{ data: { id: string }[] }>('GET', '/v1/sessions?limit=1000')
    assert.equal(status, 200)
    return body.data.map((s) => s.id).sort()
  }

  async function session(id: string, hub: TestHub = t): Promise<{ status: number; body: ApiSession }> {
    return hub.api<ApiSession>('GET', `/v1/sessions/${encodeURIComponent(id)}`)
  }

  /**
   * Publishes a marker through the bystander and waits until it comes back: anything the hub
   * was going to deliver before it has been delivered by then.
   */
  async function barrier(): Promise<void> {
    const topic = `watch/barrier/${++barriers}`
    await bystander.publishAsync(topic, 'x', { qos: 1 })
    await eventually(() => received.some((r) => r.topic === topic), 3000, `barrier ${topic}`)
  }

  /** Sends to the HTTP API with a raw body and headers of the test's choosing. */
  async function http(
    method: string,
    path: string,
    options: { body?: string; contentType?: string; authorization?: string | null } = {}
  ): Promise<{ status: number; body: unknown; headers: Headers }> {
    const authorization = options.authorization === undefined ? BASIC_ADMIN : options.authorization
    const response = await fetch(`${t.httpUrl}${path}`, {
      method,
      headers: {
        ...(authorization ? { authorization } : {}),
        ...(options.body !== undefined ? { 'content-type': options.contentType ?? 'application/json' } : {})
      },
      body: options.body
    })
    const text = await response.text()
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {
      // not JSON: keep the text
    }
    return { status: response.status, body, headers: response.headers }
  }

  // ── MQTT: packet size and framing ────────────────────────────────────────────────────────

  describe('MQTT packets larger than IOTHUB_MAX_PACKET_SIZE', () => {
    it('closes a connection as soon as its CONNECT announces too many bytes, without waiting for them', async () => {
      const before = await rejected()
      const sessionsBefore = await sessionIds()
      const raw = await open()
      // the fixed header of a 10 MB CONNECT and the start of its body: the rest never comes
      raw.send(Buffer.concat([Buffer.from([0x10]), encodeRemainingLength(10_000_000), Buffer.from([0x00, 0x04, 0x4d, 0x51])]))
      // Aedes alone would wait for the body until its 30 s connect timeout
      assert.equal(await raw.closesWithin(2000), true, 'connection closed on the announced length')
      assert.equal(raw.packets.length, 0, 'no CONNACK')
      await assertRejected(before, { packet_too_large: 1 })
      assert.deepEqual(await sessionIds(), sessionsBefore)
    })

    it('refuses a complete oversized CONNECT (a large will) without creating a session', async () => {
      const will = (bytes: number) => ({ topic: 'watch/will', payload: Buffer.alloc(bytes, 0x77) })
      const oversized = connectPacket({ clientId: 'oversized-connect', ...creds(), will: will(3000) })
      assert.ok(oversized.length > MAX_PACKET_SIZE)

      const before = await rejected()
      const sessionsBefore = await sessionIds()
      const raw = await open()
      raw.send(oversized)
      assert.equal(await raw.closesWithin(2000), true, 'connection closed')
      assert.equal(raw.packets.length, 0, 'no CONNACK')
      await assertRejected(before, { packet_too_large: 1 })
      assert.equal((await session('oversized-connect')).status, 404)
      assert.deepEqual(await sessionIds(), sessionsBefore)

      // the same CONNECT with a will that fits is accepted: only the size was refused
      const { client, returnCode } = await rawConnect({ clientId: 'oversized-connect', ...creds(), will: will(100) })
      assert.equal(returnCode, 0)
      assert.equal((await session('oversized-connect')).status, 200)
      client.send(DISCONNECT)
      await client.closed
      await eventually(async () => (await session('oversized-connect')).status === 404, 3000, 'clean session deleted')
    })

    it('delivers a PUBLISH of exactly the limit; one byte more ends the connection like a socket error', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'big-publisher', ...creds(), clean: false })
      assert.equal(returnCode, 0)

      client.send(publishOfTotalSize('watch/fits', MAX_PACKET_SIZE))
      await eventually(() => received.some((r) => r.topic === 'watch/fits'), 3000, 'PUBLISH of the limit delivered')

      const before = await rejected()
      const socketErrors = await disconnects('socket_error')
      client.send(publishOfTotalSize('watch/too-big', MAX_PACKET_SIZE + 1))
      assert.equal(await client.closesWithin(2000), true, 'connection closed')
      await assertRejected(before, { packet_too_large: 1 })

      // the persistent session stays, offline, ended as a socket error
      const offline = await eventually(async () => {
        const s = await session('big-publisher')
        return s.status === 200 && !s.body.connected ? s.body : undefined
      }, 3000, 'session offline')
      assert.equal(offline.disconnectReason, 'socket_error')
      assert.equal(await disconnects('socket_error'), socketErrors + 1)

      await barrier()
      assert.deepEqual(
        received.filter((r) => r.topic === 'watch/too-big'),
        [],
        'the oversized PUBLISH was not delivered'
      )
    })

    it('ends a clean session whose connection announces an oversized PUBLISH, without buffering it', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'huge-announcer', ...creds() })
      assert.equal(returnCode, 0)
      assert.equal((await session('huge-announcer')).status, 200)

      const before = await rejected()
      client.send(Buffer.concat([Buffer.from([0x30]), encodeRemainingLength(268_435_455), Buffer.from([0x00, 0x05])]))
      assert.equal(await client.closesWithin(2000), true, 'connection closed on the announced length')
      await assertRejected(before, { packet_too_large: 1 })
      await eventually(async () => (await session('huge-announcer')).status === 404, 3000, 'clean session ended')
      await bystander.publishAsync('watch/still-served', 'ok')
      await eventually(() => received.some((r) => r.topic === 'watch/still-served'), 3000, 'bystander still served')
    })
  })

  describe('MQTT Remaining Length longer than 4 bytes', () => {
    const fiveByteLength = [0xff, 0xff, 0xff, 0xff, 0x01]

    it('before CONNECT: counted once as malformed_packet, connection closed', async () => {
      const before = await rejected()
      const sessionsBefore = await sessionIds()
      const raw = await open()
      raw.send([0x10, ...fiveByteLength])
      assert.equal(await raw.closesWithin(2000), true, 'connection closed')
      assert.equal(raw.packets.length, 0, 'no CONNACK')
      await assertRejected(before, { malformed_packet: 1 })
      assert.deepEqual(await sessionIds(), sessionsBefore)
    })

    it('on an established connection: counted once as malformed_packet, connection closed, session ended', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'bad-length', ...creds() })
      assert.equal(returnCode, 0)
      const before = await rejected()
      client.send([0x30, ...fiveByteLength])
      assert.equal(await client.closesWithin(2000), true, 'connection closed')
      await assertRejected(before, { malformed_packet: 1 })
      await eventually(async () => (await session('bad-length')).status === 404, 3000, 'clean session ended')
    })
  })

  // ── MQTT: CONNECT strings ────────────────────────────────────────────────────────────────

  describe('MQTT CONNECT with strings that are not valid UTF-8', () => {
    const invalid: [string, Buffer][] = [
      ['bytes 0xff 0xfe', Buffer.from([0x62, 0x61, 0x64, 0xff, 0xfe])],
      ['an overlong encoding of "/"', Buffer.from([0x62, 0x61, 0x64, 0xc0, 0xaf])],
      ['an encoded UTF-16 surrogate', Buffer.from([0x62, 0x61, 0x64, 0xed, 0xa0, 0x80])],
      ['a truncated sequence', Buffer.from([0x62, 0x61, 0x64, 0xe2, 0x82])]
    ]

    for (const [what, clientId] of invalid) {
      it(`refuses a client id with ${what}: CONNACK 2, counted, nothing stored`, async () => {
        const before = await rejected()
        const sessionsBefore = await sessionIds()
        const { client, returnCode } = await rawConnect({ clientId, ...creds() })
        assert.equal(returnCode, 2, 'identifier rejected')
        assert.equal(await client.closesWithin(2000), true, 'connection closed after the CONNACK')
        await assertRejected(before, { bad_client_id: 1 })
        assert.equal((await session(clientId.toString('utf8'))).status, 404)
        assert.deepEqual(await sessionIds(), sessionsBefore)
      })
    }

    it('accepts the same CONNECT with a valid client id (the refusal is about the bytes)', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'bad-but-valid', ...creds() })
      assert.equal(returnCode, 0)
      assert.equal((await session('bad-but-valid')).status, 200)
      client.send(DISCONNECT)
      await client.closed
      await eventually(async () => (await session('bad-but-valid')).status === 404, 3000, 'clean session deleted')
    })

    it('refuses a client id containing U+0000 [MQTT-1.5.3-2], storing nothing', async () => {
      const before = await rejected()
      const sessionsBefore = await sessionIds()
      const raw = await open()
      raw.send(connectPacket({ clientId: 'nul\u0000id', ...creds() }))
      const connack = await raw.next(PacketType.CONNACK, 2000).catch(() => null)
      // the spec says: close the connection; a CONNACK "identifier rejected" first is fine too
      if (connack) assert.equal(connack.body[1], 2, `CONNACK ${connack.body[1]} to a client id with U+0000, expected 2 or no CONNACK`)
      assert.equal(await raw.closesWithin(2000), true, 'connection closed')
      assert.equal((await session('nul\u0000id')).status, 404)
      assert.deepEqual(await sessionIds(), sessionsBefore)
      await assertRejected(before, { bad_client_id: 1 })
    })

    it('refuses a username that is not UTF-8 with CONNACK 4 (not 5) under token auth', async () => {
      const before = await rejected()
      const sessionsBefore = await sessionIds()
      const { client, returnCode } = await rawConnect({ clientId: 'bad-username-token', username: Buffer.from([0x75, 0xff, 0xfe]), password: device.token })
      assert.equal(returnCode, 4, 'bad user name or password')
      assert.equal(await client.closesWithin(2000), true)
      await assertRejected(before, { bad_username: 1 })
      assert.equal((await session('bad-username-token')).status, 404)
      assert.deepEqual(await sessionIds(), sessionsBefore)
    })

    it('refuses a username that is not UTF-8 with CONNACK 4 when auth is none (auth is not what refuses it)', async () => {
      const open = await startTestHub({ auth: 'none' })
      try {
        const openPort = open.hub.address.mqtt!.port
        // a valid username is accepted on this hub
        const ok = await RawMqttClient.connect(openPort, { clientId: 'good-username', username: 'u', password: 'anything' })
        assert.equal(ok.returnCode, 0)
        ok.client.destroy()
        await eventually(async () => (await session('good-username', open)).status === 404, 3000, 'clean session ended')

        const before = await rejected(open)
        const sessionsBefore = await sessionIds(open)
        const bad = await RawMqttClient.connect(openPort, { clientId: 'bad-username', username: Buffer.from([0x75, 0xff, 0xfe]), password: 'anything' })
        assert.equal(bad.returnCode, 4, 'bad user name or password')
        assert.equal(await bad.client.closesWithin(2000), true)
        await assertRejected(before, { bad_username: 1 }, open)
        assert.equal((await session('bad-username', open)).status, 404)
        assert.deepEqual(await sessionIds(open), sessionsBefore)
        bad.client.destroy()
      } finally {
        await open.stop()
      }
    })
  })

  // ── MQTT: topics ─────────────────────────────────────────────────────────────────────────

  describe('MQTT SUBSCRIBE with topics too long, too deep or invalid', () => {
    // exactly the limit once mounted
    const atLengthLimit = `watch/${'l'.repeat(DEVICE_MAX_TOPIC_LENGTH - 'watch/'.length)}`
    const tooLong = `${atLengthLimit}x`
    // exactly the limit once mounted
    const atLevelLimit = ['watch', ...Array.from({ length: DEVICE_MAX_TOPIC_LEVELS - 2 }, (_, i) => `d${i}`), '+'].join('/')
    const tooDeep = `${atLevelLimit}/x`

    it('checks the limits it tests against', () => {
      assert.equal(`${MOUNT}${atLengthLimit}`.length, MAX_TOPIC_LENGTH)
      assert.equal(`${MOUNT}${tooLong}`.length, MAX_TOPIC_LENGTH + 1)
      assert.equal(`${MOUNT}${atLevelLimit}`.split('/').length, MAX_TOPIC_LEVELS)
      assert.equal(`${MOUNT}${tooDeep}`.split('/').length, MAX_TOPIC_LEVELS + 1)
      assert.equal(`${MOUNT}${tooDeep}`.length <= MAX_TOPIC_LENGTH, true, 'too deep but not too long')
    })

    for (const clean of [true, false]) {
      it(`grants the others and 0x80 to the refused ones in one SUBSCRIBE (${clean ? 'clean' : 'persistent'} session)`, async () => {
        const clientId = `sub-limits-${clean ? 'clean' : 'persistent'}`
        const { client, returnCode } = await rawConnect({ clientId, ...creds(), clean })
        assert.equal(returnCode, 0)
        const before = await rejected()
        client.send(
          subscribePacket(7, [
            { topic: atLengthLimit, qos: 1 },
            { topic: tooLong, qos: 0 },
            { topic: tooDeep, qos: 1 },
            { topic: atLevelLimit, qos: 0 }
          ])
        )
        const suback = subackGranted(await client.next(PacketType.SUBACK))
        assert.equal(suback.messageId, 7)
        assert.deepEqual(suback.granted, [1, 0x80, 0x80, 0])
        await assertRejected(before, { topic_too_long: 1, topic_too_deep: 1 })

        const expected = [
          { topic: atLengthLimit, brokerTopic: `${MOUNT}${atLengthLimit}`, qos: 1 },
          { topic: atLevelLimit, brokerTopic: `${MOUNT}${atLevelLimit}`, qos: 0 }
        ].sort(byTopic)
        const live = await session(clientId)
        assert.deepEqual(live.body.topics.sort(byTopic), expected, 'the refused topics are not in the session')
        // EMQX's view shows the broker's (mounted) topics
        const compat = await t.api<{ data: { topic: string }[] }>('GET', `/api/v4/subscriptions?clientid=${clientId}`)
        assert.deepEqual(compat.body.data.map((s) => s.topic).sort(), expected.map((s) => s.brokerTopic).sort())

        await client.ping() // the connection goes on
        client.send(DISCONNECT)
        await client.closed
        if (clean) {
          await eventually(async () => (await session(clientId)).status === 404, 3000, 'clean session deleted')
        } else {
          const offline = await eventually(async () => {
            const s = await session(clientId)
            return s.status === 200 && !s.body.connected ? s.body : undefined
          }, 3000, 'session offline')
          assert.deepEqual(offline.topics.sort(byTopic), expected, 'the offline session keeps only the granted topics')
        }
      })
    }

    it('closes the connection on an invalid wildcard filter, counts it, stores nothing for it', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'bad-filter', ...creds(), clean: false })
      assert.equal(returnCode, 0)
      const before = await rejected()
      client.send(subscribePacket(1, [{ topic: 'watch/#/b', qos: 1 }]))
      assert.equal(await client.closesWithin(2000), true, 'Aedes closes the connection')
      assert.equal(
        client.packets.some((p) => p.type === PacketType.SUBACK),
        false,
        'no SUBACK'
      )
      await assertRejected(before, { bad_topic: 1 })
      const offline = await eventually(async () => {
        const s = await session('bad-filter')
        return s.status === 200 && !s.body.connected ? s.body : undefined
      }, 3000, 'session offline')
      assert.equal(offline.disconnectReason, 'socket_error')
      assert.deepEqual(offline.topics, [])
    })

    it('stores no invalid filter even when a valid one shares its SUBSCRIBE (persistent session)', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'bad-filter-mixed', ...creds(), clean: false })
      assert.equal(returnCode, 0)
      const before = await rejected()
      client.send(
        subscribePacket(2, [
          { topic: 'watch/valid', qos: 1 },
          { topic: 'watch/#/b', qos: 1 }
        ])
      )
      assert.equal(await client.closesWithin(2000), true, 'Aedes closes the connection')
      await assertRejected(before, { bad_topic: 1 })
      await eventually(async () => !(await session('bad-filter-mixed')).body.connected, 3000, 'session offline')
      await t.hub.registry.settled()
      await sleep(200) // a SUBSCRIBE still being stored when the connection closed
      const { body } = await session('bad-filter-mixed')
      assert.deepEqual(
        body.topics.filter((s) => s.topic === 'watch/#/b'),
        [],
        'the invalid filter is not stored'
      )
    })

    it(`closes the connection on a filter deeper than Aedes' ceiling (100 levels), counted as topic_too_deep`, async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'very-deep', ...creds(), clean: false })
      assert.equal(returnCode, 0)
      const before = await rejected()
      client.send(subscribePacket(3, [{ topic: Array.from({ length: 101 }, () => 'd').join('/'), qos: 0 }]))
      assert.equal(await client.closesWithin(2000), true, 'connection closed')
      await assertRejected(before, { topic_too_deep: 1 })
      const offline = await eventually(async () => {
        const s = await session('very-deep')
        return s.status === 200 && !s.body.connected ? s.body : undefined
      }, 3000, 'session offline')
      assert.deepEqual(offline.topics, [])
    })
  })

  describe('MQTT PUBLISH to a topic too long, too deep or invalid', () => {
    const cases: [string, string, string][] = [
      // the limits hold for the mounted topic (see DEVICE_MAX_TOPIC_LENGTH)
      ['too long', `watch/${'x'.repeat(DEVICE_MAX_TOPIC_LENGTH)}`, 'topic_too_long'],
      // one level more than the limit once mounted, and not too long
      ['too deep', ['watch', ...Array.from({ length: DEVICE_MAX_TOPIC_LEVELS }, (_, i) => `p${i}`)].join('/'), 'topic_too_deep'],
      ['with a wildcard', 'watch/+/x', 'bad_topic']
    ]

    for (const [what, topic, reason] of cases) {
      it(`closes the connection on a PUBLISH ${what}, counts ${reason}, delivers nothing`, async () => {
        const clientId = `publisher-${reason}`
        const { client, returnCode } = await rawConnect({ clientId, ...creds() })
        assert.equal(returnCode, 0)
        // a PUBLISH on a good topic goes through on this very connection
        client.send(publishPacket({ topic: `watch/good/${reason}`, payload: 'ok', qos: 1, messageId: 1 }))
        await client.next(PacketType.PUBACK)
        await eventually(() => received.some((r) => r.topic === `watch/good/${reason}`), 3000, 'good PUBLISH delivered')

        const before = await rejected()
        client.send(publishPacket({ topic, payload: 'refused', qos: 1, messageId: 2 }))
        assert.equal(await client.closesWithin(2000), true, 'connection closed')
        assert.equal(
          client.packets.some((p) => p.type === PacketType.PUBACK),
          false,
          'no PUBACK'
        )
        await assertRejected(before, { [reason]: 1 })
        await barrier()
        assert.deepEqual(
          received.filter((r) => r.topic === topic),
          [],
          'nothing delivered to the watch/# subscriber'
        )
        await eventually(async () => (await session(clientId)).status === 404, 3000, 'clean session ended')
      })
    }

    it('the subscriber that watched all of it is still connected and served', async () => {
      const { body } = await session('bystander')
      assert.equal(body.connected, true)
      assert.equal(bystander.connected, true)
      // nothing the bystander received came from a refused PUBLISH
      for (const r of received) assert.equal(`${MOUNT}${r.topic}`.length <= MAX_TOPIC_LENGTH, true, r.topic)
      // a raw subscriber on the same filter sees publishes as they are
      const { client } = await rawConnect({ clientId: 'raw-watcher', ...creds() })
      client.send(subscribePacket(9, [{ topic: 'watch/#', qos: 0 }]))
      assert.deepEqual(subackGranted(await client.next(PacketType.SUBACK)).granted, [0])
      await bystander.publishAsync('watch/raw', 'hello')
      assert.equal(publishTopic(await client.next(PacketType.PUBLISH)), 'watch/raw')
      client.send(DISCONNECT)
      await client.closed
    })
  })

  // ── HTTP API ─────────────────────────────────────────────────────────────────────────────

  describe('HTTP API: bad query parameters', () => {
    const goodCursor = Buffer.from('a', 'utf8').toString('base64url') // "YQ"
    const cases: [string, RegExp][] = [
      ['limit=0', /limit/],
      ['limit=abc', /limit/],
      ['limit=1001', /limit/],
      ['limit=1.5', /limit/],
      ['protocol=xyz', /protocol/],
      ['connected=maybe', /connected/],
      ['clientId=', /clientId/],
      ['bogus=1', /bogus/],
      ['cursor=', /cursor/],
      ['cursor=!!!', /cursor/],
      [`cursor=${goodCursor.slice(0, 1)}R`, /cursor/] // decodes, but is not what the API gives out
    ]

    it('answers a good query with 200 (the bad ones below differ only in the parameter)', async () => {
      const { status } = await http('GET', `/v1/sessions?limit=1&cursor=${goodCursor}`)
      assert.equal(status, 200)
    })

    for (const [query, names] of cases) {
      it(`GET /v1/sessions?${query} → 400 naming the parameter, counted`, async () => {
        const before = await rejected()
        const { status, body } = await http('GET', `/v1/sessions?${query}`)
        assert.equal(status, 400)
        const error = body as ApiError
        assert.equal(error.statusCode, 400)
        assert.equal(error.error, 'Bad Request')
        assert.match(error.message, names)
        await assertRejected(before, { bad_api_request: 1 })
      })
    }
  })

  describe('HTTP API: bad bodies on POST /v1/devices', () => {
    const cases: { what: string; body: string; names: RegExp; ids: string[] }[] = [
      { what: "an id containing '/'", body: JSON.stringify({ id: 'has/slash' }), names: /\bid\b/, ids: ['has/slash'] },
      { what: 'an id too long', body: JSON.stringify({ id: 'i'.repeat(129) }), names: /\bid\b/, ids: ['i'.repeat(129)] },
      { what: 'an empty array', body: '[]', names: /fewer than 1|at least 1|empty/i, ids: [] },
      {
        what: 'an array with one bad device among good ones',
        body: JSON.stringify([{ id: 'array-good-1' }, { id: 'array/bad' }, { id: 'array-good-2' }]),
        names: /\bid\b/,
        ids: ['array-good-1', 'array-good-2']
      },
      { what: 'a number', body: '42', names: /object/, ids: [] },
      { what: 'a string', body: '"device"', names: /object/, ids: [] },
      { what: 'null', body: 'null', names: /object/, ids: [] },
      { what: 'an unknown field', body: JSON.stringify({ id: 'unknown-field', colour: 'red' }), names: /colour/, ids: ['unknown-field'] },
      { what: 'a field of the wrong type', body: JSON.stringify({ id: 'wrong-type', ext: 'not an object' }), names: /ext/, ids: ['wrong-type'] },
      { what: 'malformed JSON', body: '{"id": "malformed-json",', names: /JSON/i, ids: ['malformed-json'] },
      { what: 'an empty body', body: '', names: /empty|body/i, ids: [] }
    ]

    it('creates a good device with 201 (the bad ones below differ only in what is wrong)', async () => {
      const { status } = await http('POST', '/v1/devices', { body: JSON.stringify({ id: 'good-device', name: 'ok' }) })
      assert.equal(status, 201)
      assert.equal((await http('GET', '/v1/devices/good-device')).status, 200)
    })

    for (const c of cases) {
      it(`${c.what} → 400 saying what is wrong, counted, nothing stored`, async () => {
        const before = await rejected()
        const devicesBefore = t.hub.devices.size
        const { status, body } = await http('POST', '/v1/devices', { body: c.body })
        assert.equal(status, 400, JSON.stringify(body))
        const error = body as ApiError
        assert.equal(error.statusCode, 400)
        assert.match(error.message, c.names)
        await assertRejected(before, { bad_api_request: 1 })
        assert.equal(t.hub.devices.size, devicesBefore, 'device count unchanged')
        for (const id of c.ids) {
          if (/^[A-Za-z0-9._:@-]{1,128}$/.test(id)) assert.equal((await http('GET', `/v1/devices/${id}`)).status, 404, id)
          assert.equal(t.hub.devices.get(id), undefined, id)
        }
      })
    }
  })

  describe('HTTP API: EMQX v4 compatibility', () => {
    const cases: [string, RegExp][] = [
      ['/api/v4/clients?_page=0', /_page/],
      ['/api/v4/clients?_limit=abc', /_limit/],
      ['/api/v4/clients?conn_state=sleeping', /conn_state/],
      ['/api/v4/subscriptions?qos=3', /qos/]
    ]
    for (const [path, names] of cases) {
      it(`GET ${path} → 400 {code: 108}, counted`, async () => {
        const before = await rejected()
        const { status, body } = await http('GET', path)
        assert.equal(status, 400)
        const error = body as { code: number; message: string }
        assert.equal(error.code, 108)
        assert.match(error.message, names)
        await assertRejected(before, { bad_api_request: 1 })
      })
    }
  })

  describe('HTTP API: credentials', () => {
    const wrong: [string, string | null][] = [
      ['no credentials', null],
      ['a wrong password', `Basic ${Buffer.from('admin:wrong').toString('base64')}`],
      ['a wrong user', `Basic ${Buffer.from('root:public').toString('base64')}`],
      ['a malformed Basic header', 'Basic !!!not-base64'],
      ['another scheme', 'Bearer admin:public']
    ]

    for (const [what, authorization] of wrong) {
      it(`${what} → 401 on every protected route, and nothing done`, async () => {
        for (const path of ['/v1/sessions', '/v1/sessions/bystander', '/v1/devices/good-device', '/api/v4/clients', '/api/v4/subscriptions']) {
          const r = await http('GET', path, { authorization })
          assert.equal(r.status, 401, path)
          assert.match(r.headers.get('www-authenticate') ?? '', /^Basic/, path)
        }
        const devicesBefore = t.hub.devices.size
        const created = await http('POST', '/v1/devices', { body: JSON.stringify({ id: 'sneaky-device' }), authorization })
        assert.equal(created.status, 401)
        assert.equal(t.hub.devices.size, devicesBefore)
        assert.equal((await http('GET', '/v1/devices/sneaky-device')).status, 404)

        const kicked = await http('DELETE', '/api/v4/clients/bystander', { authorization })
        assert.equal(kicked.status, 401)
        assert.equal((await session('bystander')).body.connected, true, 'the bystander was not kicked')
      })
    }

    it('/healthz, /readyz and /metrics need no credentials', async () => {
      for (const path of ['/healthz', '/readyz', '/metrics']) {
        assert.equal((await http('GET', path, { authorization: null })).status, 200, path)
      }
    })
  })

  // ── afterwards ───────────────────────────────────────────────────────────────────────────

  describe('after all of it', () => {
    it('accepts a normal client, serves the bystander, and is ready', async () => {
      const client = await connectClient(t.mqttUrl, { clientId: 'after-all', username: device.id, password: device.token })
      try {
        const got = new Promise<string>((resolve) => client.once('message', (_topic, payload) => resolve(payload.toString())))
        await client.subscribeAsync('after/all', { qos: 1 })
        await bystander.publishAsync('after/all', 'still here', { qos: 1 })
        assert.equal(await got, 'still here')
        assert.equal((await session('after-all')).body.connected, true)
        assert.equal((await session('bystander')).body.connected, true)
      } finally {
        await client.endAsync()
      }
      const ready = await http('GET', '/readyz', { authorization: null })
      assert.equal(ready.status, 200)
      assert.equal((ready.body as { status: string }).status, 'ready')
      assert.equal((await http('GET', '/healthz', { authorization: null })).status, 200)
    })
  })
})
