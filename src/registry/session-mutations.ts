/**
 * What a session transition writes, worked out from the session as stored (its record, topics
 * and subscription entities): the session row, the topic rows that change, and the subscription
 * entities that follow the topics — all in one batch, so they are stored together or not at all.
 * Pure: a decision made again on what is stored then (a retried transaction) gets it right again.
 */
import type { TopicSubscription } from '../domain/session.js'
import { subscriptionEntityOf } from '../domain/subscription.js'
import type { Applied } from '../domain/transitions.js'
import type { StoredSession, StoredTopicEntry } from '../store/decision.js'
import type { Mutation } from '../store/store.js'

export function sessionMutations(id: string, t: Applied, stored: StoredSession, ownerOf: (deviceId: string) => string, at: number): Mutation[] {
  const next = t.session
  const mutations: Mutation[] = [
    next === null
      ? { op: 'session.delete', id, ...(stored.session ? { incarnation: stored.session.incarnation } : {}) }
      : t.versionOnly
        ? { op: 'session.version', id, version: next.version }
        : { op: 'session.put', session: next }
  ]
  const topics = t.topics
  switch (topics.kind) {
    case 'keep':
      break
    case 'clear':
      mutations.push({ op: 'topic.clear', sessionId: id })
      if (stored.entities.size > 0) mutations.push({ op: 'subscription.clear', sessionId: id })
      break
    case 'add': {
      const persistent = next !== null && !next.cleanStart
      for (const subscription of changedTopics(stored.topics, topics.subscriptions, persistent)) {
        mutations.push({ op: 'topic.put', sessionId: id, subscription, persistent })
      }
      mutations.push(...entityPuts(stored, next ?? stored.session, topics.subscriptions, ownerOf, at))
      break
    }
    case 'remove':
      for (const topic of topics.topics) mutations.push({ op: 'topic.delete', sessionId: id, topic })
      for (const topic of topics.topics) {
        const entity = stored.entities.get(topic)
        if (entity) mutations.push({ op: 'subscription.delete', id: entity.id })
      }
      break
  }
  return mutations
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
