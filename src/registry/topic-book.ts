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
import type { LoggedChange } from '../store/change-log.js'
import { NO_TOPICS, type StoredTopicEntry } from '../store/decision.js'
import { EMPTY_PLAN, type Plan } from '../store/plan.js'
import { changedTopics } from './session-mutations.js'
import type { StoredTopic } from '../store/store.js'

type Entry = StoredTopicEntry

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

export class TopicBook {
  private readonly bySession = new Map<string, Map<string, Entry>>()
  /** Persistent subscriptions with QoS > 0: the ones the broker queues for while offline. */
  private readonly trie = new QlobberSub({ wildcard_one: '+', wildcard_some: '#', separator: '/' })
  /** How many persistent subscriptions each session has; its size is the persistent-session count. */
  private readonly persistentPerSession = new Map<string, number>()

  load(rows: readonly StoredTopic[]): void {
    for (const row of rows) this.put(row.sessionId, row.subscription, row.persistent)
  }

  /** The session's topics as stored (read-only: a decision's view of them). */
  entriesOf(sessionId: string): ReadonlyMap<string, StoredTopicEntry> {
    return this.bySession.get(sessionId) ?? NO_TOPICS
  }

  /** A committed change, handed back by the change log. */
  applyChange(m: Extract<LoggedChange, { op: 'topic.put' | 'topic.delete' | 'topic.clear' }>): void {
    if (m.op === 'topic.put') this.put(m.sessionId, m.subscription, m.persistent)
    else if (m.op === 'topic.delete') this.delete(m.sessionId, m.topic)
    else this.clear(m.sessionId)
  }

  topicsOf(sessionId: string): TopicSubscription[] {
    const entries = this.bySession.get(sessionId)
    return entries ? [...entries.values()].map((e) => e.subscription) : []
  }

  countOf(sessionId: string): number {
    return this.bySession.get(sessionId)?.size ?? 0
  }

  holds(sessionId: string, topic: string): boolean {
    return this.bySession.get(sessionId)?.has(topic) ?? false
  }

  persistentTopicsOf(sessionId: string): TopicSubscription[] {
    const entries = this.bySession.get(sessionId)
    if (!entries) return []
    const result: TopicSubscription[] = []
    for (const e of entries.values()) if (e.persistent) result.push(e.subscription)
    return result
  }

  matchPersistent(topic: string): MatchedSubscription[] {
    return this.trie.match(topic)
  }

  countPersistent(): { subsCount: number; clientsCount: number } {
    return { subsCount: this.trie.subscriptionsCount, clientsCount: this.persistentPerSession.size }
  }

  *sessionsWithPersistentTopic(topic: string): Generator<string> {
    for (const [sessionId, entries] of this.bySession) {
      if (entries.get(topic)?.persistent) yield sessionId
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

  private put(sessionId: string, subscription: TopicSubscription, persistent: boolean): void {
    let entries = this.bySession.get(sessionId)
    if (!entries) {
      entries = new Map()
      this.bySession.set(sessionId, entries)
    }
    this.unindex(sessionId, entries.get(subscription.topic))
    entries.set(subscription.topic, { subscription, persistent })
    this.index(sessionId, subscription, persistent)
  }

  private delete(sessionId: string, topic: string): void {
    const entries = this.bySession.get(sessionId)
    const entry = entries?.get(topic)
    if (!entries || !entry) return
    this.unindex(sessionId, entry)
    entries.delete(topic)
    if (entries.size === 0) this.bySession.delete(sessionId)
  }

  private clear(sessionId: string): void {
    const entries = this.bySession.get(sessionId)
    if (!entries) return
    for (const entry of entries.values()) this.unindex(sessionId, entry)
    this.bySession.delete(sessionId)
  }

  private index(sessionId: string, subscription: TopicSubscription, persistent: boolean): void {
    if (!persistent) return
    this.persistentPerSession.set(sessionId, (this.persistentPerSession.get(sessionId) ?? 0) + 1)
    if (subscription.qos > 0) {
      const { topic, qos, rh, rap, nl } = subscription
      this.trie.add(topic, { clientId: sessionId, topic, qos, rh, rap, nl })
    }
  }

  private unindex(sessionId: string, entry: Entry | undefined): void {
    if (!entry?.persistent) return
    const left = (this.persistentPerSession.get(sessionId) ?? 1) - 1
    if (left === 0) this.persistentPerSession.delete(sessionId)
    else this.persistentPerSession.set(sessionId, left)
    if (entry.subscription.qos > 0) this.trie.remove(entry.subscription.topic, { clientId: sessionId, topic: entry.subscription.topic })
  }
}
