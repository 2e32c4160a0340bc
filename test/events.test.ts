/**
 * The event stream against the registry (issue 14): during a randomized run of connects,
 * takeovers, subscribes, unsubscribes, kicks, dropped sockets and a hub restart, a consumer that
 * rebuilds sessions and subscription entities from `GET /v1/events` alone ends equal to
 * `GET /v1/sessions` and `GET /v1/subscriptions`; every consumer sees the same sequence, without
 * gaps or repeats, whether it read it live, was cut mid-run and resumed with Last-Event-ID, or
 * read it all at the end from the store.
 *
 * Real parts: a hub on a SQLite file (restarted on the same file), real mqtt.js clients, real
 * HTTP streams read with fetch.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { Hub } from '../src/hub.js'
import { createLogger } from '../src/observability/logger.js'
import { apiClient, BASIC_ADMIN, type ApiCall } from './helpers/api-client.js'
import { connectClient, eventually, tempDir, testConfig } from './helpers/hub.js'
import { SseStream } from './helpers/sse.js'
import { listAll, mismatches, rebuild, type ApiSession, type ApiSubscription, type StreamEvent } from './helpers/event-state.js'

/** Small, seeded: a failing run can be replayed with IOTHUB_TEST_SEED. */
function random(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const TOPICS = ['v1/devices/me/attributes', 'v1/devices/me/telemetry', 'v1/devices/me/#', 'v1/devices/me/commands', 'other/+/x', 'plain']

/**
 * A consumer that keeps reading across cuts: each time its stream ends (the hub restarting, or
 * the test cutting it) it opens a new one with Last-Event-ID, as an EventSource reconnects.
 */
class ResumingConsumer {
  readonly events: StreamEvent[] = []
  private stream: SseStream | undefined
  private lastEventId: string
  resumes = 0

  constructor(start: string) {
    this.lastEventId = start
  }

  async open(httpUrl: string): Promise<void> {
    const { status, stream, body } = await SseStream.open(`${httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN, lastEventId: this.lastEventId })
    assert.equal(status, 200, JSON.stringify(body))
    this.stream = stream
  }

  /** Takes what the current stream got, and remembers where it stands. */
  collect(): void {
    if (!this.stream) return
    const got = this.stream.events<StreamEvent>()
    this.events.push(...got.slice(this.taken))
    this.taken = got.length
    this.lastEventId = this.stream.lastEventId
  }
  private taken = 0

  /** Cuts the stream (as a network would) and resumes after the last event id it saw. */
  async cutAndResume(httpUrl: string): Promise<void> {
    this.stream?.close()
    this.collect()
    this.taken = 0
    this.resumes++
    await this.open(httpUrl)
  }

  /** After the hub closed the stream itself: waits for its end, resumes on `httpUrl`, and answers the hub's last message. */
  async resumeAfterEnd(httpUrl: string): Promise<{ error?: string; resumeAfter?: number }> {
    await this.stream!.until((s) => s.ended, 20_000, 'the stream closed by the stopping hub')
    const closing = this.stream!.messages.find((m) => m.event === 'error')
    await this.cutAndResume(httpUrl)
    return closing ? (JSON.parse(closing.data) as { error: string; resumeAfter: number }) : {}
  }

  current(): StreamEvent[] {
    this.collect()
    return this.events
  }

  close(): void {
    this.stream?.close()
  }
}

function assertIncreasingWithoutRepeats(events: readonly StreamEvent[], who: string): void {
  for (let i = 1; i < events.length; i++) {
    assert.ok(events[i]!.seq > events[i - 1]!.seq, `${who}: seq ${events[i]!.seq} after ${events[i - 1]!.seq}`)
  }
}

describe('GET /v1/events against the registry', () => {
  const dataDir = tempDir('iothub-events-')
  let hub: Hub | undefined
  const clients = new Map<string, MqttClient>()
  after(async () => {
    for (const c of clients.values()) c.end(true)
    await hub?.stop()
    rmSync(dataDir, { recursive: true, force: true })
  })

  async function startHub(): Promise<{ mqttUrl: string; httpUrl: string; api: ApiCall }> {
    const config = testConfig(dataDir, { eventsHeartbeat: 1 })
    hub = new Hub(config, { log: createLogger(config.logLevel) })
    const { mqtt, http } = await hub.start()
    const httpUrl = `http://127.0.0.1:${http.port}`
    return { mqttUrl: `mqtt://127.0.0.1:${mqtt!.port}`, httpUrl, api: apiClient(httpUrl) }
  }

  it('a consumer rebuilding sessions and subscriptions from the stream alone ends equal to the API, through takeovers, kicks and a restart', async () => {
    const seed = Number(process.env.IOTHUB_TEST_SEED ?? Date.now() % 1_000_000)
    const rand = random(seed)
    const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!
    let running = await startHub()

    // live from the first change on; one cut and resumed mid-run; both resume across the restart
    const steady = new ResumingConsumer('0')
    const cut = new ResumingConsumer('0')
    await steady.open(running.httpUrl)
    await cut.open(running.httpUrl)

    const devices: { id: string; token: string }[] = []
    for (let i = 0; i < 6; i++) {
      const { status, body } = await running.api<{ id: string; token: string }>('POST', '/v1/devices', { owner: `owner-${i % 2}` })
      assert.equal(status, 201)
      devices.push(body)
    }
    // two client ids per device: the device's own and another
    const clientIds = devices.flatMap((d) => [d.id, `${d.id}-b`])
    const deviceOf = (clientId: string) => devices.find((d) => clientId.startsWith(d.id))!
    const done: Record<string, number> = {}
    const count = (what: string) => (done[what] = (done[what] ?? 0) + 1)

    async function step(): Promise<void> {
      const clientId = pick(clientIds)
      const client = clients.get(clientId)
      const live = client?.connected === true
      const roll = rand()
      if (!live || roll < 0.15) {
        // a connect; over a live connection of the same client id, a takeover
        const d = deviceOf(clientId)
        const next = await connectClient(running.mqttUrl, { clientId, username: d.id, password: d.token, clean: rand() < 0.5 })
        clients.set(clientId, next)
        count(live ? 'takeover' : 'connect')
      } else if (roll < 0.5) {
        await client.subscribeAsync(pick(TOPICS), { qos: pick([0, 1] as const) })
        count('subscribe')
      } else if (roll < 0.7) {
        await client.unsubscribeAsync(pick(TOPICS))
        count('unsubscribe')
      } else if (roll < 0.8) {
        await client.endAsync()
        count('disconnect')
      } else if (roll < 0.9) {
        const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
        const { status } = await running.api('DELETE', `/api/v4/clients/${encodeURIComponent(clientId)}`)
        // 404: the hub had ended the connection already (the client has yet to hear of it)
        assert.ok(status === 200 || status === 204 || status === 404, `kick answered ${status}`)
        if (status !== 404) {
          await closed
          count('kick')
        }
      } else {
        // the socket drops without a DISCONNECT
        const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
        client.stream.destroy()
        await closed
        count('socket_error')
      }
    }

    for (let i = 0; i < 120; i++) {
      await step()
      if (i === 50) await cut.cutAndResume(running.httpUrl)
    }

    // a graceful restart: the streams are closed with where to resume, the clients drop
    steady.collect()
    cut.collect()
    await hub!.stop()
    hub = undefined
    for (const c of clients.values()) c.end(true)
    clients.clear()
    running = await startHub()
    const closing = await steady.resumeAfterEnd(running.httpUrl)
    await cut.resumeAfterEnd(running.httpUrl)
    assert.equal(closing.error, 'server_shutdown', 'the stopping hub said why it closed the stream')

    for (let i = 0; i < 80; i++) {
      await step()
      if (i === 30) await cut.cutAndResume(running.httpUrl)
    }
    for (const c of clients.values()) if (c.connected && rand() < 0.5) await c.endAsync()
    await hub!.registry.settled()

    // the stream, rebuilt, equals the API — once the stream has caught up with the last change
    const api = running.api
    let diff: string[] = []
    for (const deadline = Date.now() + 20_000; ; ) {
      const [sessions, subscriptions] = await Promise.all([listAll<ApiSession>(api, '/v1/sessions'), listAll<ApiSubscription>(api, '/v1/subscriptions')])
      diff = mismatches(rebuild(steady.current()), sessions, subscriptions)
      if (diff.length === 0 || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.deepEqual(diff, [], `seed ${seed}: ${diff.length} mismatches`)

    // every consumer saw one sequence: the one a fresh consumer reads from the store at the end
    const steadyEvents = steady.current()
    const head = steadyEvents.at(-1)!.seq
    const fresh = await SseStream.open(`${running.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
    assert.equal(fresh.status, 200)
    await fresh.stream!.until((s) => (s.events().at(-1)?.seq ?? 0) >= head, 20_000, 'a fresh consumer reading to the head')
    const all = fresh.stream!.events<StreamEvent>().filter((e) => e.seq <= head)
    fresh.stream!.close()
    await eventually(() => (cut.current().at(-1)?.seq ?? 0) >= head, 20_000, 'the cut consumer to reach the head')
    assertIncreasingWithoutRepeats(steadyEvents, 'the steady consumer')
    assertIncreasingWithoutRepeats(cut.current(), 'the cut consumer')
    assert.deepEqual(steadyEvents.map((e) => e.seq), all.map((e) => e.seq), 'the steady consumer saw every event once')
    assert.deepEqual(cut.current().filter((e) => e.seq <= head).map((e) => e.seq), all.map((e) => e.seq), 'the cut and resumed consumer saw every event once')
    assert.deepEqual(steadyEvents, all, 'live events are the ones read back from the store')
    assert.equal(cut.resumes, 3)
    if (process.env.IOTHUB_TEST_VERBOSE) console.log(seed, done, all.length, head)
    steady.close()
    cut.close()

    // the run did what it set out to do
    for (const what of ['connect', 'takeover', 'subscribe', 'unsubscribe', 'disconnect', 'kick', 'socket_error']) assert.ok((done[what] ?? 0) > 0, `seed ${seed}: no ${what} in the run (${JSON.stringify(done)})`)
    const types = new Set(all.map((e) => e.type))
    for (const type of ['session.connected', 'session.disconnected', 'session.ended', 'session.subscribed', 'session.unsubscribed', 'subscription.created', 'subscription.deleted', 'device.created', 'device.property']) {
      assert.ok(types.has(type), `seed ${seed}: no ${type} event`)
    }
  })
})
