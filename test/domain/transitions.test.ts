/**
 * The session state machine, event by event: every race the registry can meet — takeover in
 * either order, late events of old connections, resumes — as plain data in, data out.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compareIncarnations, newIncarnation, observeIncarnation } from '../../src/domain/incarnation.js'
import type { ConnectedEvent, LifecycleEvent } from '../../src/domain/lifecycle-event.js'
import type { SessionRecord } from '../../src/domain/session.js'
import { expire, transition, type Transition } from '../../src/domain/transitions.js'

const connected = (incarnation: string, cleanStart = true, at = 1000): ConnectedEvent => ({
  kind: 'connected',
  clientId: 'c1',
  incarnation,
  at,
  protocol: 'mqtt',
  deviceId: 'd1',
  username: 'd1',
  mountpoint: 'd1/',
  node: 'n',
  peerHost: '127.0.0.1',
  peerPort: 5000,
  sockPort: 1883,
  keepalive: 60,
  protoVer: 4,
  cleanStart,
  expiryInterval: 7200
})

/** Applies events in order as the registry would, returning the session and each outcome. */
function run(events: LifecycleEvent[], start?: SessionRecord) {
  let session = start
  let lastIncarnation: string | undefined
  const outcomes: Transition[] = []
  for (const e of events) {
    const t = transition(session, e, session === undefined ? lastIncarnation : undefined)
    outcomes.push(t)
    if (t.outcome === 'applied') {
      session = t.session ?? undefined
      lastIncarnation = t.session?.incarnation ?? lastIncarnation
    }
  }
  return { session, outcomes }
}

describe('incarnations', () => {
  it('sort in the order they were made, even within one millisecond and when the clock steps back', () => {
    const a = newIncarnation('n', 5000)
    const b = newIncarnation('n', 5000)
    const c = newIncarnation('n', 4000)
    const d = newIncarnation('n', 6000)
    assert.ok(compareIncarnations(a, b) < 0 && compareIncarnations(b, c) < 0 && compareIncarnations(c, d) < 0)
  })
})

describe('session transitions', () => {
  const old = '000000001.0000.n'
  const young = '000000002.0000.n'

  it('goes through the four steps: connect, subscribe, unsubscribe, disconnect', () => {
    const { session, outcomes } = run([
      connected(old),
      { kind: 'subscribed', clientId: 'c1', incarnation: old, at: 1001, subscriptions: [{ topic: 't', qos: 1 }] },
      { kind: 'unsubscribed', clientId: 'c1', incarnation: old, at: 1002, topics: ['t'] }
    ])
    assert.deepEqual(outcomes.map((o) => o.outcome), ['applied', 'applied', 'applied'])
    assert.equal(session?.version, 3)
    const end = transition(session, { kind: 'disconnected', clientId: 'c1', incarnation: old, at: 1003, reason: 'client_disconnect' }, old)
    assert.deepEqual(end, { outcome: 'applied', session: null, topics: { kind: 'clear' }, endedBy: 'client_disconnect' })
  })

  it('takeover, new connect first: the old connection’s late disconnect is stale', () => {
    const { session, outcomes } = run([
      connected(old),
      connected(young),
      { kind: 'disconnected', clientId: 'c1', incarnation: old, at: 1005, reason: 'taken_over' }
    ])
    assert.equal(outcomes[1]?.outcome === 'applied' && outcomes[1].tookOver?.incarnation, old)
    assert.equal(outcomes[2]?.outcome, 'stale')
    assert.equal(session?.incarnation, young)
    assert.equal(session?.connected, true)
  })

  it('takeover, old disconnect first: one session, the new one', () => {
    const { session } = run([
      connected(old),
      { kind: 'disconnected', clientId: 'c1', incarnation: old, at: 1005, reason: 'taken_over' },
      connected(young)
    ])
    assert.equal(session?.incarnation, young)
    assert.equal(session?.connected, true)
  })

  it('an old connection’s connect arriving after a newer one is stale, even after the newer session ended', () => {
    const { session, outcomes } = run([
      connected(young),
      { kind: 'disconnected', clientId: 'c1', incarnation: young, at: 1005, reason: 'client_disconnect' },
      connected(old)
    ])
    assert.equal(outcomes[2]?.outcome, 'stale')
    assert.equal(session, undefined)
  })

  it('events of an old connection never touch the new session’s topics', () => {
    const { session, outcomes } = run([
      connected(old),
      connected(young),
      { kind: 'unsubscribed', clientId: 'c1', incarnation: old, at: 1006, topics: ['t'] },
      { kind: 'subscribed', clientId: 'c1', incarnation: old, at: 1006, subscriptions: [{ topic: 'u', qos: 0 }] }
    ])
    assert.deepEqual(outcomes.slice(2).map((o) => o.outcome), ['stale', 'stale'])
    assert.equal(session?.version, 2)
  })

  it('a persistent session goes offline on disconnect, resumes with its topics, and expires', () => {
    const { session } = run([connected(old, false), { kind: 'disconnected', clientId: 'c1', incarnation: old, at: 2000, reason: 'keepalive_timeout' }])
    assert.equal(session?.connected, false)
    assert.equal(session?.disconnectReason, 'keepalive_timeout')
    assert.equal(expire(session, 2000 + 7200 * 1000 - 1), null)
    assert.deepEqual(expire(session, 2000 + 7200 * 1000), { outcome: 'applied', session: null, topics: { kind: 'clear' }, endedBy: 'expired' })

    const resumed = transition(session, connected(young, false, 3000), old)
    assert.equal(resumed.outcome === 'applied' && resumed.topics.kind, 'keep')
    assert.equal(resumed.outcome === 'applied' && resumed.session?.createdAt, 1000, 'a resumed session keeps its creation time')
    const cleaned = transition(session, connected(young, true, 3000), old)
    assert.equal(cleaned.outcome === 'applied' && cleaned.topics.kind, 'clear', 'a clean start discards the old topics')
  })

  it("a connection that comes with its broker's topics holds them from its connect on, unless it resumes a session", () => {
    const listed = [{ topic: 'd1/v1/devices/me/attributes', qos: 1 as const }]
    const withTopics = (incarnation: string, cleanStart: boolean): ConnectedEvent => ({ ...connected(incarnation, cleanStart, 3000), subscriptions: listed })
    const fresh = transition(undefined, withTopics(young, true))
    assert.deepEqual(fresh.outcome === 'applied' && fresh.topics, { kind: 'replace', subscriptions: listed }, 'a new session: the topics in the connect itself')
    const persistent = run([connected(old, false), { kind: 'subscribed', clientId: 'c1', incarnation: old, at: 1001, subscriptions: [{ topic: 'd1/x', qos: 0 }] }]).session
    const takenOver = transition(persistent, withTopics(young, true))
    assert.deepEqual(takenOver.outcome === 'applied' && takenOver.topics, { kind: 'replace', subscriptions: listed }, "a clean start: the old topics replaced by the broker's")
    const resumed = transition(persistent, withTopics(young, false))
    assert.deepEqual(resumed.outcome === 'applied' && resumed.topics, { kind: 'keep' }, 'a resumed session keeps its own, fixed after')
    const none = transition(undefined, { ...connected(young, true, 3000), subscriptions: [] })
    assert.deepEqual(none.outcome === 'applied' && none.topics, { kind: 'clear' })
  })
})

describe('incarnations across a restart', () => {
  it('sort after the stored ones even when the clock is now behind the previous run', () => {
    // as loaded from the store: minted by a previous run whose clock was an hour ahead
    const stored = `${(Date.now() + 3_600_000).toString(36).padStart(9, '0')}.0005.n`
    observeIncarnation(stored)
    const next = newIncarnation('n', Date.now())
    assert.ok(compareIncarnations(stored, next) < 0, `${next} sorts after ${stored}`)
  })
})
