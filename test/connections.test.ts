/**
 * How connections end and replace each other, with real mqtt.js clients and raw sockets:
 * takeover, a burst of concurrent reconnects with one clientId, keepalive timeout, kick.
 */
import assert from 'node:assert/strict'
import { connect as tcpConnect, type Socket } from 'node:net'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { connectClient, eventually, startTestHub, type TestHub } from './helpers/hub.js'

interface ApiSession {
  connected: boolean
  peerPort: number
  incarnation: string
  disconnectReason: string | null
  topics: { topic: string; brokerTopic: string; qos: number }[]
}

const localPort = (client: MqttClient): number => (client.stream as Socket).localPort!

describe('connections', () => {
  let t: TestHub
  let device: { id: string; token: string }
  before(async () => {
    t = await startTestHub()
    device = await t.createDevice()
  })
  after(async () => {
    await t.stop()
  })

  it('a second CONNECT with the same clientId takes the session over', async () => {
    const first = await t.connect({ clientId: 'takeover', username: device.id, password: device.token })
    await first.subscribeAsync('old/topic')
    const before = (await t.api<ApiSession>('GET', '/v1/sessions/takeover')).body
    const firstClosed = new Promise<void>((resolve) => first.once('close', () => resolve()))

    const second = await t.connect({ clientId: 'takeover', username: device.id, password: device.token })
    await firstClosed
    const after = (await t.api<ApiSession>('GET', '/v1/sessions/takeover')).body
    assert.equal(after.connected, true)
    assert.equal(after.peerPort, localPort(second))
    assert.notEqual(after.incarnation, before.incarnation)
    assert.deepEqual(after.topics, [], 'a clean takeover starts with no topics')

    // the old connection's close, processed after the new connect, leaves the new session alone
    await new Promise((r) => setTimeout(r, 100))
    const later = (await t.api<ApiSession>('GET', '/v1/sessions/takeover')).body
    assert.equal(later.connected, true)
    assert.equal(later.incarnation, after.incarnation)
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /iothub_disconnects_total\{protocol="mqtt",reason="taken_over"\} [1-9]/)
  })

  for (const clean of [true, false]) {
    it(`a burst of 25 concurrent reconnects with one clientId ends in one correct session (clean: ${clean})`, async () => {
      const clientId = `burst-${clean}`
      const attempts = await Promise.allSettled(
        // half with a will: storing it adds a step to their connect, so connects of one
        // clientId finish out of order unless the hub serializes them
        Array.from({ length: 25 }, (_, i) =>
          connectClient(t.mqttUrl, {
            clientId,
            clean,
            username: device.id,
            password: device.token,
            ...(i % 2 === 0 ? { will: { topic: 'wills/burst', payload: Buffer.from(`will-${i}`), qos: 1, retain: false } } : {})
          })
        )
      )
      const clients = attempts.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []))
      // every loser is closed by the broker; exactly one connection stays
      const survivors = await eventually(
        async () => {
          await new Promise((r) => setTimeout(r, 50))
          const alive = clients.filter((c) => c.connected)
          return alive.length === 1 ? alive : undefined
        },
        5000,
        'exactly one surviving connection'
      )
      const session = (await t.api<ApiSession>('GET', `/v1/sessions/${clientId}`)).body
      assert.equal(session.connected, true)
      assert.equal(session.peerPort, localPort(survivors[0]!), 'the session is the surviving connection')
      const listed = (await t.api<{ data: { clientId: string }[] }>('GET', `/v1/sessions?clientId=${clientId}`)).body
      assert.equal(listed.data.length, 1)
      await Promise.all(clients.map((c) => c.endAsync(true)))
    })
  }

  it('a client silent past 1.5 × keepalive is disconnected with reason keepalive_timeout', async () => {
    const socket = await new Promise<Socket>((resolve) => {
      const s = tcpConnect(Number(new URL(t.mqttUrl).port), '127.0.0.1', () => resolve(s))
    })
    const connack = new Promise<void>((resolve) => socket.once('data', () => resolve()))
    socket.write(
      mqttPacket.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clean: false,
        clientId: 'silent',
        keepalive: 1,
        username: device.id,
        password: Buffer.from(device.token)
      })
    )
    await connack
    assert.equal((await t.api<ApiSession>('GET', '/v1/sessions/silent')).body.connected, true)
    // no PINGREQ: after 1.5 s the broker gives up on it
    const ended = await eventually(
      async () => {
        const s = (await t.api<ApiSession>('GET', '/v1/sessions/silent')).body
        return s.connected ? undefined : s
      },
      5000,
      'keepalive timeout'
    )
    assert.equal(ended.disconnectReason, 'keepalive_timeout')
    socket.destroy()
  })

  it("refuses a device that presents another device's client id, and leaves that session alone", async () => {
    const owner = await t.createDevice()
    const other = await t.createDevice()
    const held = await t.connect({ clientId: 'bound-to-owner', clean: false, username: owner.id, password: owner.token })
    await held.subscribeAsync('owner/commands', { qos: 1 })
    await held.endAsync()
    await eventually(async () => (await t.api<ApiSession>('GET', '/v1/sessions/bound-to-owner')).body.connected === false, 5000, 'owner offline')
    await assert.rejects(
      connectClient(t.mqttUrl, { clientId: 'bound-to-owner', clean: false, username: other.id, password: other.token }),
      /Not authorized/i
    )
    const session = (await t.api<ApiSession & { deviceId: string }>('GET', '/v1/sessions/bound-to-owner')).body
    assert.equal(session.deviceId, owner.id)
    assert.equal(session.connected, false)
    assert.deepEqual(session.topics, [{ topic: 'owner/commands', brokerTopic: `${owner.id}/owner/commands`, qos: 1 }])
  })

  it('DELETE /api/v4/clients/{clientid} kicks a connected client, then discards its offline session', async () => {
    const client = await t.connect({ clientId: 'kicked', clean: false, username: device.id, password: device.token })
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
    const kick = await t.api<{ code: number }>('DELETE', '/api/v4/clients/kicked')
    assert.deepEqual(kick.body, { code: 0 })
    await closed
    // the API answered once the kick was recorded: no waiting needed
    const offline = (await t.api<ApiSession>('GET', '/v1/sessions/kicked')).body
    assert.equal(offline.connected, false)
    assert.equal(offline.disconnectReason, 'kicked')

    assert.deepEqual((await t.api('DELETE', '/api/v4/clients/kicked')).body, { code: 0 })
    assert.equal((await t.api('GET', '/v1/sessions/kicked')).status, 404)
    const unknown = await t.api<{ code: number }>('DELETE', '/api/v4/clients/kicked')
    assert.equal(unknown.status, 404)
    assert.equal(unknown.body.code, 112)
  })
})
