/**
 * The embedded broker's storage limits, against a real hub with real mqtt.js clients: a device
 * retains no more than its limit (the rest is delivered, not retained, and counted) while
 * other devices and superusers go on retaining; the limits hold after a restart on the same
 * data dir; an offline persistent session keeps only its newest queued messages, and gets
 * exactly those when it returns.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { test, type TestContext } from 'node:test'
import type { IClientOptions, IPublishPacket, MqttClient } from 'mqtt'
import mqtt from 'mqtt'
import { loadConfig, type HubConfig } from '../src/config.js'
import { Hub } from '../src/hub.js'
import { createLogger } from '../src/observability/logger.js'
import { apiClient, type ApiCall } from './helpers/api-client.js'
import { eventually, superuserLogin, tempDir, testConfig } from './helpers/hub.js'

interface Running {
  mqttUrl: string
  api: ApiCall
  /** Connects (never reconnecting), recording every PUBLISH from before the CONNACK on. */
  connect(options: IClientOptions): Promise<{ client: MqttClient; messages: IPublishPacket[] }>
  stop(): Promise<void>
}

/**
 * The hubs of one test, on one data dir (which outlives each of them, for a restart): each hub is
 * stopped after the test at the latest, and the data dir removed only once they all have.
 */
function hubsOnOneDataDir(t: TestContext): (overrides: Partial<HubConfig>) => Promise<Running> {
  const dataDir = tempDir('iothub-broker-limits-')
  const started: Running[] = []
  t.after(async () => {
    for (const hub of started) await hub.stop()
    rmSync(dataDir, { recursive: true, force: true })
  })
  return async (overrides) => {
    const hub = await startHub(dataDir, overrides)
    started.push(hub)
    return hub
  }
}

/** A hub on `dataDir`; `stop` may be called more than once. */
async function startHub(dataDir: string, overrides: Partial<HubConfig>): Promise<Running> {
  const config = testConfig(dataDir, { auth: 'none', ...overrides })
  const hub = await Hub.open(config, { log: createLogger(config.logLevel) })
  const { mqtt: mqttAddress, http } = await hub.start()
  const mqttUrl = `mqtt://127.0.0.1:${mqttAddress!.port}`
  const clients: MqttClient[] = []
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)))
    await hub.stop()
  }
  return {
    mqttUrl,
    api: apiClient(`http://127.0.0.1:${http.port}`),
    connect: (options) =>
      new Promise((resolve, reject) => {
        const client = mqtt.connect(mqttUrl, { protocolVersion: 4, connectTimeout: 5000, ...options, reconnectPeriod: 0 })
        clients.push(client)
        const messages: IPublishPacket[] = []
        client.on('message', (_topic, _payload, packet) => messages.push(packet))
        client.once('connect', () => {
          client.removeAllListeners('error')
          client.on('error', () => undefined)
          resolve({ client, messages })
        })
        client.once('error', reject)
      }),
    stop
  }
}

async function metric(hub: Running, pattern: RegExp): Promise<number> {
  const { body } = await hub.api<string>('GET', '/metrics', undefined, null)
  const found = body.match(pattern)
  return found ? Number(found[1]) : 0
}

const retainedLimitRejects = (hub: Running) => metric(hub, /^iothub_rejected_inputs_total\{reason="retained_limit"\} (\d+)$/m)
const retainedMessages = (hub: Running) => metric(hub, /^iothub_retained_messages (\d+)$/m)
const droppedFromQueues = (hub: Running) => metric(hub, /^iothub_offline_messages_dropped_total (\d+)$/m)

const payloads = (messages: IPublishPacket[]) => messages.map((m) => m.payload.toString())

/** The retained messages a new subscriber of `filter` gets, once `expected` have arrived and a marker after them. */
async function retainedFor(hub: Running, device: string, filter: string, expected: number): Promise<string[]> {
  const { client, messages } = await hub.connect({ username: device, clientId: `${device}-reader-${Date.now()}` })
  await client.subscribeAsync(filter, { qos: 1 })
  await eventually(() => messages.length >= expected || undefined, 10_000, `${expected} retained messages on ${filter}`)
  // anything retained beyond those would have been sent before this live marker
  await client.publishAsync(filter.replace('#', 'marker'), 'end', { qos: 1 })
  await eventually(() => messages.some((m) => m.payload.toString() === 'end') || undefined, 10_000, 'the marker')
  await client.endAsync()
  return messages.filter((m) => m.retain).map((m) => m.topic).sort()
}

/**
 * Publishes retained and waits until `watcher` (a superuser subscribed to `#`) gets it: Aedes
 * acknowledges a QoS 1 publish before it stores the retained copy, but delivers only after.
 */
async function publishRetained(watcher: { messages: IPublishPacket[] }, publisher: MqttClient, brokerTopic: string, topic: string, payload: string): Promise<void> {
  await publisher.publishAsync(topic, payload, { qos: 1, retain: true })
  await eventually(() => watcher.messages.some((m) => m.topic === brokerTopic && m.payload.toString() === payload) || undefined, 10_000, `${brokerTopic} delivered`)
}

test("a device retains up to its limit, the rest delivered and counted; others still retain; the limits survive a restart", async (t) => {
  const startOnDataDir = hubsOnOneDataDir(t)
  const limits = { maxRetainedPerDevice: 3 }
  const hub = await startOnDataDir(limits)

  const watcher = await hub.connect({ ...superuserLogin(), clientId: 'watcher' })
  await watcher.client.subscribeAsync('#', { qos: 1 })
  const noisy = await hub.connect({ username: 'noisy', clientId: 'noisy' })
  for (let i = 1; i <= 5; i++) await publishRetained(watcher, noisy.client, `noisy/state/${i}`, `state/${i}`, `v${i}`)
  assert.deepEqual(payloads(watcher.messages), ['v1', 'v2', 'v3', 'v4', 'v5'], 'over the limit is still delivered')
  assert.equal(await retainedLimitRejects(hub), 2)
  assert.equal(await retainedMessages(hub), 3)
  assert.deepEqual(await retainedFor(hub, 'noisy', 'state/#', 3), ['state/1', 'state/2', 'state/3'])

  // a device at its limit still updates what it has; another device and a superuser retain on
  await publishRetained(watcher, noisy.client, 'noisy/state/1', 'state/1', 'v1b')
  const quiet = await hub.connect({ username: 'quiet', clientId: 'quiet' })
  await publishRetained(watcher, quiet.client, 'quiet/state/1', 'state/1', 'q')
  for (let i = 1; i <= 4; i++) await publishRetained(watcher, watcher.client, `fleet/${i}`, `fleet/${i}`, 'f')
  assert.equal(await retainedLimitRejects(hub), 2, 'no new refusals')
  assert.equal(await retainedMessages(hub), 3 + 1 + 4)
  assert.deepEqual(await retainedFor(hub, 'quiet', 'state/#', 1), ['state/1'])

  await hub.stop()
  const again = await startOnDataDir(limits)
  assert.equal(await retainedMessages(again), 8, 'the same retained messages after the restart')
  const watcherAgain = await again.connect({ ...superuserLogin(), clientId: 'watcher' })
  await watcherAgain.client.subscribeAsync('noisy/#', { qos: 1 })
  const back = await again.connect({ username: 'noisy', clientId: 'noisy' })
  await publishRetained(watcherAgain, back.client, 'noisy/state/6', 'state/6', 'v6')
  assert.equal(await retainedLimitRejects(again), 1, "the device's limit holds after the restart")
  await publishRetained(watcherAgain, back.client, 'noisy/state/2', 'state/2', 'v2b')
  assert.equal(await retainedLimitRejects(again), 1, 'replacing what it has still works')
  assert.deepEqual(await retainedFor(again, 'noisy', 'state/#', 3), ['state/1', 'state/2', 'state/3'])
})

test('an offline persistent session keeps its newest queued messages, and gets exactly those when it returns', async (t) => {
  const startOnDataDir = hubsOnOneDataDir(t)
  const hub = await startOnDataDir({ maxQueuedPerSession: 3 })
  const away = { username: 'sleepy', clientId: 'sleepy', clean: false }
  const first = await hub.connect(away)
  await first.client.subscribeAsync('inbox', { qos: 1 })
  await first.client.endAsync()
  await eventually(async () => {
    const { body } = await hub.api<{ connected: boolean }>('GET', '/v1/sessions/sleepy')
    return body.connected === false || undefined
  }, 10_000, 'the session offline')

  const sender = await hub.connect({ ...superuserLogin(), clientId: 'sender' })
  for (let i = 1; i <= 6; i++) await sender.client.publishAsync('sleepy/inbox', `m${i}`, { qos: 1 })
  // Aedes sends a QoS 1 PUBACK before it queues the message: the sixth drop says all six are in
  await eventually(async () => (await droppedFromQueues(hub)) === 3 || undefined, 10_000, 'three dropped')

  const back = await hub.connect(away)
  await eventually(() => back.messages.length >= 3 || undefined, 10_000, 'the queued messages')
  // oldest first: had m3 been kept, it would have come before m4
  assert.deepEqual(payloads(back.messages).slice(0, 3), ['m4', 'm5', 'm6'])
  assert.deepEqual(back.messages.slice(0, 3).map((m) => m.topic), ['inbox', 'inbox', 'inbox'])
})

test('the limits are options, IOTHUB_* variables and flags, with their documented defaults', () => {
  const defaults = loadConfig({}, [])
  assert.deepEqual(
    [defaults.maxRetainedPerDevice, defaults.maxRetainedBytesPerDevice, defaults.maxRetained, defaults.maxRetainedBytes, defaults.maxQueuedPerSession, defaults.maxQueuedBytesPerSession],
    [100, 1_048_576, 100_000, 268_435_456, 1000, 16_777_216]
  )
  const set = loadConfig(
    { IOTHUB_MAX_RETAINED_PER_DEVICE: '0', IOTHUB_MAX_RETAINED_BYTES: '1024', IOTHUB_MAX_QUEUED_PER_SESSION: '5' },
    ['--max-retained-bytes-per-device', '10', '--max-retained=7', '--max-queued-bytes-per-session', '99', '--max-queued-per-session', '6']
  )
  assert.deepEqual(
    [set.maxRetainedPerDevice, set.maxRetainedBytesPerDevice, set.maxRetained, set.maxRetainedBytes, set.maxQueuedPerSession, set.maxQueuedBytesPerSession],
    [0, 10, 7, 1024, 6, 99]
  )
  assert.throws(() => loadConfig({ IOTHUB_MAX_QUEUED_PER_SESSION: '-1' }, []), /IOTHUB_MAX_QUEUED_PER_SESSION must be a whole number/)
})
