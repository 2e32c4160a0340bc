/**
 * The event stream across two hub replicas (EMQX mode, one PostgreSQL): during a randomized run
 * of connects, takeovers from one replica to the other, subscribes, unsubscribes and disconnects,
 * heard by either replica, each replica's `GET /v1/events` is the same sequence of the same
 * events, and a consumer rebuilding sessions and subscription entities from either ends equal to
 * what both replicas' APIs list.
 *
 * Real parts: two hubs on a real PostgreSQL, real gRPC ExHook calls; EMQX itself is the REST
 * stand-in (test/helpers/replicas.ts).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { listAll, mismatches, rebuild, type ApiSession, type ApiSubscription, type StreamEvent } from './helpers/event-state.js'
import { replicasForTest, type Connection } from './helpers/replicas.js'
import { SseStream } from './helpers/sse.js'

const TOPICS = ['v1/devices/me/attributes', 'v1/devices/me/telemetry', 'v1/devices/me/#', 'other/x']

describe('GET /v1/events across two replicas (EMQX mode, PostgreSQL)', () => {
  it('serves one sequence from either replica, and rebuilds what both list', async (t) => {
    const devices = ['ev-dev-1', 'ev-dev-2', 'ev-dev-3', 'ev-dev-4']
    const set = await replicasForTest(t, { count: 2, devices })
    const [a, b] = set.replicas as [(typeof set.replicas)[0], (typeof set.replicas)[0]]
    const streams = await Promise.all(
      [a, b].map(async (r) => {
        const { status, stream } = await SseStream.open(`${r.hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
        assert.equal(status, 200)
        return stream!
      })
    )
    t.after(() => streams.forEach((s) => s.close()))

    let s = Number(process.env.IOTHUB_TEST_SEED ?? Date.now() % 1_000_000)
    const seed = s
    const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296)
    const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!
    const live = new Map<string, { conn: Connection; via: typeof a }>()
    const done: Record<string, number> = {}
    const count = (what: string) => (done[what] = (done[what] ?? 0) + 1)
    for (let i = 0; i < 80; i++) {
      const clientId = pick(devices)
      const via = pick([a, b])
      const held = live.get(clientId)
      const roll = rand()
      if (!held) {
        const conn = set.connection(clientId, via.node)
        await set.connect(via, conn)
        live.set(clientId, { conn, via })
        count('connect')
      } else if (roll < 0.2) {
        const to = set.connection(clientId, via.node)
        await set.takeover(held.via, held.conn, via, to)
        live.set(clientId, { conn: to, via })
        count('takeover')
      } else if (roll < 0.55) {
        await set.subscribe(held.via, held.conn, pick(TOPICS))
        count('subscribe')
      } else if (roll < 0.8) {
        await set.unsubscribe(held.via, held.conn, pick(TOPICS))
        count('unsubscribe')
      } else {
        await set.disconnect(held.via, held.conn)
        live.delete(clientId)
        count('disconnect')
      }
    }

    // both replicas list the same; each stream, rebuilt, equals it once caught up
    let diffs: string[][] = []
    for (const deadline = Date.now() + 30_000; ; ) {
      const lists = await Promise.all(
        [a, b].map(async (r) => [await listAll<ApiSession>(r.api, '/v1/sessions'), await listAll<ApiSubscription>(r.api, '/v1/subscriptions')] as const)
      )
      diffs = []
      for (const stream of streams) for (const [sessions, subscriptions] of lists) diffs.push(mismatches(rebuild(stream.events<StreamEvent>()), sessions, subscriptions))
      if (diffs.every((d) => d.length === 0) || Date.now() > deadline) break
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    assert.deepEqual(diffs, [[], [], [], []], `seed ${seed}`)

    const [fromA, fromB] = streams.map((stream) => stream.events<StreamEvent>())
    const head = Math.min(fromA!.at(-1)!.seq, fromB!.at(-1)!.seq)
    const upTo = (events: StreamEvent[]) => events.filter((e) => e.seq <= head)
    assert.deepEqual(upTo(fromA!), upTo(fromB!), 'either replica serves the same events')
    for (let i = 1; i < fromA!.length; i++) assert.ok(fromA![i]!.seq > fromA![i - 1]!.seq)
    // both replicas run as one node name here: each event names the one of the replica that committed it
    assert.ok(fromA!.every((e) => (e as unknown as { node: string }).node === a.hub.hub.config.node))
    for (const what of ['connect', 'takeover', 'subscribe', 'unsubscribe', 'disconnect']) assert.ok((done[what] ?? 0) > 0, `seed ${seed}: no ${what} (${JSON.stringify(done)})`)
  })
})
