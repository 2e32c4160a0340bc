/**
 * MQTT presence topics in EMQX mode (IOTHUB_EVENTS_MQTT=on): the hub publishes each event on
 * `$iothub/events/{type}/{clientId}` through EMQX's REST publish API — every session event of the
 * log, in log order, the same JSON the hub's stream has, QoS 1 — and when EMQX's API is down for a
 * while, what could not be published is published once it is back (at least once, in order).
 *
 * Real parts: a hub on a SQLite file, real gRPC ExHook calls, the stream read over HTTP; EMQX is
 * the REST stand-in (test/helpers/emqx-rest-standin.ts), which records what is published to it.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { startEmqxTestHub } from './helpers/emqx-hub.js'
import { eventually } from './helpers/hub.js'
import { SseStream } from './helpers/sse.js'

interface StreamEvent {
  seq: number
  type: string
  clientId: string
}

describe('MQTT presence topics in EMQX mode (through the REST API)', () => {
  it('publishes every session event in log order, and after EMQX was down what waited', async (t) => {
    // one hub whatever IOTHUB_TEST_EMQX_REPLICAS says: one replica at a time publishes, and this
    // test reads what EMQX was given, whoever gave it
    const hub = await startEmqxTestHub({ version: 5, overrides: { eventsMqtt: 'on', eventsWebhookBackoffMax: 300, eventsHeartbeat: 1 } })
    t.after(() => hub.stop())
    const emqx = hub.exhook('v3')
    const lifecycle = async (id: string, port: number) => {
      await hub.createDevice(id)
      const client = { clientid: id, username: id, mountpoint: `${id}/`, peerport: port }
      await emqx.onClientConnected(client)
      await emqx.onSessionSubscribed(client, `${id}/v1/devices/me/attributes`, { qos: 1 })
      await emqx.onClientDisconnected(client, 'normal')
    }
    const presence = () => hub.standin.published.filter((m) => m.topics.some((topic) => topic.startsWith('$iothub/events/')))

    await lifecycle('presence-1', 42_001)
    await eventually(() => presence().some((m) => m.topics[0] === '$iothub/events/session.ended/presence-1'), 20_000, 'the first device ended, published')

    // EMQX's API down: the events wait, and are published once it is back
    hub.standin.setDown(true)
    await lifecycle('presence-2', 42_002)
    await hub.hub.registry.settled()
    hub.standin.setDown(false)
    await eventually(() => presence().some((m) => m.topics[0] === '$iothub/events/session.ended/presence-2'), 20_000, 'the second device ended, published after the outage')

    // what was published is the stream's session events, each first arriving in log order
    const head = hub.hub.store.following().applied
    const { status, stream } = await SseStream.open(`${hub.httpUrl}/v1/events?after=0&types=session.connected,session.subscribed,session.disconnected,session.ended`, { authorization: BASIC_ADMIN })
    assert.equal(status, 200)
    await stream!.until((s) => Number(s.lastEventId) >= head, 20_000, 'the stream at the head of the log')
    const expected = stream!.events<StreamEvent>()
    stream!.close()
    assert.ok(expected.length >= 6, `${expected.length} session events`)

    const firstArrivals: StreamEvent[] = []
    const seen = new Set<number>()
    for (const m of presence()) {
      assert.equal(m.qos, 1)
      assert.equal(m.retain, false)
      const event = JSON.parse(m.payload.toString('utf8')) as StreamEvent
      assert.equal(m.topics[0], `$iothub/events/${event.type}/${event.clientId}`)
      if (!seen.has(event.seq)) firstArrivals.push(event)
      seen.add(event.seq)
    }
    assert.deepEqual(firstArrivals, expected, 'the same events as the stream, none other, first arriving in log order')
  })
})
