/**
 * The live copy of every session's topics — and, for persistent sessions, the embedded
 * broker's subscriptions: the same rows. The registry changes them on lifecycle events and
 * the Aedes persistence on SUBSCRIBE/UNSUBSCRIBE; both go through here, so there is one record.
 *
 * Changes are Plans (store/plan.ts) whose mutations the store makes durable; memory changes only
 * as the change log hands the committed mutations back (`applyChange`, in log order), so it always
 * mirrors the stored rows. A plan never depends on what is in memory, except to skip a write that
 * would change nothing.
 */
import QlobberSub from 'qlobber/aedes/qlobber-sub.js'
import type { TopicSubscription } from '../domain/session.js'
import { firstLevelOf, topicMatches, trieOrder } from '../domain/topic-match.js'
import type { LoggedChange } from '../store/change-log.js'
import { NO_TOPICS, type StoredTopicEntry } from '../store/decision.js'
import { EMPTY_PLAN, type Plan } from '../store/plan.js'
import { fewDelete, fewGet, fewMap, fewPut, fewSize, fewValues, type Few } from './few.js'
import { changedTopics, queuesWhileOffline } from './session-mutations.js'
import type { StoredTopic } from '../store/store.js'

/** One topic of one session; the same object sits in the session's list and the broker's index. */
interface Entry extends StoredTopicEntry {
  readonly sessionId: string
}

const topicOf = (e: Entry): string => e.subscription.topic
const itself = (e: Entry): Entry => e

const NOTHING_TO_DO = (): void => undefined

/** A persistent subscription as the broker matches it against a published topic. */
export interface MatchedSubscription {
  clientId: string
  topic: string
  qos: number
  rh?: number
  rap?: boolean
  nl?: boolean
}

/**
 * Held compactly, for a million stored sessions (see few.ts): each session's topics are a Few
 * of entries, and the broker's index of persistent QoS > 0 subscriptions is by the filter's
 * first level — a device's filters all begin with its mountpoint `{deviceId}/`, so a published
 * topic is tested against the few filters of one device, not walked through a trie that would
 * hold a chain of nodes per device. Filters whose first level is a wildcard (a superuser's `#`,
 * `+/…`) are matched by a trie of their own.
 */
export class TopicBook {
  private readonly bySession = new Map<string, Few<string, Entry>>()
  /** Persistent subscriptions with QoS > 0 (the ones the broker queues for while offline), by literal first level. */
  private readonly byFirstLevel = new Map<string, Few<Entry, Entry>>()
  /** The same, for filters whose first level is a wildcard. */
  private readonly wildcardFirst = new QlobberSub({ wildcard_one: '+', wildcard_some: '#', separator: '/' })
  /** How many entries are in the two indexes above. */
  private queuedFor = 0
  /** How many sessions have a persistent subscription. */
  private persistentSessions = 0
  /**
   * Filters whose first level is a `$` word (`$iothub`, `$SYS`), counted by that word, whatever
   * their session: only such a filter can match a `$` topic (MQTT 3.1.1 4.7.2-1, as Aedes
   * applies it), so none held means nobody could receive what the hub publishes there.
   */
  private readonly dollarFirstLevels = new Map<string, number>()

  load(rows: Iterable<StoredTopic>): void {
    for (const row of rows) this.put(row.sessionId, row.subscription, row.persistent)
  }

  /** The session's topics as stored (read-only: a decision's view of them). */
  entriesOf(sessionId: string): ReadonlyMap<string, StoredTopicEntry> {
    return fewMap(this.bySession.get(sessionId), topicOf) ?? NO_TOPICS
  }

  /** A committed change, handed back by the change log. */
  applyChange(m: Extract<LoggedChange, { op: 'topic.put' | 'topic.delete' | 'topic.clear' }>): void {
    if (m.op === 'topic.put') this.put(m.sessionId, m.subscription, m.persistent)
    else if (m.op === 'topic.delete') this.delete(m.sessionId, m.topic)
    else this.clear(m.sessionId)
  }

  /**
   * The topic rows a session's own change-log entry carries (store.ts, `carriesTopics`): those a
   * `session.version` subscribed — the new or changed ones, as its batch wrote them — or
   * unsubscribed, and none left after a `session.delete`. An entry that carries none (an older
   * log's, whose topic changes are entries of their own) changes nothing here.
   */
  applySessionChange(m: Extract<LoggedChange, { op: 'session.version' | 'session.delete' }>): void {
    if (m.carriesTopics !== true) return
    if (m.op === 'session.delete') return this.clear(m.id)
    if (m.subscribed !== undefined && m.session !== undefined) {
      const persistent = queuesWhileOffline(m.session)
      for (const subscription of changedTopics(this.entriesOf(m.id), m.subscribed, persistent)) this.put(m.id, subscription, persistent)
    }
    if (m.unsubscribed !== undefined) for (const topic of m.unsubscribed) this.delete(m.id, topic)
  }

  topicsOf(sessionId: string): TopicSubscription[] {
    const result: TopicSubscription[] = []
    for (const e of fewValues(this.bySession.get(sessionId))) result.push(e.subscription)
    return result
  }

  /** The sessions with a topic that passes `test` (given the session id too, so one function serves every session). */
  *sessionsWithTopic(test: (sessionId: string, topic: string) => boolean): Generator<string> {
    for (const [sessionId, entries] of this.bySession) {
      for (const e of fewValues(entries)) {
        if (test(sessionId, e.subscription.topic)) {
          yield sessionId
          break
        }
      }
    }
  }

  countOf(sessionId: string): number {
    return fewSize(this.bySession.get(sessionId))
  }

  holds(sessionId: string, topic: string): boolean {
    return fewGet(this.bySession.get(sessionId), topic, topicOf) !== undefined
  }

  persistentTopicsOf(sessionId: string): TopicSubscription[] {
    const result: TopicSubscription[] = []
    for (const e of fewValues(this.bySession.get(sessionId))) if (e.persistent) result.push(e.subscription)
    return result
  }

  /** The persistent QoS > 0 subscriptions `topic` reaches, in the order Aedes' own trie (qlobber) gives them. */
  matchPersistent(topic: string): MatchedSubscription[] {
    const trie: MatchedSubscription[] = this.wildcardFirst.match(topic)
    const bucket = this.byFirstLevel.get(firstLevelOf(topic))
    if (bucket === undefined) return trie
    const matching: Entry[] = []
    // as qlobber matches by default: `+` is one level, but not an empty one
    for (const e of fewValues(bucket)) if (topicMatches(e.subscription.topic, topic, false)) matching.push(e)
    if (matching.length > 1) matching.sort((a, b) => trieOrder(a.subscription.topic, b.subscription.topic))
    // the trie's walk takes `#` before a literal level and `+` after it
    const matched = trie.filter((m) => m.topic.startsWith('#'))
    for (const e of matching) {
      const { topic: filter, qos, rh, rap, nl } = e.subscription
      matched.push({ clientId: e.sessionId, topic: filter, qos, rh, rap, nl })
    }
    for (const m of trie) if (!m.topic.startsWith('#')) matched.push(m)
    return matched
  }

  countPersistent(): { subsCount: number; clientsCount: number } {
    return { subsCount: this.queuedFor, clientsCount: this.persistentSessions }
  }

  *sessionsWithPersistentTopic(topic: string): Generator<string> {
    for (const [sessionId, entries] of this.bySession) {
      if (fewGet(entries, topic, topicOf)?.persistent) yield sessionId
    }
  }

  planAdd(sessionId: string, subscriptions: readonly TopicSubscription[], persistent: boolean): Plan {
    const changed = changedTopics(this.entriesOf(sessionId), subscriptions, persistent)
    if (changed.length === 0) return EMPTY_PLAN
    return {
      mutations: changed.map((subscription) => ({ op: 'topic.put', sessionId, subscription, persistent })),
      apply: NOTHING_TO_DO
    }
  }

  planRemove(sessionId: string, topics: readonly string[]): Plan {
    if (topics.length === 0) return EMPTY_PLAN
    return {
      mutations: topics.map((topic) => ({ op: 'topic.delete', sessionId, topic })),
      apply: NOTHING_TO_DO
    }
  }

  planClear(sessionId: string): Plan {
    return { mutations: [{ op: 'topic.clear', sessionId }], apply: NOTHING_TO_DO }
  }

  /** Whether any session holds a filter whose first level is `level` (a `$` word: `$iothub`). */
  holdsFirstLevel(level: string): boolean {
    return (this.dollarFirstLevels.get(level) ?? 0) > 0
  }

  private put(sessionId: string, subscription: TopicSubscription, persistent: boolean): void {
    const entries = this.bySession.get(sessionId)
    const before = fewGet(entries, subscription.topic, topicOf)
    const hadPersistent = hasPersistent(entries)
    if (before) this.unindex(before)
    else this.countDollar(subscription.topic, 1)
    // every entry of a session shares one copy of its id
    const key = entries === undefined ? sessionId : sessionIdOf(entries)
    const entry: Entry = { sessionId: key, subscription, persistent }
    const after = fewPut(entries, entry, topicOf)
    this.bySession.set(key, after)
    this.index(entry)
    if (hadPersistent !== (persistent || hasPersistent(after))) this.persistentSessions += hadPersistent ? -1 : 1
  }

  private delete(sessionId: string, topic: string): void {
    const entries = this.bySession.get(sessionId)
    const entry = fewGet(entries, topic, topicOf)
    if (!entry) return
    this.unindex(entry)
    this.countDollar(topic, -1)
    const left = fewDelete(entries, topic, topicOf)
    if (left === undefined) this.bySession.delete(sessionId)
    else if (left !== entries) this.bySession.set(sessionId, left)
    if (entry.persistent && !hasPersistent(left)) this.persistentSessions--
  }

  private clear(sessionId: string): void {
    const entries = this.bySession.get(sessionId)
    if (!entries) return
    for (const entry of fewValues(entries)) {
      this.unindex(entry)
      this.countDollar(entry.subscription.topic, -1)
    }
    if (hasPersistent(entries)) this.persistentSessions--
    this.bySession.delete(sessionId)
  }

  private countDollar(topic: string, by: 1 | -1): void {
    if (topic.charCodeAt(0) !== 36) return // '$'
    const level = firstLevelOf(topic)
    const n = (this.dollarFirstLevels.get(level) ?? 0) + by
    if (n > 0) this.dollarFirstLevels.set(level, n)
    else this.dollarFirstLevels.delete(level)
  }

  /** Into the broker's index, when the broker queues for it: persistent, QoS > 0. */
  private index(entry: Entry): void {
    if (!entry.persistent || entry.subscription.qos === 0) return
    this.queuedFor++
    const { topic, qos, rh, rap, nl } = entry.subscription
    const first = firstLevelOf(topic)
    if (first === '+' || first === '#') {
      this.wildcardFirst.add(topic, { clientId: entry.sessionId, topic, qos, rh, rap, nl })
      return
    }
    // a device's filters begin with its id, which is often its client id too: one copy of it
    const key = first === entry.sessionId ? entry.sessionId : first
    this.byFirstLevel.set(key, fewPut(this.byFirstLevel.get(key), entry, itself))
  }

  private unindex(entry: Entry): void {
    if (!entry.persistent || entry.subscription.qos === 0) return
    this.queuedFor--
    const topic = entry.subscription.topic
    const first = firstLevelOf(topic)
    if (first === '+' || first === '#') {
      this.wildcardFirst.remove(topic, { clientId: entry.sessionId, topic })
      return
    }
    const left = fewDelete(this.byFirstLevel.get(first), entry, itself)
    if (left === undefined) this.byFirstLevel.delete(first)
    else this.byFirstLevel.set(first, left)
  }
}

function sessionIdOf(entries: Few<string, Entry>): string {
  for (const e of fewValues(entries)) return e.sessionId
  throw new Error('a session without topics is not held')
}

function hasPersistent(entries: Few<string, Entry> | undefined): boolean {
  for (const e of fewValues(entries)) if (e.persistent) return true
  return false
}
