/**
 * What a session transition writes, worked out from the session as stored (its record, topics
 * and subscription entities): the session row, the topic rows that change, and the subscription
 * entities that follow the topics — all in one batch, so they are stored together or not at all.
 * Pure: a decision made again on what is stored then (a retried transaction) gets it right again.
 */
import type { SessionRecord, TopicSubscription } from '../domain/session.js'
import { subscriptionEntityOf } from '../domain/subscription.js'
import type { Applied, SessionEndReason } from '../domain/transitions.js'
import type { StoredSession, StoredTopicEntry } from '../store/decision.js'
import type { Mutation } from '../store/store.js'

const CARRIED = { carried: true } as const
const CARRIES_TOPICS = { carriesTopics: true } as const

export function sessionMutations(id: string, t: Applied, stored: StoredSession, ownerOf: (deviceId: string) => string, at: number): Mutation[] {
  const next = t.session
  const topics = t.topics
  const row = sessionRowMutation(id, t, stored, at)
  const mutations: Mutation[] = [row]
  // the topic rows a session's entry says itself are not logged again (store.ts, `carried`): a
  // version entry names what it subscribed or unsubscribed, and an ended session holds none
  const carried = 'carriesTopics' in row && row.carriesTopics === true ? CARRIED : undefined
  switch (topics.kind) {
    case 'keep':
      break
    case 'clear':
      pushClear(mutations, id, stored, carried)
      break
    case 'replace': {
      // what a clear writes, then the new topics and their entities as a subscribe to a session
      // holding none would: in one batch, so no one reads the session between the two
      pushClear(mutations, id, stored, carried)
      const persistent = next !== null && queuesWhileOffline(next)
      for (const subscription of topics.subscriptions) mutations.push({ op: 'topic.put', sessionId: id, subscription, persistent, ...carried })
      mutations.push(...entityPuts({ ...stored, entities: NO_ENTITIES }, next ?? undefined, topics.subscriptions, ownerOf, at))
      break
    }
    case 'add': {
      const persistent = next !== null && queuesWhileOffline(next)
      for (const subscription of changedTopics(stored.topics, topics.subscriptions, persistent)) {
        mutations.push({ op: 'topic.put', sessionId: id, subscription, persistent, ...carried })
      }
      mutations.push(...entityPuts(stored, next ?? stored.session, topics.subscriptions, ownerOf, at))
      break
    }
    case 'remove':
      for (const topic of topics.topics) mutations.push({ op: 'topic.delete', sessionId: id, topic, ...carried })
      for (const topic of topics.topics) {
        const entity = stored.entities.get(topic)
        if (entity) mutations.push({ op: 'subscription.delete', id: entity.id, subscription: entity })
      }
      break
  }
  return mutations
}

const NO_ENTITIES: StoredSession['entities'] = new Map()

/** The removal of every topic row and subscription entity the session holds, pushed onto `mutations`. */
function pushClear(mutations: Mutation[], id: string, stored: StoredSession, carried: typeof CARRIED | undefined): void {
  // a session that holds no topic has no row to delete: a fresh connect (most of a connect
  // storm) then writes, and logs, one change fewer
  if (stored.topics.size > 0) mutations.push({ op: 'topic.clear', sessionId: id, ...carried })
  // one delete per entity rather than a clear of the session's: each is an event of its own
  for (const entity of stored.entities.values()) mutations.push({ op: 'subscription.delete', id: entity.id, subscription: entity })
}

/**
 * The session row's mutation, with what the event stream needs to say of it without a second
 * read (see store.ts): the session's topics after the change, the change itself, how it ended.
 */
function sessionRowMutation(id: string, t: Applied, stored: StoredSession, at: number): Mutation {
  const next = t.session
  if (next === null) {
    const last = stored.session
    const reason = t.endedBy
    return {
      op: 'session.delete',
      id,
      ...(last ? { incarnation: last.incarnation, ended: endedRecord(last, reason, at) } : {}),
      ...(reason ? { reason } : {}),
      ...(t.topics.kind === 'clear' ? CARRIES_TOPICS : {})
    }
  }
  const topics = topicsAfter(stored, t)
  if (t.versionOnly) {
    const change = t.topics
    return {
      op: 'session.version',
      id,
      version: next.version,
      session: next,
      topics,
      ...(change.kind === 'add'
        ? { subscribed: change.subscriptions, ...CARRIES_TOPICS }
        : change.kind === 'remove'
          ? { unsubscribed: change.topics, ...CARRIES_TOPICS }
          : {})
    }
  }
  return { op: 'session.put', session: next, topics, ...(t.tookOver ? { tookOver: t.tookOver.incarnation } : {}) }
}

/** The session as it ended: a connected one shows its connection's end. */
function endedRecord(last: SessionRecord, reason: SessionEndReason | undefined, at: number): SessionRecord {
  if (!last.connected) return { ...last, version: last.version + 1 }
  const disconnectReason = reason === undefined || reason === 'expired' || reason === 'discarded' ? last.disconnectReason : reason
  return { ...last, connected: false, disconnectedAt: at, disconnectReason, version: last.version + 1 }
}

/** The session's topics once the transition's change of them is applied. */
function topicsAfter(stored: StoredSession, t: Applied): TopicSubscription[] {
  const change = t.topics
  if (change.kind === 'clear') return []
  if (change.kind === 'replace') return change.subscriptions
  const held = new Map<string, TopicSubscription>()
  for (const [topic, entry] of stored.topics) held.set(topic, entry.subscription)
  if (change.kind === 'add') for (const s of change.subscriptions) held.set(s.topic, s)
  if (change.kind === 'remove') for (const topic of change.topics) held.delete(topic)
  return [...held.values()]
}

/** The subscription entities the session's topics call for that it does not hold. */
export function entityPuts(
  stored: StoredSession,
  session: StoredSession['session'],
  subscriptions: readonly TopicSubscription[],
  ownerOf: (deviceId: string) => string,
  at: number
): Mutation[] {
  if (!session) return []
  const puts: Mutation[] = []
  for (const s of subscriptions) {
    const entity = subscriptionEntityOf(session, ownerOf(session.deviceId), s.topic, at)
    if (entity && !stored.entities.has(entity.brokerTopic)) puts.push({ op: 'subscription.put', subscription: entity })
  }
  return puts
}

/**
 * Whether a session's topic rows are persistent — the broker queues QoS > 0 messages for them
 * while it is offline. One rule for the rows written here and for the follower that takes carried
 * rows from the session's entry (TopicBook.applySessionChange), so the two cannot drift apart.
 */
export function queuesWhileOffline(session: SessionRecord): boolean {
  return !session.cleanStart
}

/** The subscriptions that are new or differ from what is stored. */
export function changedTopics(stored: ReadonlyMap<string, StoredTopicEntry>, subscriptions: readonly TopicSubscription[], persistent: boolean): TopicSubscription[] {
  return subscriptions.filter((s) => {
    const held = stored.get(s.topic)
    return held === undefined || held.persistent !== persistent || !sameSubscription(held.subscription, s)
  })
}

export function sameSubscription(a: TopicSubscription, b: TopicSubscription): boolean {
  return a.qos === b.qos && a.rh === b.rh && a.rap === b.rap && a.nl === b.nl && a.subscriptionIdentifier === b.subscriptionIdentifier
}
