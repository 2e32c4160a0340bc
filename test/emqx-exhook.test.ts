/**
 * EMQX mode through ExHook: a real gRPC client calls the hub's HookProvider as EMQX 4.3/4.4 (v1),
 * 5.0–5.8 (v2) and 5.9+ (v3) do; the hub's REST side talks to the EMQX REST stand-in.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import type { ExhookVersion } from '../src/emqx/exhook/protos.js'
import { oneHubOnly, startEmqxTestHub, type EmqxTestHub } from './helpers/emqx-hub.js'
import { rejectedCount } from './helpers/metrics.js'

interface SessionView {
  clientId: string
  deviceId: string
  connected: boolean
  node: string
  mountpoint: string
  topics: { topic: string; brokerTopic: string; qos: number }[]
}

const VERSIONS: ExhookVersion[] = ['v1', 'v2', 'v3']

/** In the replicated run (test/helpers/alternating.ts) each replica counts in its own /metrics only the calls it answered. */
const COUNTS_ONE_HUBS_METRICS = oneHubOnly("it counts in one hub's /metrics, and each replica counts only the calls it answered")
/** In the replicated run a node's session.resumed and its client.connected go to different replicas. */
const RESUMED_MARK_IN_ONE_REPLICA = oneHubOnly('the session.resumed mark that makes the next client.connected persistent is kept by the replica that answered it (ExhookServer.resumed)')
/** In the replicated run a client's client.authenticate and its client.authorize go to different replicas. */
const SUPERUSER_MARK_IN_ONE_REPLICA = oneHubOnly('the superuser mark client.authenticate leaves is kept by the replica that answered it (EmqxSource.superusers)')
const FLAPPING_PER_REPLICA = oneHubOnly('each replica counts the connects it answers, and counts in its own /metrics only the calls it answered')
const THROTTLE_PER_REPLICA = oneHubOnly('each replica has a login throttle of its own, and counts in its own /metrics only the calls it answered')

describe('EMQX mode: ExHook', () => {
  let t: EmqxTestHub
  before(async () => {
    // the login throttle's first wait at 5 s, not 1: the guesser's next call is checked within it on a loaded machine too
    t = await startEmqxTestHub({ version: 5, overrides: { loginBackoffFirst: 5000 } })
  })
  after(() => t.stop())

  for (const version of VERSIONS) {
    it(`${version}: the provider answers the hooks the hub uses, named as ${version} names them`, async () => {
      const emqx = t.exhook(version)
      const loaded = await emqx.onProviderLoaded()
      const names = loaded.hooks.map((h) => h.name)
      for (const hook of ['client.connected', 'client.disconnected', 'client.authenticate', 'session.subscribed', 'session.unsubscribed', 'session.terminated', 'message.publish']) {
        assert.ok(names.includes(hook), `${hook} in ${names.join(', ')}`)
      }
      assert.ok(names.includes(version === 'v1' ? 'client.check_acl' : 'client.authorize'))
      assert.deepEqual(loaded.hooks.find((h) => h.name === 'message.publish')!.topics.sort(), [
        '+/v1/devices/me/attributes',
        '+/v1/devices/me/command/response',
        '+/v1/devices/me/raw',
        '+/v1/devices/me/telemetry'
      ])
    })

    it(`${version}: authenticate, connect, subscribe, unsubscribe, disconnect make and end the entities`, async () => {
      const id = `exhook-${version}`
      const device = await t.createDevice(id)
      const emqx = t.exhook(version)
      const client = { clientid: id, username: id, mountpoint: `${id}/`, peerport: 41000 }

      const refused = await emqx.onClientAuthenticate({ ...client, password: 'wrong-token' }, true)
      assert.deepEqual([refused.type, refused.bool_result], ['STOP_AND_RETURN', false])
      const accepted = await emqx.onClientAuthenticate({ ...client, password: device.token }, false)
      assert.deepEqual([accepted.type, accepted.bool_result], ['STOP_AND_RETURN', true])

      await emqx.onClientConnected(client)
      let session = (await t.api<SessionView>('GET', `/v1/sessions/${id}`)).body
      assert.equal(session.connected, true)
      assert.equal(session.deviceId, id)
      assert.equal(session.node, 'emqx@127.0.0.1')
      assert.equal(session.mountpoint, `${id}/`)

      // EMQX hands session.subscribed the mounted topic
      await emqx.onSessionSubscribed(client, `${id}/v1/devices/me/attributes`, { qos: 1 })
      session = (await t.api<SessionView>('GET', `/v1/sessions/${id}`)).body
      assert.deepEqual(session.topics.map((s) => [s.topic, s.brokerTopic, s.qos]), [['v1/devices/me/attributes', `${id}/v1/devices/me/attributes`, 1]])
      const entities = (await t.api<{ data: { topic: string; properties: string[] }[] }>('GET', `/v1/subscriptions?deviceId=${id}`)).body.data
      assert.deepEqual(entities.map((e) => [e.topic, e.properties]), [['v1/devices/me/attributes', ['attributes']]])

      await emqx.onSessionUnsubscribed(client, `${id}/v1/devices/me/attributes`)
      assert.equal((await t.api<{ data: unknown[] }>('GET', `/v1/subscriptions?deviceId=${id}`)).body.data.length, 0)

      await emqx.onClientDisconnected(client, 'normal')
      assert.equal((await t.api('GET', `/v1/sessions/${id}`)).status, 404, 'a clean session ends with its connection')
    })
  }

  it('authorize keeps a device inside its namespace; the API credentials are a superuser', { skip: SUPERUSER_MARK_IN_ONE_REPLICA }, async () => {
    const emqx = t.exhook('v2')
    const mounted = { clientid: 'acl-1', username: 'acl-1', mountpoint: 'acl-1/' }
    assert.equal((await emqx.onClientAuthorize(mounted, 'SUBSCRIBE', 'v1/devices/me/#', true)).bool_result, true)
    assert.equal((await emqx.onClientAuthorize(mounted, 'SUBSCRIBE', '$SYS/brokers/#', true)).bool_result, false)
    // without EMQX's mountpoint the topic itself must be the device's
    const bare = { clientid: 'acl-2', username: 'acl-2' }
    assert.equal((await emqx.onClientAuthorize(bare, 'PUBLISH', 'acl-2/v1/devices/me/telemetry', true)).bool_result, true)
    assert.equal((await emqx.onClientAuthorize(bare, 'SUBSCRIBE', '+/v1/devices/me/telemetry', true)).bool_result, false)
    assert.equal((await emqx.onClientAuthorize(bare, 'SUBSCRIBE', 'acl-1/v1/devices/me/attributes', true)).bool_result, false)
    // the API username alone is not a superuser: only a login with the API password makes one
    assert.equal((await emqx.onClientAuthorize({ clientid: 'ops', username: 'admin' }, 'SUBSCRIBE', '+/v1/devices/me/telemetry', true)).bool_result, false)
    const superuser = await emqx.onClientAuthenticate({ clientid: 'ops', username: 'admin', password: 'public', peerhost: '127.0.0.1' }, false)
    assert.equal(superuser.bool_result, true)
    assert.equal((await emqx.onClientAuthorize({ clientid: 'ops', username: 'admin' }, 'SUBSCRIBE', '+/v1/devices/me/telemetry', true)).bool_result, true)
    // a superuser reads the hub's event topics, but nobody publishes there, nor on the broker's own
    assert.equal((await emqx.onClientAuthorize({ clientid: 'ops', username: 'admin' }, 'SUBSCRIBE', '$iothub/events/#', true)).bool_result, true)
    const refusedBefore = await rejectedCount(t.api, 'bad_topic')
    assert.equal((await emqx.onClientAuthorize({ clientid: 'ops', username: 'admin' }, 'PUBLISH', '$iothub/events/session.connected/x', true)).bool_result, false)
    assert.equal((await emqx.onClientAuthorize({ clientid: 'ops', username: 'admin' }, 'PUBLISH', '$SYS/brokers/x', true)).bool_result, false)
    assert.equal((await emqx.onClientAuthorize(mounted, 'PUBLISH', '$iothub/events/session.connected/x', true)).bool_result, false)
    assert.equal(await rejectedCount(t.api, 'bad_topic'), refusedBefore + 3)
  })

  it("refuses a device that presents another device's id as its client id, and an address that guessed tokens too often", { skip: THROTTLE_PER_REPLICA }, async () => {
    const victim = await t.createDevice('emqx-victim')
    const squatter = await t.createDevice('emqx-squatter')
    const emqx = t.exhook('v2')
    const squat = await emqx.onClientAuthenticate({ clientid: 'emqx-victim', username: 'emqx-squatter', password: squatter.token, peerhost: '10.9.0.1' }, false)
    assert.equal(squat.bool_result, false)
    const own = await emqx.onClientAuthenticate({ clientid: 'emqx-victim', username: 'emqx-victim', password: victim.token, peerhost: '10.9.0.2' }, false)
    assert.equal(own.bool_result, true)
    // the login throttle: 10 wrong tokens a minute, then the address is refused unseen
    const guesser = { clientid: 'guesser', username: 'emqx-victim', peerhost: '10.9.0.3' }
    for (let i = 0; i < 11; i++) assert.equal((await emqx.onClientAuthenticate({ ...guesser, password: `guess-${i}` }, false)).bool_result, false)
    assert.equal((await emqx.onClientAuthenticate({ ...guesser, password: victim.token }, false)).bool_result, false, 'refused unseen while throttled')
    const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
    assert.match(metrics, /^iothub_rejected_inputs_total\{reason="client_id_reserved"\} 1$/m)
    assert.match(metrics, /^iothub_rejected_inputs_total\{reason="login_throttled"\} 1$/m)
  })

  it('a takeover across two nodes survives hook calls out of order', async () => {
    const id = 'takeover-1'
    await t.createDevice(id)
    const nodeA = t.exhook('v3', 'emqx@node-a')
    const nodeB = t.exhook('v3', 'emqx@node-b')
    const onA = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-a', peerport: 50001 }
    const onB = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-b', peerport: 50002 }
    await nodeA.onClientConnected(onA)
    await nodeB.onClientConnected(onB)
    // node A's disconnect of the old connection arrives after node B's connect, once as EMQX
    // names it and once as a plain close: neither is the client going offline
    await nodeA.onClientDisconnected(onA, 'takenover')
    await nodeA.onClientDisconnected(onA, 'normal')
    await nodeA.onSessionSubscribed(onA, `${id}/v1/devices/me/commands`, { qos: 1 })
    await nodeB.onClientConnected(onB) // EMQX sending a call again changes nothing
    const session = (await t.api<SessionView>('GET', `/v1/sessions/${id}`)).body
    assert.equal(session.connected, true)
    assert.equal(session.node, 'emqx@node-b')
    assert.deepEqual(session.topics, [], 'the old connection cannot subscribe for the new one')
    await nodeB.onClientDisconnected(onB, 'keepalive_timeout')
    assert.equal((await t.api('GET', `/v1/sessions/${id}`)).status, 404)
  })

  it('a resumed persistent session stays offline with its entities after its disconnect', { skip: RESUMED_MARK_IN_ONE_REPLICA }, async () => {
    const id = 'persistent-1'
    await t.createDevice(id)
    const emqx = t.exhook('v2')
    const client = { clientid: id, username: id, mountpoint: `${id}/` }
    await emqx.onSessionResumed(client)
    await emqx.onClientConnected(client)
    await emqx.onSessionSubscribed(client, `${id}/v1/devices/me/attributes`, { qos: 1 })
    await emqx.onClientDisconnected(client, 'sock_closed')
    const session = (await t.api<SessionView>('GET', `/v1/sessions/${id}`)).body
    assert.equal(session.connected, false)
    assert.equal((await t.api<{ data: unknown[] }>('GET', `/v1/subscriptions?deviceId=${id}`)).body.data.length, 1)
    // EMQX ends the session (expired): the entities go with it
    await emqx.onSessionTerminated(client, 'expired')
    assert.equal((await t.api('GET', `/v1/sessions/${id}`)).status, 404)
    assert.equal((await t.api<{ data: unknown[] }>('GET', `/v1/subscriptions?deviceId=${id}`)).body.data.length, 0)
  })

  it('message.publish stores upstream data before answering, and refuses a bad payload', async () => {
    const id = 'upstream-1'
    await t.createDevice(id)
    const emqx = t.exhook('v2')
    const client = { clientid: id, username: id, mountpoint: `${id}/` }
    await emqx.onClientConnected(client)
    const ok = await emqx.onMessagePublish({ from: id, topic: `${id}/v1/devices/me/attributes`, payload: '{"fw":"2.1"}', qos: 1 })
    assert.equal(ok.type, 'IGNORE')
    const entity = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', `/apis/core/v1/entities/${id}?type=device`)).body
    assert.equal(entity.properties.attributes.fw, '2.1')

    const bad = await emqx.onMessagePublish({ from: id, topic: `${id}/v1/devices/me/attributes`, payload: 'not json', qos: 1 })
    assert.equal(bad.type, 'STOP_AND_RETURN')
    assert.equal(bad.message?.headers.allow_publish, 'false')
    const after = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', `/apis/core/v1/entities/${id}?type=device`)).body
    assert.deepEqual(after.properties.attributes, entity.properties.attributes)
    await emqx.onClientDisconnected(client, 'normal')
  })

  it('message.publish of a client whose device the hub does not hold stores nothing: EMQX routes it as any publish', async () => {
    const id = 'upstream-ghost'
    const emqx = t.exhook('v2')
    const client = { clientid: id, username: id, mountpoint: `${id}/` }
    await emqx.onClientConnected(client)
    const answered = await emqx.onMessagePublish({ from: id, topic: `${id}/v1/devices/me/attributes`, payload: '{"fw":"9.9"}', qos: 1 })
    assert.equal(answered.type, 'IGNORE', 'not refused: EMQX goes on routing it')
    await emqx.onClientDisconnected(client, 'normal')
    // a device registered with that id later starts empty: nothing was stored for the unregistered one
    await t.createDevice(id)
    const entity = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', `/apis/core/v1/entities/${id}?type=device`)).body
    assert.deepEqual(entity.properties.attributes, {})
  })

  it('malformed hook calls answer INVALID_ARGUMENT, are counted, and store nothing', { skip: COUNTS_ONE_HUBS_METRICS }, async () => {
    const emqx = t.exhook('v2')
    const before = await badHookCount(t)
    await assert.rejects(emqx.onClientConnected({ clientid: '' }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT)
    await assert.rejects(emqx.onClientConnected({ clientid: 'coap-thing', protocol: 'lwm2m-ish' }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT)
    await assert.rejects(emqx.onSessionSubscribed({ clientid: 'x', username: 'x' }, 'a/'.repeat(600) + 'b'), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT)
    assert.equal((await t.api('GET', '/v1/sessions/coap-thing')).status, 404)
    assert.equal((await badHookCount(t)) - before, 2, 'the two bad connects counted as bad_hook (the long topic as topic_too_deep)')
  })

  it('bytes that are not protobuf are refused and counted, and the server goes on', { skip: COUNTS_ONE_HUBS_METRICS }, async () => {
    const before = await badHookCount(t)
    const raw = new grpc.Client(t.exhookAddress, grpc.credentials.createInsecure())
    const identity = (b: Buffer) => b
    const error = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest('/emqx.exhook.v2.HookProvider/OnClientConnected', identity, identity, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]), (e) => resolve(e))
    )
    raw.close()
    assert.ok(error, 'answered with an error')
    assert.notEqual(error.code, grpc.status.OK)
    assert.equal((await badHookCount(t)) - before, 1)
    const loaded = await t.exhook('v2').onProviderLoaded()
    assert.ok(loaded.hooks.length > 0, 'still serving')
  })
})

async function badHookCount(t: EmqxTestHub): Promise<number> {
  const { body } = await t.api<string>('GET', '/metrics', undefined, null)
  const line = body.split('\n').find((l) => l.startsWith('iothub_rejected_inputs_total{reason="bad_hook"}'))
  return line ? Number(line.split(' ')[1]) : 0
}

describe('EMQX mode: a device connecting in a loop', () => {
  let t: EmqxTestHub
  before(async () => {
    t = await startEmqxTestHub({ version: 5, overrides: { maxConnectsPerDevice: 3, flappingBan: 60_000 } })
  })
  after(() => t.stop())

  it('is refused by client.authenticate once over its connects a minute, and counted', { skip: FLAPPING_PER_REPLICA }, async () => {
    const device = await t.createDevice('exhook-flapper')
    const emqx = t.exhook('v2')
    const login = { clientid: device.id, username: device.id, password: device.token, mountpoint: `${device.id}/` }
    const before = await rejectedCount(t.api, 'flapping')
    for (let i = 0; i < 3; i++) assert.equal((await emqx.onClientAuthenticate(login, false)).bool_result, true, `connect ${i + 1}`)
    const refused = await emqx.onClientAuthenticate(login, false)
    assert.deepEqual([refused.type, refused.bool_result], ['STOP_AND_RETURN', false])
    assert.equal((await rejectedCount(t.api, 'flapping')) - before, 1)
    // another device is not held
    const other = await t.createDevice('exhook-steady')
    assert.equal((await emqx.onClientAuthenticate({ clientid: other.id, username: other.id, password: other.token }, false)).bool_result, true)
  })
})
