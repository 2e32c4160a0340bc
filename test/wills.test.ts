/**
 * Wills live in the store: a client the hub lost in a crash (kill -9) never sent DISCONNECT,
 * so its will is published as soon as the hub is back — not after Aedes' four heartbeat
 * intervals — while the will of a client that disconnected properly is not. A will on one of
 * the device's property topics changes its device entity first, whether its connection was
 * lost while the hub ran or in a crash.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { encodePacket } from '../src/embedded/packet-codec.js'
import { Hub } from '../src/hub.js'
import { createLogger } from '../src/observability/logger.js'
import { StoreError, type Mutation } from '../src/store/store.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import { startChildHub, type ChildHub } from './helpers/child-hub.js'
import { apiClient } from './helpers/api-client.js'
import { connectClient, eventually, startTestHub, superuserLogin, tempDir, testConfig, type TestHub } from './helpers/hub.js'
import { metricValue, rejectedCount } from './helpers/metrics.js'

describe('wills across a crash', () => {
  const dataDir = tempDir('iothub-wills-')
  let hub: ChildHub | undefined
  const clients: MqttClient[] = []
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await hub?.kill()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('publishes the will of a client lost to kill -9 at restart, and not that of one that said DISCONNECT', async () => {
    hub = await startChildHub(dataDir)
    const created = await hub.api<{ id: string; token: string }[]>('POST', '/v1/devices', [{}, {}])
    const [lost, polite] = created.body
    const will = (topic: string) => ({ topic, payload: Buffer.from(`${topic} is gone`), qos: 1 as const, retain: true })
    clients.push(await connectClient(hub.mqttUrl, { clientId: 'will-lost', username: lost!.id, password: lost!.token, will: will('wills/lost') }))
    const leaving = await connectClient(hub.mqttUrl, { clientId: 'will-polite', username: polite!.id, password: polite!.token, will: will('wills/polite') })
    await leaving.endAsync() // DISCONNECT: its will is discarded
    // the will's removal is queued before the session's end, and batches commit in order:
    // once the ended session is gone from the API, the removal is on disk
    const api = hub.api
    await eventually(async () => (await api('GET', '/v1/sessions/will-polite')).status === 404, 5000, 'polite session ended')
    await hub.kill('SIGKILL')

    hub = await startChildHub(dataDir)
    // each will is in its device's namespace (`{deviceId}/wills/…`): a superuser watches both
    const watcher = await connectClient(hub.mqttUrl, { clientId: 'will-watcher', ...superuserLogin() })
    clients.push(watcher)
    const retained: Record<string, string> = {}
    watcher.on('message', (topic, payload) => (retained[topic] = payload.toString()))
    await watcher.subscribeAsync('+/wills/#', { qos: 1 })
    await new Promise((r) => setTimeout(r, 300))
    assert.deepEqual(retained, { [`${lost!.id}/wills/lost`]: 'wills/lost is gone' })
  })
})

type ApiDevice = { properties: { attributes: Record<string, unknown>; telemetry: Record<string, unknown> } }

/** The retained messages Aedes holds under `pattern` (its persistence is public in its JavaScript, not in its types). */
async function retainedPayloads(hub: TestHub, pattern: string): Promise<string[]> {
  const { persistence } = hub.hub.broker!.aedes as unknown as { persistence: { createRetainedStream(pattern: string): AsyncIterable<{ payload: Buffer }> } }
  const found: string[] = []
  for await (const packet of persistence.createRetainedStream(pattern)) found.push(packet.payload.toString())
  return found
}

/** A will as a crash leaves it: stored for a client a broker that is gone held. */
function lostWill(clientId: string, deviceId: string, deviceTopic: string, payload: string): Mutation {
  const packet = { cmd: 'publish', topic: `${deviceId}/${deviceTopic}`, payload: Buffer.from(payload), qos: 1, retain: true, brokerId: 'previous#run', clientId, mountpoint: `${deviceId}/` }
  return { op: 'will.put', clientId, packet: encodePacket(packet) }
}

/** Writes `wills` into the (stopped) hub's file at `dataDir`. */
async function leaveWills(dataDir: string, wills: Mutation[]): Promise<void> {
  const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000 })
  await store.load()
  await store.commit(wills)
  await store.close()
}

/** The client ids whose wills the (stopped) hub's file at `dataDir` holds. */
async function storedWills(dataDir: string): Promise<string[]> {
  const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000 })
  const { wills } = await store.load()
  await store.close()
  return wills.map((w) => w.clientId)
}

describe('a will on a property topic', () => {
  it("changes the device entity when the hub loses the device's connection, then reaches its watchers", async () => {
    const t = await startTestHub()
    try {
      const device = await t.createDevice()
      const watcher = await t.connect({ clientId: 'will-watcher-live', ...superuserLogin() })
      const heard: string[] = []
      watcher.on('message', (topic, payload) => heard.push(`${topic} ${payload.toString()}`))
      await watcher.subscribeAsync(`${device.id}/v1/devices/me/attributes`, { qos: 1 })
      const will = { topic: 'v1/devices/me/attributes', payload: Buffer.from('{"online":false}'), qos: 1 as const, retain: false }
      const lost = await t.connect({ clientId: 'will-live', username: device.id, password: device.token, will })
      await lost.publishAsync('v1/devices/me/attributes', '{"online":true,"firmware":"1.2"}', { qos: 1 })
      lost.stream.destroy() // no DISCONNECT: the will is due
      await eventually(() => heard.length === 2, 5000, 'the publish and the will heard')
      assert.deepEqual(heard[1], `${device.id}/v1/devices/me/attributes {"online":false}`)
      const entity = await t.api<ApiDevice>('GET', `/v1/devices/${device.id}`)
      assert.deepEqual(entity.body.properties.attributes, { online: false, firmware: '1.2' })
    } finally {
      await t.stop()
    }
  })

  it('changes the device entity at the restart after a crash lost the connection; a will its entity refuses is not published', async () => {
    const dataDir = tempDir('iothub-wills-upstream-')
    const first = await startTestHub({}, dataDir)
    const lost = await first.createDevice()
    const broken = await first.createDevice()
    await first.api('PATCH', `/v1/devices/${lost.id}/attributes`, { online: true, firmware: '1.2' })
    await first.hub.stop()

    await leaveWills(dataDir, [
      lostWill('will-lost', lost.id, 'v1/devices/me/attributes', '{"online":false}'),
      lostWill('will-broken', broken.id, 'v1/devices/me/telemetry', 'not json')
    ])

    const t = await startTestHub({}, dataDir)
    let running = true
    try {
      const entity = await t.api<ApiDevice>('GET', `/v1/devices/${lost.id}`)
      assert.deepEqual(entity.body.properties.attributes, { online: false, firmware: '1.2' })
      assert.deepEqual(await retainedPayloads(t, `${lost.id}/v1/devices/me/attributes`), ['{"online":false}'])
      assert.equal(await metricValue(t.api, 'iothub_upstream_total{property="attributes",outcome="applied"}'), 1)

      // a payload its topic does not take: refused as a live device's publish is — counted, nothing stored or routed
      const refused = await t.api<ApiDevice>('GET', `/v1/devices/${broken.id}`)
      assert.deepEqual(refused.body.properties.telemetry, {})
      assert.deepEqual(await retainedPayloads(t, `${broken.id}/v1/devices/me/telemetry`), [])
      assert.equal(await rejectedCount(t.api, 'bad_payload'), 1)
      assert.equal(await metricValue(t.api, 'iothub_upstream_total{property="telemetry",outcome="refused"}'), 1)
      await t.hub.stop()
      running = false

      // both are done with: neither is published again at the next start
      assert.deepEqual(await storedWills(dataDir), [])
    } finally {
      if (running) await t.hub.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })

  it('is kept when its change cannot be stored at start: held back from Aedes, published once the store answers again, or at the next start', async () => {
    const dataDir = tempDir('iothub-wills-kept-')
    const first = await startTestHub({}, dataDir)
    const device = await first.createDevice()
    await first.hub.stop()
    const will = (clientId: string) => lostWill(clientId, device.id, 'v1/devices/me/attributes', `{"by":"${clientId}"}`)
    await leaveWills(dataDir, [will('will-kept')])

    // the store refuses the device's property changes, as a failing disk or a cut database would
    const failingStart = async () => {
      const config = testConfig(dataDir)
      const hub = await Hub.open(config, { log: createLogger(config.logLevel) })
      const commit = hub.store.commit.bind(hub.store)
      const failing = { on: true }
      hub.store.commit = ((mutations: readonly Mutation[], options?: never) =>
        failing.on && mutations.some((m) => m.op === 'device.property') ? Promise.reject(new StoreError('disk full')) : commit(mutations, options))
      await hub.start()
      return { hub, failing }
    }
    const attributes = async (api: TestHub['api']) => (await api<ApiDevice>('GET', `/v1/devices/${device.id}`)).body.properties.attributes

    // 1. the store answers again while the hub runs
    const { hub, failing } = await failingStart()
    try {
      const broker = hub.broker!
      // held back from what Aedes publishes of lost clients' wills by itself (every four heartbeats),
      // which would route it without the device entity
      const { persistence } = broker.aedes as unknown as { persistence: { streamWill(brokers: object): AsyncIterable<unknown> } }
      const seenByAedes: unknown[] = []
      for await (const w of persistence.streamWill({})) seenByAedes.push(w)
      assert.deepEqual(seenByAedes, [])
      failing.on = false
      await broker.publishKeptWills() // what the store's return runs (EmbeddedCarrier.storeReturned)
      const api = apiClient(`http://127.0.0.1:${hub.address.http.port}`)
      assert.deepEqual(await attributes(api), { by: 'will-kept' })
    } finally {
      await hub.stop()
    }
    assert.deepEqual(await storedWills(dataDir), [], 'published, so no longer stored')

    // 2. the store fails for the whole run: the next start publishes it
    await leaveWills(dataDir, [will('will-kept-again')])
    const second = await failingStart()
    await second.hub.stop()
    assert.deepEqual(await storedWills(dataDir), ['will-kept-again'])
    const t = await startTestHub({}, dataDir)
    try {
      assert.deepEqual(await attributes(t.api), { by: 'will-kept-again' })
      assert.deepEqual(await retainedPayloads(t, `${device.id}/v1/devices/me/attributes`), ['{"by":"will-kept-again"}'])
    } finally {
      await t.stop()
    }
  })
})
