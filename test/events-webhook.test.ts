/**
 * Webhooks out (IOTHUB_EVENTS_WEBHOOK_URL): a real HTTP receiver that is up, then answers 503,
 * then is not listening at all — while devices keep connecting, subscribing and leaving and the
 * hub is restarted — and then comes back: it gets every event the hub's own stream
 * (`GET /v1/events`) has, in order (a device's events in the order they happened), each body
 * signed right; repeats only as at-least-once allows (a batch sent again), counted.
 *
 * Real parts: hubs on one SQLite file (stopped and started again), real mqtt.js clients, a real
 * HTTP receiver, the stream read over HTTP.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import type { HubConfig } from '../src/config.js'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, tempDir, type TestHub } from './helpers/hub.js'
import { metricValue } from './helpers/metrics.js'
import { SseStream } from './helpers/sse.js'
import { WebhookReceiver } from './helpers/webhook-receiver.js'

const SECRET = 'webhook-secret-of-the-test'

interface StreamEvent {
  seq: number
  type: string
  deviceId: string
}

/** Each device connects, subscribes, unsubscribes one topic and leaves; one session is persistent. */
async function churn(hub: TestHub, devices: readonly { id: string; token: string }[], round: number): Promise<void> {
  const clients: MqttClient[] = []
  for (const [i, d] of devices.entries()) {
    const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token, clean: i % 2 === 0 })
    await client.subscribeAsync([`v1/devices/me/attributes`, `r${round}/a`, `r${round}/b`], { qos: 1 })
    await client.unsubscribeAsync(`r${round}/a`)
    clients.push(client)
  }
  for (const c of clients) await c.endAsync()
  await hub.hub.registry.settled()
}

/** Every event the hub's stream holds, read until the stream is at the log's head. */
async function streamedEvents(hub: TestHub): Promise<StreamEvent[]> {
  await hub.hub.registry.settled()
  await hub.hub.properties.settled()
  const head = hub.hub.store.following().applied
  const { status, stream } = await SseStream.open(`${hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
  assert.equal(status, 200)
  await stream!.until((s) => Number(s.lastEventId) >= head, 30_000, 'the stream at the head of the log')
  const events = stream!.events<StreamEvent>()
  stream!.close()
  return events
}

describe('webhooks out', () => {
  const dataDir = tempDir()
  let receiver: WebhookReceiver | undefined
  let hub: TestHub | undefined
  after(async () => {
    await hub?.hub.stop()
    await receiver?.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('a receiver down for a while, across a hub restart, gets every event, in order, signed; repeats only at least once', async () => {
    receiver = await WebhookReceiver.start(SECRET)
    const settings: Partial<HubConfig> = {
      eventsWebhookUrl: receiver.url,
      eventsWebhookSecret: SECRET,
      eventsWebhookBatch: 7,
      eventsWebhookBackoffMax: 1000,
      eventsWebhookTimeout: 2000,
      eventsHeartbeat: 1
    }
    hub = await startTestHub(settings, dataDir)
    const devices = [await hub.createDevice({ owner: 'alice' }), await hub.createDevice({ owner: 'bob' }), await hub.createDevice({ owner: 'alice' })]
    await churn(hub, devices, 1)
    await receiver.until((r) => r.events.some((e) => e.type === 'session.ended'), 20_000, 'the first events while the receiver is up')

    // down: answering 503 …
    receiver.fail()
    await churn(hub, devices, 2)
    await eventually(async () => (await metricValue(hub!.api, 'iothub_events_delivery_failures_total{sink="webhook",reason="status"}')) >= 2, 20_000, 'failed attempts counted')
    // … then not listening at all
    await receiver.close()
    await churn(hub, devices, 3)
    await eventually(async () => (await metricValue(hub!.api, 'iothub_events_delivery_failures_total{sink="webhook",reason="network"}')) >= 1, 20_000, 'refused connections counted')
    assert.ok((await metricValue(hub.api, 'iothub_events_delivery_lag_entries{sink="webhook"}')) > 0, 'the lag shows what waits')

    // a restart while the receiver is down: the next run resumes where the delivery stopped
    await hub.hub.stop()
    hub = await startTestHub(settings, dataDir)
    await churn(hub, devices, 4)
    await receiver.up()
    const expected = await streamedEvents(hub)
    const expectedSeqs = expected.map((e) => e.seq)
    await receiver.until((r) => new Set(r.events.map((e) => e.seq)).size >= expectedSeqs.length, 60_000, 'every event at the receiver')

    assert.ok(receiver.batches.every((b) => b.signatureValid), 'every body signed with the secret')
    const received = receiver.events
    const firstArrivals: number[] = []
    const seen = new Set<number>()
    for (const e of received) {
      if (!seen.has(e.seq)) firstArrivals.push(e.seq)
      seen.add(e.seq)
    }
    assert.deepEqual(firstArrivals, expectedSeqs, 'every event of the stream, none other, first arriving in log order')
    // in order per device: each device's events, as they first arrived, in the order the stream has them
    for (const d of devices) {
      const mine = expected.filter((e) => e.deviceId === d.id).map((e) => e.seq)
      assert.ok(mine.length > 10)
      assert.deepEqual(firstArrivals.filter((s) => mine.includes(s)), mine, `the events of ${d.id} in order`)
    }
    const repeats = received.length - seen.size
    // a batch is sent again only when its delivery was not confirmed: none here was cut mid-way
    // by the receiver, so whatever repeats there are came whole, as batches
    for (const b of receiver.batches) assert.ok(b.events.length >= 1 && b.events.length <= 7)
    assert.ok(repeats <= 7, `repeats at most one batch (the one on its way at the stop), got ${repeats}`)
    console.log(`webhook: ${expectedSeqs.length} events, ${receiver.batches.length} POSTs, ${repeats} repeated, ${receiver.refused} answered 503`)

    await eventually(async () => (await metricValue(hub!.api, 'iothub_events_delivery_lag_entries{sink="webhook"}')) === 0, 20_000, 'no lag once caught up')
    assert.ok((await metricValue(hub.api, 'iothub_events_delivered_total{sink="webhook"}')) > 0)
  })
})

describe('webhooks out hold the change log', () => {
  it('is not pruned past what the webhook has not delivered; once delivered, it is', async (t) => {
    const receiver = await WebhookReceiver.start(SECRET)
    receiver.fail() // from the first event on
    const hub = await startTestHub({ logRetainEntries: 1000, eventsWebhookUrl: receiver.url, eventsWebhookSecret: SECRET, eventsWebhookBatch: 500, eventsWebhookBackoffMax: 300 })
    t.after(async () => {
      await hub.stop()
      await receiver.close()
    })
    const { status } = await hub.api('POST', '/v1/devices', Array.from({ length: 1100 }, (_, i) => ({ owner: `o${i % 3}` })))
    assert.equal(status, 201)
    await eventually(async () => (await metricValue(hub.api, 'iothub_events_delivery_failures_total{sink="webhook",reason="status"}')) >= 1, 20_000, 'a failed attempt')

    // 1,100 entries, 1,000 to keep: pruning would take the first 100, which the receiver has not had
    await hub.hub.replicas.heartbeat()
    await hub.hub.replicas.prune()
    const kept = await SseStream.open(`${hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
    assert.equal(kept.status, 200, 'the log still holds the first entry')
    kept.stream!.close()

    await receiver.up()
    await receiver.until((r) => new Set(r.events.filter((e) => e.type === 'device.created').map((e) => e.seq)).size >= 1100, 30_000, 'every device.created delivered')
    await eventually(async () => (await metricValue(hub.api, 'iothub_events_delivery_lag_entries{sink="webhook"}')) === 0, 20_000, 'no lag once delivered')
    // the position is flushed on its own schedule: pruning follows it once it is stored
    await eventually(
      async () => {
        await hub.hub.replicas.prune()
        const opened = await SseStream.open(`${hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
        opened.stream?.close()
        return opened.status === 410
      },
      20_000,
      'the first 100 entries pruned once delivered'
    )
  })
})
