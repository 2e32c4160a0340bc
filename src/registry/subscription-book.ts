/**
 * The live subscription entities, indexed by session (to end them with it) and by device (to
 * find who receives a property change). Like the TopicBook, it changes only through Plans that
 * the registry commits in the same batch as the session change that caused them.
 */
import type { ChangeProperty } from '../domain/change-topics.js'
import type { SessionRecord, TopicSubscription } from '../domain/session.js'
import { subscriptionEntityOf, type SubscriptionEntity } from '../domain/subscription.js'
import { EMPTY_PLAN, type Plan } from '../store/plan.js'

export interface SubscriptionQuery {
  deviceId?: string
  sessionId?: string
  /** Return entities whose id sorts after this one. */
  after?: string
  limit: number
}

export class SubscriptionBook {
  private readonly byId = new Map<string, SubscriptionEntity>()
  private readonly bySession = new Map<string, Map<string, SubscriptionEntity>>()
  private readonly byDevice = new Map<string, Set<SubscriptionEntity>>()

  load(entities: readonly SubscriptionEntity[]): void {
    for (const e of entities) this.put(e)
  }

  get(id: string): SubscriptionEntity | undefined {
    return this.byId.get(id)
  }

  get size(): number {
    return this.byId.size
  }

  /** The entities of `deviceId` that receive changes of `property`. */
  receiving(deviceId: string, property: ChangeProperty): SubscriptionEntity[] {
    const result: SubscriptionEntity[] = []
    for (const e of this.byDevice.get(deviceId) ?? []) if (e.properties.includes(property)) result.push(e)
    return result
  }

  list(query: SubscriptionQuery): { subscriptions: SubscriptionEntity[]; more: boolean } {
    const source =
      query.sessionId !== undefined
        ? (this.bySession.get(query.sessionId)?.values() ?? [])
        : query.deviceId !== undefined
          ? (this.byDevice.get(query.deviceId) ?? [])
          : this.byId.values()
    const matching: SubscriptionEntity[] = []
    for (const e of source) {
      if (query.after !== undefined && e.id <= query.after) continue
      if (query.deviceId !== undefined && e.deviceId !== query.deviceId) continue
      matching.push(e)
    }
    matching.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    return { subscriptions: matching.slice(0, query.limit), more: matching.length > query.limit }
  }

  /** The entities `session`'s new subscriptions make (those it does not hold already). */
  planAdd(session: SessionRecord, owner: string, subscriptions: readonly TopicSubscription[], at: number): Plan {
    const held = this.bySession.get(session.id)
    const made: SubscriptionEntity[] = []
    for (const s of subscriptions) {
      const entity = subscriptionEntityOf(session, owner, s.topic, at)
      if (entity && !held?.has(entity.brokerTopic)) made.push(entity)
    }
    if (made.length === 0) return EMPTY_PLAN
    return {
      mutations: made.map((subscription) => ({ op: 'subscription.put', subscription })),
      apply: () => made.forEach((e) => this.put(e))
    }
  }

  /** Unsubscribing deletes the entities of those broker topics. */
  planRemove(sessionId: string, brokerTopics: readonly string[]): Plan {
    const held = this.bySession.get(sessionId)
    const gone = brokerTopics.flatMap((t) => held?.get(t) ?? [])
    if (gone.length === 0) return EMPTY_PLAN
    return {
      mutations: gone.map((e) => ({ op: 'subscription.delete', id: e.id })),
      apply: () => gone.forEach((e) => this.delete(e))
    }
  }

  /** A session that ends, or starts clean, takes its entities with it. */
  planClear(sessionId: string): Plan {
    if (!this.bySession.has(sessionId)) return EMPTY_PLAN
    return {
      mutations: [{ op: 'subscription.clear', sessionId }],
      apply: () => [...(this.bySession.get(sessionId)?.values() ?? [])].forEach((e) => this.delete(e))
    }
  }

  private put(e: SubscriptionEntity): void {
    const previous = this.byId.get(e.id)
    if (previous) this.delete(previous)
    this.byId.set(e.id, e)
    let ofSession = this.bySession.get(e.sessionId)
    if (!ofSession) this.bySession.set(e.sessionId, (ofSession = new Map<string, SubscriptionEntity>()))
    ofSession.set(e.brokerTopic, e)
    let ofDevice = this.byDevice.get(e.deviceId)
    if (!ofDevice) this.byDevice.set(e.deviceId, (ofDevice = new Set()))
    ofDevice.add(e)
  }

  private delete(e: SubscriptionEntity): void {
    this.byId.delete(e.id)
    const ofSession = this.bySession.get(e.sessionId)
    ofSession?.delete(e.brokerTopic)
    if (ofSession?.size === 0) this.bySession.delete(e.sessionId)
    const ofDevice = this.byDevice.get(e.deviceId)
    ofDevice?.delete(e)
    if (ofDevice?.size === 0) this.byDevice.delete(e.deviceId)
  }
}
