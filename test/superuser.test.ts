/**
 * The MQTT superuser (the API credentials): it sees the broker's topics, but it is not a way
 * into a device's session, and with the publicly known default credentials it is refused
 * anywhere but on loopback — as the HTTP API is.
 */
import assert from 'node:assert/strict'
import { networkInterfaces } from 'node:os'
import { after, before, describe, it } from 'node:test'
import { connectClient, eventually, startTestHub, type TestHub } from './helpers/hub.js'

/** mqtt.js rejects a refused CONNECT with an error carrying the CONNACK's return code. */
const refusal = (url: string, options: Parameters<typeof connectClient>[1]) =>
  connectClient(url, options).then(
    (client) => {
      client.end(true)
      return assert.fail('the CONNECT was accepted')
    },
    (error: { code?: number }) => error.code
  )

describe('the MQTT superuser', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub({ mqttHost: '0.0.0.0' })
  })
  after(async () => {
    await t.stop()
  })

  it('cannot take over or resume a device’s session', async () => {
    const d = await t.createDevice()
    const device = await t.connect({ clientId: 'held', clean: false, username: d.id, password: d.token })
    await device.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    assert.equal(await refusal(t.mqttUrl, { clientId: 'held', clean: false, username: 'admin', password: 'public' }), 5, 'while connected')
    await device.endAsync()
    await eventually(async () => (await t.api<{ connected: boolean }>('GET', '/v1/sessions/held')).body.connected === false, 3000, 'offline')
    assert.equal(await refusal(t.mqttUrl, { clientId: 'held', clean: false, username: 'admin', password: 'public' }), 5, 'while offline')
    const session = await t.api<{ deviceId: string; topics: unknown[] }>('GET', '/v1/sessions/held')
    assert.equal(session.body.deviceId, d.id, 'the session is still the device’s')
    const back = await t.connect({ clientId: 'held', clean: false, username: d.id, password: d.token })
    assert.equal(back.connected, true, 'and the device gets it back')
  })

  it('gives a client id free at that moment to one of two devices connecting at once, not both', async () => {
    for (let round = 0; round < 5; round++) {
      const [a, b] = [await t.createDevice(), await t.createDevice()]
      const clientId = `contested-${round}`
      const results = await Promise.allSettled([
        connectClient(t.mqttUrl, { clientId, clean: false, username: a.id, password: a.token }),
        connectClient(t.mqttUrl, { clientId, clean: false, username: b.id, password: b.token })
      ])
      const accepted = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ client: r.value, device: i === 0 ? a : b }] : []))
      assert.equal(accepted.length, 1, `round ${round}: exactly one device gets the id`)
      await new Promise((r) => setTimeout(r, 100))
      assert.equal(accepted[0]!.client.connected, true, 'and keeps it')
      assert.equal((await t.api<{ deviceId: string }>('GET', `/v1/sessions/${clientId}`)).body.deviceId, accepted[0]!.device.id)
      accepted[0]!.client.end(true)
    }
  })

  it('with the default credentials, is refused from anywhere but loopback', async (context) => {
    const address = Object.values(networkInterfaces())
      .flat()
      .find((a) => a?.family === 'IPv4' && !a.internal)?.address
    if (!address) return context.skip('this machine has no non-loopback IPv4 address')
    const port = new URL(t.mqttUrl).port
    assert.equal(await refusal(`mqtt://${address}:${port}`, { clientId: 'remote-admin', username: 'admin', password: 'public' }), 5)
    const local = await t.connect({ clientId: 'local-admin', username: 'admin', password: 'public' })
    assert.equal(local.connected, true)
  })
})

describe('namespaces without authentication', () => {
  it('refuses usernames and client ids that cannot name a namespace, and client ids held by another device', async () => {
    const t = await startTestHub({ auth: 'none' })
    try {
      assert.equal(await refusal(t.mqttUrl, { clientId: 'c1', username: '+', password: 'x' }), 4, 'a username that would be a wildcard')
      assert.equal(await refusal(t.mqttUrl, { clientId: 'a/b' }), 2, 'a client id with a level separator')
      await t.connect({ clientId: 'shared', username: 'dev-a' })
      assert.equal(await refusal(t.mqttUrl, { clientId: 'shared', username: 'dev-b' }), 5)
      const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.match(metrics, /iothub_rejected_inputs_total\{reason="bad_username"\} 1/)
      assert.match(metrics, /iothub_rejected_inputs_total\{reason="bad_client_id"\} 1/)
    } finally {
      await t.stop()
    }
  })
})
