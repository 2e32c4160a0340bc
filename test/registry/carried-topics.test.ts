/**
 * A session's topic rows whose change its own change-log entry already says (a `session.version`'s
 * `subscribed` / `unsubscribed`, a `session.delete`; the entry's `carriesTopics`) are written but
 * not logged again on their own (store.ts, `carried`). Whoever follows the log must still end with
 * the topics the rows hold: here random lives of a few sessions — connects clean or persistent,
 * takeovers, subscribes, unsubscribes, ends, expiries — go through the real transitions and
 * sessionMutations, and three TopicBooks are compared after every step: one fed every topic row as
 * written (the truth), one fed what the log now holds through the real cache applier, and one fed
 * what older logs held (every topic change as an entry of its own, session entries that carry none).
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { newIncarnation } from '../../src/domain/incarnation.js'
import type { ConnectedEvent } from '../../src/domain/lifecycle-event.js'
import type { QoS, SessionRecord, TopicSubscription } from '../../src/domain/session.js'
import { endConnection, expire, transition, type Applied } from '../../src/domain/transitions.js'
import { cacheApplier, type Caches } from '../../src/registry/cache-applier.js'
import { sessionMutations } from '../../src/registry/session-mutations.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import { isChange, isLogged, type LogEntry } from '../../src/store/change-log.js'
import type { Mutation } from '../../src/store/store.js'
import { seededRandom } from '../helpers/random.js'

const IDS = ['s0', 's1', 's2']
const FILTERS = (id: string) => [`${id}/t0`, `${id}/t1`, `${id}/+/x`, `${id}/#`]

/** The real cache applier over one TopicBook; the other caches take nothing here. */
function follower(book: TopicBook): (changes: readonly Mutation[]) => void {
  const ignore = { applyChange: () => undefined }
  const caches = { registry: { ...ignore, caching: { holdsFleet: true }, topics: book, subscriptions: ignore }, devices: ignore, properties: ignore }
  const apply = cacheApplier(caches as unknown as Caches)
  let seq = 0
  return (changes) => apply(changes.map((change) => ({ seq: ++seq, at: 0, change }) as LogEntry), 'here')
}

/** A change as a log written before topic rows were carried holds it. */
function asOlderLog(m: Mutation): Mutation {
  if (!('carriesTopics' in m)) return m
  const { carriesTopics: _, ...older } = m
  return older
}

function connected(id: string, at: number, cleanStart: boolean): ConnectedEvent {
  return {
    kind: 'connected',
    clientId: id,
    incarnation: newIncarnation('n1', at),
    at,
    protocol: 'mqtt',
    deviceId: id,
    username: id,
    mountpoint: `${id}/`,
    node: 'n1',
    peerHost: null,
    peerPort: null,
    sockPort: null,
    keepalive: 60,
    protoVer: 4,
    cleanStart,
    expiryInterval: cleanStart ? 0 : 3600
  }
}

test('topic rows carried by their session’s entry reach the log follower as the rows hold them, and older logs still do', () => {
  for (const seed of [3, 17, 91, 202, 777]) {
    const random = seededRandom(seed)
    const truth = new TopicBook()
    const fromLog = new TopicBook()
    const fromOldLog = new TopicBook()
    const followLog = follower(fromLog)
    const followOldLog = follower(fromOldLog)
    const sessions = new Map<string, SessionRecord>()
    let at = 1_000_000
    let carriedSeen = 0

    for (let step = 0; step < 400; step++) {
      at += 1 + random(5)
      const id = IDS[random(IDS.length)]!
      const current = sessions.get(id)
      let applied: Applied | null = null
      const choice = random(10)
      if (current === undefined || choice === 0) {
        const t = transition(current, connected(id, at, random(2) === 0))
        if (t.outcome === 'applied') applied = t
      } else if (!current.connected) {
        applied = expire(current, at + 10_000_000)
      } else if (choice <= 4) {
        const filters = FILTERS(id)
        const subscriptions: TopicSubscription[] = Array.from({ length: 1 + random(2) }, () => ({ topic: filters[random(filters.length)]!, qos: random(3) as QoS }))
        const t = transition(current, { kind: 'subscribed', clientId: id, incarnation: current.incarnation, at, subscriptions })
        if (t.outcome === 'applied') applied = t
      } else if (choice <= 6) {
        const held = truth.topicsOf(id).map((s) => s.topic)
        const topics = held.filter(() => random(2) === 0)
        const t = transition(current, { kind: 'unsubscribed', clientId: id, incarnation: current.incarnation, at, topics: topics.length > 0 ? topics : [FILTERS(id)[0]!] })
        if (t.outcome === 'applied') applied = t
      } else {
        applied = endConnection(current, at, 'client_disconnect')
      }
      if (applied === null) continue

      const stored = { session: current, topics: truth.entriesOf(id), entities: new Map(), lastIncarnation: undefined }
      const mutations = sessionMutations(id, applied, stored, () => '', at)
      // the rows, as the stores write every mutation
      for (const m of mutations) if (m.op === 'topic.put' || m.op === 'topic.delete' || m.op === 'topic.clear') truth.applyChange(m)
      if (applied.session === null) sessions.delete(id)
      else sessions.set(id, applied.session)
      carriedSeen += mutations.filter((m) => isChange(m) && !isLogged(m)).length
      followLog(mutations.filter(isLogged))
      followOldLog(mutations.filter(isChange).map(asOlderLog))

      for (const s of IDS) {
        const want = { topics: truth.topicsOf(s), persistent: truth.persistentTopicsOf(s) }
        assert.deepEqual({ topics: fromLog.topicsOf(s), persistent: fromLog.persistentTopicsOf(s) }, want, `seed ${seed}, step ${step}: ${s} as the log says it`)
        assert.deepEqual({ topics: fromOldLog.topicsOf(s), persistent: fromOldLog.persistentTopicsOf(s) }, want, `seed ${seed}, step ${step}: ${s} as an older log says it`)
      }
      for (const published of [`${id}/t0`, `${id}/t1`, `${id}/a/x`]) assert.deepEqual(fromLog.matchPersistent(published), truth.matchPersistent(published))
    }
    assert.ok(carriedSeen > 50, `seed ${seed}: the runs carried topic rows (${carriedSeen})`)
  }
})

test('which topic rows are carried: a subscribe’s, an unsubscribe’s and an end’s; a clean reconnect’s clear is logged on its own', () => {
  const at = 2_000_000
  const persistent = transition(undefined, connected('p', at, false))
  if (persistent.outcome !== 'applied' || persistent.session === null) throw new Error('a first connect is applied')
  const session = persistent.session
  const topics = new TopicBook()
  const storedOf = () => ({ session, topics: topics.entriesOf('p'), entities: new Map(), lastIncarnation: undefined })
  const logged = (mutations: Mutation[]) => mutations.filter(isLogged).map((m) => m.op)

  const subscribe = transition(session, { kind: 'subscribed', clientId: 'p', incarnation: session.incarnation, at, subscriptions: [{ topic: 'p/t0', qos: 1 }] }) as Applied
  const subscribed = sessionMutations('p', subscribe, storedOf(), () => '', at)
  assert.deepEqual(subscribed.map((m) => m.op), ['session.version', 'topic.put'])
  assert.deepEqual(logged(subscribed), ['session.version'])
  for (const m of subscribed) if (m.op === 'topic.put') topics.applyChange(m)

  const unsubscribe = transition(session, { kind: 'unsubscribed', clientId: 'p', incarnation: session.incarnation, at, topics: ['p/t0'] }) as Applied
  const unsubscribed = sessionMutations('p', unsubscribe, storedOf(), () => '', at)
  assert.deepEqual(unsubscribed.map((m) => m.op), ['session.version', 'topic.delete'])
  assert.deepEqual(logged(unsubscribed), ['session.version'])

  // a persistent session that holds a topic, reconnecting clean: a session.put, whose entry
  // says its topics but not that they were cleared, so the clear is logged as before
  const reconnect = transition(session, connected('p', at + 1, true)) as Applied
  const cleared = sessionMutations('p', reconnect, storedOf(), () => '', at + 1)
  assert.deepEqual(logged(cleared), ['session.put', 'topic.clear'])

  const end = endConnection(reconnect.session!, at + 2, 'client_disconnect')
  const ended = sessionMutations('p', end, storedOf(), () => '', at + 2)
  assert.deepEqual(ended.map((m) => m.op), ['session.delete', 'topic.clear'])
  assert.deepEqual(logged(ended), ['session.delete'])
})

test('a session’s entry that carries no topic rows leaves the followed topics alone', () => {
  const book = new TopicBook()
  const follow = follower(book)
  follow([{ op: 'topic.put', sessionId: 'q', subscription: { topic: 'q/t', qos: 1 }, persistent: true }])
  // a delete and a put of the session in one batch, its rows kept (as a store may be asked to)
  follow([{ op: 'session.delete', id: 'q' }, { op: 'session.version', id: 'q', version: 2, unsubscribed: ['q/t'] }])
  assert.deepEqual(book.topicsOf('q'), [{ topic: 'q/t', qos: 1 }])
  follow([{ op: 'session.delete', id: 'q', carriesTopics: true }])
  assert.deepEqual(book.topicsOf('q'), [])
})
