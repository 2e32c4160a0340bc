/**
 * `GET /v1/events` as a consumer meets it: filters (and heartbeats that carry a filtered stream's
 * position past what it skipped), bad parameters refused and counted, 410 with the oldest
 * sequence once the change log was pruned past a resume point, and a consumer that stops reading
 * closed with where to resume — from where it then misses and repeats nothing.
 *
 * Real parts: a hub on a SQLite file, real mqtt.js clients, real HTTP streams read with fetch.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { metricValue, rejectedCount } from './helpers/metrics.js'
import { SseStream } from './helpers/sse.js'

interface StreamEvent {
  seq: number
  type: string
  deviceId: string
  owner: string
}

async function openStream(hub: TestHub, query: string, options: { lastEventId?: string; paused?: boolean } = {}): Promise<SseStream> {
  const { status, stream, body } = await SseStream.open(`${hub.httpUrl}/v1/events${query}`, { authorization: BASIC_ADMIN, ...options })
  assert.equal(status, 200, JSON.stringify(body))
  return stream!
}

const seqs = (events: readonly { seq: number }[]) => events.map((e) => e.seq)

describe('GET /v1/events: filters, heartbeats and bad parameters', () => {
  let hub: TestHub
  before(async () => {
    hub = await startTestHub({ eventsHeartbeat: 1 })
  })
  after(() => hub.stop())

  it('streams only the events a filter takes, all of them, and heartbeats move a filtered stream past what it skipped', async () => {
    const all = await openStream(hub, '?after=0')
    const byType = await openStream(hub, '?after=0&types=session.connected,subscription.created')
    const alice = await hub.createDevice({ owner: 'alice' })
    const bob = await hub.createDevice({ owner: 'bob' })
    const byDevice = await openStream(hub, `?after=0&deviceId=${alice.id}`)
    const byOwner = await openStream(hub, '?after=0&owner=bob')
    const none = await openStream(hub, '?after=0&types=device.deleted')
    for (const d of [alice, bob]) {
      const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token })
      await client.subscribeAsync(['v1/devices/me/attributes', 'other/topic'], { qos: 1 })
      await client.unsubscribeAsync('v1/devices/me/attributes')
      await client.endAsync()
    }
    await hub.hub.registry.settled()
    // the last change (a connectinfo write after the last disconnect) is in when all has it
    await all.until((s) => s.events<StreamEvent>().filter((e) => e.type === 'device.property').length === 4)
    const everything = all.events<StreamEvent>()
    const head = everything.at(-1)!.seq
    const expect = {
      byType: everything.filter((e) => e.type === 'session.connected' || e.type === 'subscription.created'),
      byDevice: everything.filter((e) => e.deviceId === alice.id),
      byOwner: everything.filter((e) => e.owner === 'bob')
    }
    assert.equal(expect.byType.length, 4, 'two connects, two subscription entities')
    assert.ok(expect.byOwner.length > 5 && expect.byOwner.every((e) => e.deviceId === bob.id))
    for (const [name, stream] of Object.entries({ byType, byDevice, byOwner })) {
      const want = seqs(expect[name as keyof typeof expect])
      await stream.until((s) => s.events().length >= want.length, 20_000, name)
      assert.deepEqual(seqs(stream.events()), want, `${name} got exactly the events its filter takes`)
    }
    // a stream whose filter took nothing: the heartbeat carries it to the head all the same
    await none.until((s) => s.lastEventId === String(head), 20_000, 'the heartbeat moving the last event id')
    assert.equal(none.messages.length, 0)
    assert.ok(none.comments.includes('heartbeat'))
    assert.ok((await metricValue(hub.api, 'iothub_event_consumers')) >= 5)
    assert.ok((await metricValue(hub.api, 'iothub_events_sent_total')) >= everything.length)
    for (const s of [all, byType, byDevice, byOwner, none]) s.close()
  })

  it('answers bad parameters 400, counted, and a request without credentials 401', async () => {
    const before = await rejectedCount(hub.api, 'bad_api_request')
    const bad = ['?after=-1', '?after=abc', '?after=1.5', '?after=', '?types=session.connected,bogus', '?types=', '?deviceId=', '?owner=', '?unknown=1']
    for (const query of bad) {
      const { status, body } = await SseStream.open(`${hub.httpUrl}/v1/events${query}`, { authorization: BASIC_ADMIN })
      assert.equal(status, 400, `${query}: ${JSON.stringify(body)}`)
      assert.match((body as { message: string }).message, /after|types|deviceId|owner|unknown|additional/, query)
    }
    const badHeader = await SseStream.open(`${hub.httpUrl}/v1/events`, { authorization: BASIC_ADMIN, lastEventId: 'x1' })
    assert.equal(badHeader.status, 400)
    assert.equal(await rejectedCount(hub.api, 'bad_api_request'), before + bad.length + 1)
    assert.equal((await SseStream.open(`${hub.httpUrl}/v1/events`)).status, 401)
  })
})

describe('GET /v1/events after the change log was pruned', () => {
  let hub: TestHub
  before(async () => {
    hub = await startTestHub({ logRetainEntries: 1000 })
  })
  after(() => hub.stop())

  it('answers 410 with the oldest sequence it holds, and resumes exactly from there', async () => {
    const { status } = await hub.api('POST', '/v1/devices', Array.from({ length: 1100 }, (_, i) => ({ owner: `o${i % 3}` })))
    assert.equal(status, 201)
    await hub.hub.replicas.heartbeat()
    await hub.hub.replicas.prune()
    const gone = await SseStream.open(`${hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
    assert.equal(gone.status, 410)
    const oldest = (gone.body as { oldest: number }).oldest
    assert.equal(oldest, 101, JSON.stringify(gone.body))
    const byHeader = await SseStream.open(`${hub.httpUrl}/v1/events`, { authorization: BASIC_ADMIN, lastEventId: '57' })
    assert.equal(byHeader.status, 410)
    const resumed = await openStream(hub, `?after=${oldest - 1}`)
    await resumed.until((s) => s.events().length >= 1000)
    assert.deepEqual(seqs(resumed.events()), Array.from({ length: 1000 }, (_, i) => oldest + i))
    resumed.close()
  })
})

describe('GET /v1/events with a consumer that stops reading', () => {
  let hub: TestHub
  before(async () => {
    hub = await startTestHub({ eventsBuffer: 262_144 })
  })
  after(() => hub.stop())

  it('closes it as slow with the sequence to resume after, and the resumed stream misses and repeats nothing', async () => {
    const device = await hub.createDevice()
    const fast = await openStream(hub, '')
    const slow = await openStream(hub, '', { paused: true })
    // ~100 KiB a change: the slow consumer's socket fills within a few dozen. Live, it is closed
    // at once; still catching up (changes kept coming while it read the log), once its full
    // socket has not drained for 30 s
    const value = 'x'.repeat(100_000)
    const slowClosed = () => metricValue(hub.api, 'iothub_event_consumers_closed_total{reason="slow"}')
    let changes = 0
    while (changes < 150 && (await slowClosed()) === 0) {
      const { status } = await hub.api('PATCH', `/v1/devices/${device.id}/attributes`, { big: `${changes}${value}` })
      assert.equal(status, 200)
      changes++
    }
    await eventually(async () => (await slowClosed()) === 1, 60_000, 'the consumer that does not read to be closed')
    // it reads again (its last message waits behind what filled its socket), and more changes come
    slow.resume()
    for (let i = 0; i < 5; i++) await hub.api('PATCH', `/v1/devices/${device.id}/attributes`, { big: `after-${i}` })
    await fast.until((s) => s.events().length === changes + 5, 30_000, 'the fast consumer')
    const everything = fast.events<StreamEvent>()
    await slow.until((s) => s.ended, 30_000, 'the slow stream to end')
    const closing = slow.messages.at(-1)!
    assert.equal(closing.event, 'error')
    const { error, resumeAfter } = JSON.parse(closing.data) as { error: string; resumeAfter: number }
    assert.equal(error, 'slow')
    const got = slow.events<StreamEvent>()
    assert.ok(got.length < everything.length, 'the slow consumer was closed before it had everything')
    assert.deepEqual(seqs(got), seqs(everything.filter((e) => e.seq <= resumeAfter)), 'it had every event up to the one it resumes after')
    assert.equal(slow.lastEventId, String(resumeAfter))

    const resumed = await openStream(hub, '', { lastEventId: slow.lastEventId })
    const rest = everything.filter((e) => e.seq > resumeAfter)
    await resumed.until((s) => s.events().length >= rest.length, 30_000, 'the resumed stream')
    assert.deepEqual(seqs(resumed.events()), seqs(rest))
    assert.equal(await metricValue(hub.api, 'iothub_event_consumers_closed_total{reason="slow"}'), 1, 'only the consumer that did not read was closed')
    fast.close()
    resumed.close()
  })
})
