/**
 * The live subscription entities, indexed by session (to end them with it) and by device (to
 * find who receives a property change). Like the TopicBook, it changes only as the change log
 * hands back what was committed — with the session change that caused it, in the same batch.
 */
import type { ChangeProperty } from '../domain/change-topics.js'
import type { SubscriptionEntity } from '../domain/subscription.js'
import type { LoggedChange } from '../store/change-log.js'
import { NO_ENTITIES } from '../store/decision.js'
import type { SubscriptionQuery } from '../store/fleet-reads.js'
import { fewDelete, fewGet, fewMap, fewPut, fewValues, type Few } from './few.js'

const brokerTopicOf = (e: SubscriptionEntity): string => e.brokerTopic
const idOf = (e: SubscriptionEntity): string => e.id

/**
 * Held compactly, for a million stored sessions: a session's entities (by broker topic) and a
 * device's (by id) are Fews (see few.ts) — one entity, almost always, held as itself.
 */
export class SubscriptionBook {
  private readonly byId = new Map<string, SubscriptionEntity>()
  private readonly bySession = new Map<string, Few<string, SubscriptionEntity>>()
  private readonly byDevice = new Map<string, Few<string, SubscriptionEntity>>()

  load(entities: Iterable<SubscriptionEntity>): void {
    // stored ids are unique: into an empty book nothing is replaced, so nothing is looked for
    const fresh = this.byId.size === 0
    for (const e of entities) {
      if (fresh) this.add(e)
      else this.put(e)
    }
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
    for (const e of fewValues(this.byDevice.get(deviceId))) if (e.properties.includes(property)) result.push(e)
    return result
  }

  list(query: SubscriptionQuery): { subscriptions: SubscriptionEntity[]; more: boolean } {
    const source =
      query.sessionId !== undefined
        ? fewValues(this.bySession.get(query.sessionId))
        : query.deviceId !== undefined
          ? fewValues(this.byDevice.get(query.deviceId))
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

  /** Whether the session holds an entity for its subscription to `brokerTopic`. */
  holds(sessionId: string, brokerTopic: string): boolean {
    return fewGet(this.bySession.get(sessionId), brokerTopic, brokerTopicOf) !== undefined
  }

  /** The session's entities by broker topic, as stored (read-only: a decision's view of them). */
  entitiesOf(sessionId: string): ReadonlyMap<string, SubscriptionEntity> {
    return fewMap(this.bySession.get(sessionId), brokerTopicOf) ?? NO_ENTITIES
  }

  /** A committed change, handed back by the change log (see topic-book.ts). */
  applyChange(m: Extract<LoggedChange, { op: 'subscription.put' | 'subscription.delete' | 'subscription.clear' }>): void {
    if (m.op === 'subscription.put') return this.put(m.subscription)
    if (m.op === 'subscription.delete') {
      const e = this.byId.get(m.id)
      if (e) this.delete(e)
      return
    }
    for (const e of [...fewValues(this.bySession.get(m.sessionId))]) this.delete(e)
  }

  private put(e: SubscriptionEntity): void {
    const previous = this.byId.get(e.id)
    if (previous) this.delete(previous)
    this.add(e)
  }

  /** `e`, whose id the book does not hold. */
  private add(e: SubscriptionEntity): void {
    this.byId.set(e.id, e)
    this.bySession.set(e.sessionId, fewPut(this.bySession.get(e.sessionId), e, brokerTopicOf))
    this.byDevice.set(e.deviceId, fewPut(this.byDevice.get(e.deviceId), e, idOf))
  }

  private delete(e: SubscriptionEntity): void {
    this.byId.delete(e.id)
    const ofSession = fewDelete(this.bySession.get(e.sessionId), e.brokerTopic, brokerTopicOf)
    if (ofSession === undefined) this.bySession.delete(e.sessionId)
    else this.bySession.set(e.sessionId, ofSession)
    const ofDevice = fewDelete(this.byDevice.get(e.deviceId), e.id, idOf)
    if (ofDevice === undefined) this.byDevice.delete(e.deviceId)
    else this.byDevice.set(e.deviceId, ofDevice)
  }
}
