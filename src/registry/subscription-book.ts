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

  /** The session's entities by broker topic, as stored (read-only: a decision's view of them). */
  entitiesOf(sessionId: string): ReadonlyMap<string, SubscriptionEntity> {
    return this.bySession.get(sessionId) ?? NO_ENTITIES
  }

  /** A committed change, handed back by the change log (see topic-book.ts). */
  applyChange(m: Extract<LoggedChange, { op: 'subscription.put' | 'subscription.delete' | 'subscription.clear' }>): void {
    if (m.op === 'subscription.put') return this.put(m.subscription)
    if (m.op === 'subscription.delete') {
      const e = this.byId.get(m.id)
      if (e) this.delete(e)
      return
    }
    for (const e of [...(this.bySession.get(m.sessionId)?.values() ?? [])]) this.delete(e)
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
