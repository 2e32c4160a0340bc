/**
 * The session registry: the live set of session entities, kept by the rules in
 * docs/ARCHITECTURE.md ("Rules the registry keeps") — a client's events apply in order, an older
 * incarnation never touches a newer one, and an event counts as applied only once its effect is
 * durable.
 *
 * It knows lifecycle events, the store and the TopicBook; nothing of Aedes, HTTP or MQTT.
 */
import type { Logger } from 'pino'
import type { LifecycleEvent, LifecycleEventKind } from '../domain/lifecycle-event.js'
import type { DisconnectReason, Protocol, Session, SessionRecord, TopicSubscription } from '../domain/session.js'
import { endConnection, expire, transition, type Applied } from '../domain/transitions.js'
import type { HubMetrics } from '../observability/metrics.js'
import { combinePlans, EMPTY_PLAN, type Plan } from '../store/plan.js'
import type { Mutation, Store } from '../store/store.js'
import { KeyedQueue } from './keyed-queue.js'
import type { SubscriptionBook } from './subscription-book.js'
import type { TopicBook } from './topic-book.js'

/** Other holders of per-session state (the broker's queues) that must go when a session ends. */
export interface SessionStateOwner {
  planDropSession(sessionId: string): Plan
}

/** Told of every session change once it is durable and applied: `after` null when the session ended. */
export type SessionObserver = (before: SessionRecord | undefined, after: SessionRecord | null) => void

/** `applied: false`: the event was stale (it belonged to a connection no longer the session's). */
export type ApplyResult = { applied: true } | { applied: false; why: string }

/**
 * What the carrier must do once the registry no longer counts a live connection as its session's:
 * a newer connect of the client id took the session over, so the older connection is closed
 * (MQTT) or forgotten (CoAP) by whichever transport holds it. The registry has ended it already.
 */
export interface StepDown {
  reason: 'taken_over'
  /** The session as the replaced connection held it. */
  session: SessionRecord
}

export interface SessionQuery {
  deviceId?: string
  clientId?: string
  protocol?: Protocol
  connected?: boolean
  /** Return sessions whose id sorts after this one. */
  after?: string
  limit: number
}

const APPLIED: ApplyResult = { applied: true }
const NOT_BUILT: ApplyResult = { applied: false, why: 'nothing to apply' }
const NO_PLANS: Plan[] = []

/** What a source's `applyFor` builder answers for an event it found stale itself. */
export interface Stale {
  stale: LifecycleEvent['kind']
  why: string
}

/** How long the incarnation of an ended session is remembered, to refuse its late events. */
const TOMBSTONE_MS = 10 * 60_000
/** First and longest wait before the ends the store refused are tried again, ms. */
const FIRST_RETRY_MS = 500
const MAX_RETRY_MS = 30_000

export class SessionRegistry {
  private readonly sessions = new Map<string, SessionRecord>()
  private readonly tombstones = new Map<string, { incarnation: string; at: number }>()
  private readonly queue = new KeyedQueue()
  private readonly owners: SessionStateOwner[] = []
  private readonly observers: SessionObserver[] = []
  private stepDownHandler: ((stepDown: StepDown) => void) | undefined
  private readonly eventCounters = new Map<string, Map<string, { inc(): void }>>()
  /** When each clientId's session last changed (epoch ms), pruned with the tombstones. */
  private readonly lastChange = new Map<string, number>()
  /**
   * Ends of connections (and sessions) applied here but not yet stored, by clientId: the
   * mutations that bring the store in line. At most one entry per clientId, and bounded by
   * that session's own life: anything else the client does next is committed after them, in
   * the same batch (see commitFor), so the store never sees a later change before an end.
   */
  private readonly unstoredEnds = new Map<string, Mutation[]>()
  private retryTimer: NodeJS.Timeout | undefined
  private retryMs = FIRST_RETRY_MS
  private stopped = false

  constructor(
    private readonly store: Store,
    readonly topics: TopicBook,
    readonly subscriptions: SubscriptionBook,
    /** The owner (tenant) of a device, which its subscription entities carry. */
    private readonly ownerOf: (deviceId: string) => string,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {
    metrics.gauge('iothub_sessions_connected', 'Connected sessions by protocol', ['protocol'], (set) => {
      const counts = new Map<string, number>()
      for (const s of this.sessions.values()) if (s.connected) counts.set(s.protocol, (counts.get(s.protocol) ?? 0) + 1)
      for (const [protocol, n] of counts) set({ protocol }, n)
    })
    metrics.gauge('iothub_sessions', 'Session entities held, connected or offline', [], (set) => set({}, this.sessions.size))
    metrics.gauge('iothub_sessions_unstored_ends', 'Connection or session ends applied but not yet stored (the store failed); retried', [], (set) =>
      set({}, this.unstoredEnds.size)
    )
  }

  addStateOwner(owner: SessionStateOwner): void {
    this.owners.push(owner)
  }

  observe(observer: SessionObserver): void {
    this.observers.push(observer)
  }

  /** Who acts on step-downs: the carrier (one; a later call replaces it). */
  onStepDown(handler: (stepDown: StepDown) => void): void {
    this.stepDownHandler = handler
  }

  load(sessions: readonly SessionRecord[]): void {
    for (const s of sessions) this.sessions.set(s.id, s)
  }

  /**
   * At start nothing is connected: clean sessions of the previous run end, persistent ones go
   * offline (reason `server_shutdown`) and start counting towards their expiry from now.
   */
  async endPreviousRun(now: number): Promise<{ ended: number; offline: number }> {
    const plans: Plan[] = []
    let ended = 0
    let offline = 0
    for (const s of this.sessions.values()) {
      if (!s.connected) continue
      const t = endConnection(s, now, 'server_shutdown')
      plans.push(this.plan(s.id, t))
      if (s.cleanStart) ended++
      else offline++
    }
    const plan = combinePlans(plans)
    await this.store.commit(plan.mutations)
    plan.apply()
    return { ended, offline }
  }

  /**
   * At start: makes the subscription entities that stored sessions' topics call for but that
   * are missing — a store written before subscription entities existed. Returns how many.
   */
  async restoreSubscriptionEntities(now: number): Promise<number> {
    const plans: Plan[] = []
    for (const s of this.sessions.values()) {
      const plan = this.subscriptions.planAdd(s, this.ownerOf(s.deviceId), this.topics.topicsOf(s.id), now)
      if (plan.mutations.length > 0) plans.push(plan)
    }
    const plan = combinePlans(plans)
    if (plan.mutations.length > 0) await this.store.commit(plan.mutations)
    plan.apply()
    return plan.mutations.length
  }

  /** Applies one lifecycle event; resolves once its effect is durable (or it was stale). */
  apply(event: LifecycleEvent): Promise<ApplyResult> {
    return this.queue.run(event.clientId, () => this.applyInOrder(event))
  }

  /**
   * Applies the event `build` makes, in the client's order, from the session as it is when
   * the client's earlier events are done — for sources whose events name their connection by
   * what it is (node, peer address) rather than by an incarnation (EMQX's hooks): `build` reads
   * the current session (or, when there is none, the incarnation of the last one that ended) to
   * tell whether the event is the live connection's, and how a connect orders against it.
   */
  applyFor(
    clientId: string,
    build: (current: SessionRecord | undefined, lastEnded: string | undefined) => LifecycleEvent | Stale | null,
    options: { reconciling?: boolean } = {}
  ): Promise<ApplyResult> {
    return this.queue.run(clientId, () => {
      const current = this.sessions.get(clientId)
      const event = build(current, current === undefined ? this.tombstones.get(clientId)?.incarnation : undefined)
      if (event === null) return Promise.resolve(NOT_BUILT)
      if ('stale' in event) {
        this.count(event.stale, 'stale')
        return Promise.resolve({ applied: false, why: event.why })
      }
      return this.applyInOrder(event, !options.reconciling)
    })
  }

  /**
   * Whether an event of `clientId` was applied at or after `since` (epoch ms): the reconcile
   * leaves such clients alone, so what arrived while it listed the broker is never undone.
   */
  changedSince(clientId: string, since: number): boolean {
    return (this.lastChange.get(clientId) ?? -Infinity) >= since
  }

  /** `marksChange: false` for the reconcile's own fixes, which `changedSince` must not see. */
  private async applyInOrder(event: LifecycleEvent, marksChange = true): Promise<ApplyResult> {
    const id = event.clientId
    const current = this.sessions.get(id)
    if (event.kind === 'subscribed' && current && this.alreadyHolds(current, event.incarnation, event.subscriptions)) {
      // a SUBSCRIBE repeating what the session holds, or Aedes restoring a resumed session
      return APPLIED
    }
    const t = transition(current, event, current === undefined ? this.tombstones.get(id)?.incarnation : undefined)
    if (t.outcome === 'stale') {
      this.count(event.kind, 'stale')
      this.log.debug({ clientId: id, kind: event.kind, why: t.why }, 'stale lifecycle event ignored')
      return { applied: false, why: t.why }
    }
    const plan = this.plan(id, t, marksChange)
    try {
      await this.commitFor(id, plan.mutations)
    } catch (error) {
      if (event.kind !== 'disconnected') {
        this.count(event.kind, 'failed')
        throw error
      }
      // The broker has closed the connection already: showing it connected until the store
      // answers would be the lie (pushes would name it, the API would list it). Memory takes
      // the end now; the store gets it as soon as it can (unstoredEnds).
      this.storeLater(id, plan.mutations, error as Error)
    }
    plan.apply()
    this.count(event.kind, 'applied')
    if (event.kind === 'disconnected') this.ended(current!, event.reason, t.session === null)
    if (t.tookOver) {
      this.ended(t.tookOver, 'taken_over', false)
      this.stepDownHandler?.({ reason: 'taken_over', session: t.tookOver })
    }
    if (event.kind === 'connected') {
      this.log.info({ clientId: id, deviceId: event.deviceId, protocol: event.protocol, peer: `${event.peerHost}:${event.peerPort}`, cleanStart: event.cleanStart }, 'connected')
    }
    return APPLIED
  }

  /**
   * Commits a change of `id`'s session, after any end of it not stored yet — in the same batch,
   * so the store gets both or neither, in order.
   */
  private async commitFor(id: string, mutations: readonly Mutation[]): Promise<void> {
    const unstored = this.unstoredEnds.get(id)
    await this.store.commit(unstored ? [...unstored, ...mutations] : mutations)
    if (unstored) this.unstoredEnds.delete(id)
  }

  /** Keeps an end the store refused, to be stored later; memory applies it now. */
  private storeLater(id: string, mutations: readonly Mutation[], error: Error): void {
    const earlier = this.unstoredEnds.get(id) ?? []
    this.unstoredEnds.set(id, [...earlier, ...mutations])
    this.log.warn({ clientId: id, err: error.message }, 'connection end not stored yet: applied, and stored once the store answers')
    this.scheduleRetry()
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.stopped || this.unstoredEnds.size === 0) return
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      void this.storeUnstoredEnds()
    }, this.retryMs)
    this.retryTimer.unref()
  }

  /**
   * Tries to store every end not stored yet; the store's return (a probe that answers) calls it
   * at once, a timer with backoff otherwise. Resolves with how many are still not stored.
   */
  async storeUnstoredEnds(): Promise<number> {
    let failed = false
    await Promise.all(
      [...this.unstoredEnds.keys()].map((id) =>
        this.queue.run(id, async () => {
          const unstored = this.unstoredEnds.get(id)
          if (!unstored) return // stored meanwhile, with a later change of the same client
          try {
            await this.store.commit(unstored)
            this.unstoredEnds.delete(id)
          } catch {
            failed = true
          }
        })
      )
    )
    this.retryMs = failed ? Math.min(this.retryMs * 2, MAX_RETRY_MS) : FIRST_RETRY_MS
    if (!failed && this.unstoredEnds.size === 0) this.log.info('every connection end refused by the store is stored now')
    this.scheduleRetry()
    return this.unstoredEnds.size
  }

  /** How many ends are applied but not stored yet. */
  get unstored(): number {
    return this.unstoredEnds.size
  }

  /** No more retries: the hub is stopping (the next start ends what the store still shows connected). */
  stop(): void {
    this.stopped = true
    clearTimeout(this.retryTimer)
  }

  /** A connection ended: counted, and logged — the session list keeps no history, the log does. */
  private ended(session: SessionRecord, reason: DisconnectReason, sessionEnded: boolean): void {
    this.metrics.disconnectsTotal.inc({ protocol: session.protocol, reason })
    this.log.info({ clientId: session.clientId, deviceId: session.deviceId, protocol: session.protocol, reason, sessionEnded }, 'disconnected')
  }

  /** Counts an event; the labelled counters are looked up once, not hashed per event. */
  private count(kind: LifecycleEventKind, outcome: 'applied' | 'stale' | 'failed'): void {
    let byOutcome = this.eventCounters.get(kind)
    if (!byOutcome) this.eventCounters.set(kind, (byOutcome = new Map<string, { inc(): void }>()))
    let counter = byOutcome.get(outcome)
    if (!counter) byOutcome.set(outcome, (counter = this.metrics.eventsTotal.labels(kind, outcome)))
    counter.inc()
  }

  private alreadyHolds(current: SessionRecord, incarnation: string, subscriptions: TopicSubscription[]): boolean {
    return (
      current.incarnation === incarnation &&
      current.connected &&
      this.topics.planAdd(current.id, subscriptions, !current.cleanStart).mutations.length === 0
    )
  }

  /** Ends an offline session now, as an operator asks (EMQX's kick of a disconnected client). */
  discard(id: string, options: { unlessChangedSince?: number; onlyIf?: (offline: SessionRecord) => boolean } = {}): Promise<boolean> {
    return this.queue.run(id, async () => {
      const current = this.sessions.get(id)
      if (!current || current.connected) return false
      if (options.onlyIf && !options.onlyIf(current)) return false
      if (options.unlessChangedSince !== undefined && this.changedSince(id, options.unlessChangedSince)) return false
      const plan = this.plan(id, { outcome: 'applied', session: null, topics: { kind: 'clear' } }, options.unlessChangedSince === undefined)
      await this.commitFor(id, plan.mutations)
      plan.apply()
      this.count('sessionDiscarded', 'applied')
      return true
    })
  }

  /**
   * Ends a session listed as connected whose connection the carrier does not hold (its end
   * was never heard, or the carrier lost it): what an operator's kick of it means. False when
   * the session is not connected, or is no longer the incarnation `unheld` approves.
   */
  endUnheld(id: string, reason: DisconnectReason, unheld: (connected: SessionRecord) => boolean): Promise<boolean> {
    return this.queue.run(id, async () => {
      const current = this.sessions.get(id)
      if (!current?.connected || !unheld(current)) return false
      const event: LifecycleEvent = { kind: 'disconnected', clientId: id, incarnation: current.incarnation, at: Date.now(), reason }
      return (await this.applyInOrder(event)).applied
    })
  }

  /** Ends every persistent session offline past its expiry interval. */
  async expireDue(now: number): Promise<number> {
    let expired = 0
    const due = [...this.sessions.values()].filter((s) => expire(s, now) !== null)
    await Promise.all(
      due.map((s) =>
        this.queue.run(s.id, async () => {
          const current = this.sessions.get(s.id)
          const t = current && expire(current, now)
          if (!t) return
          const plan = this.plan(s.id, t)
          try {
            await this.commitFor(s.id, plan.mutations)
          } catch (error) {
            // expired is expired: as for a connection's end, memory takes it now
            this.storeLater(s.id, plan.mutations, error as Error)
          }
          plan.apply()
          this.count('sessionExpired', 'applied')
          this.log.info({ clientId: current.clientId, deviceId: current.deviceId, disconnectedAt: current.disconnectedAt }, 'session expired')
          expired++
        })
      )
    )
    for (const [clientId, tomb] of this.tombstones) if (now - tomb.at > TOMBSTONE_MS) this.tombstones.delete(clientId)
    for (const [clientId, at] of this.lastChange) if (now - at > TOMBSTONE_MS) this.lastChange.delete(clientId)
    return expired
  }

  /** Turns a transition into the mutations to store and the memory change to make after. */
  private plan(id: string, t: Applied, marksChange = true): Plan {
    const next = t.session
    const topics = t.topics
    const topicPlan =
      topics.kind === 'keep'
        ? EMPTY_PLAN
        : topics.kind === 'clear'
          ? this.topics.planClear(id)
          : topics.kind === 'add'
            ? this.topics.planAdd(id, topics.subscriptions, next !== null && !next.cleanStart)
            : this.topics.planRemove(id, topics.topics)
    // subscription entities follow the topics, in the same batch
    const entityPlan =
      topics.kind === 'keep'
        ? EMPTY_PLAN
        : topics.kind === 'clear'
          ? this.subscriptions.planClear(id)
          : topics.kind === 'add'
            ? this.subscriptions.planAdd(next!, this.ownerOf(next!.deviceId), topics.subscriptions, Date.now())
            : this.subscriptions.planRemove(id, topics.topics)
    const mutations: Mutation[] = [
      next === null
        ? { op: 'session.delete', id }
        : t.versionOnly
          ? { op: 'session.version', id, version: next.version }
          : { op: 'session.put', session: next }
    ]
    for (const m of topicPlan.mutations) mutations.push(m)
    for (const m of entityPlan.mutations) mutations.push(m)
    const ownerPlans = next === null ? this.owners.map((o) => o.planDropSession(id)) : NO_PLANS
    for (const p of ownerPlans) for (const m of p.mutations) mutations.push(m)
    return {
      mutations,
      apply: () => {
        if (marksChange) this.lastChange.set(id, Date.now())
        const before = this.sessions.get(id)
        if (next) {
          this.sessions.set(id, next)
        } else {
          // remember the ended connection, so its late events cannot bring the session back
          if (before) this.tombstones.set(id, { incarnation: before.incarnation, at: Date.now() })
          this.sessions.delete(id)
        }
        topicPlan.apply()
        entityPlan.apply()
        for (const p of ownerPlans) p.apply()
        for (const observe of this.observers) observe(before, next)
      }
    }
  }

  get(id: string): Session | undefined {
    const record = this.sessions.get(id)
    return record ? { ...record, topics: this.topics.topicsOf(id) } : undefined
  }

  get size(): number {
    return this.sessions.size
  }

  /** Sessions matching the query, ordered by id, at most `limit`, and whether more follow. */
  list(query: SessionQuery): { sessions: Session[]; more: boolean } {
    const matching: SessionRecord[] = []
    for (const s of this.sessions.values()) {
      if (query.after !== undefined && s.id <= query.after) continue
      if (query.deviceId !== undefined && s.deviceId !== query.deviceId) continue
      if (query.clientId !== undefined && s.clientId !== query.clientId) continue
      if (query.protocol !== undefined && s.protocol !== query.protocol) continue
      if (query.connected !== undefined && s.connected !== query.connected) continue
      matching.push(s)
    }
    matching.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    const page = matching.slice(0, query.limit)
    return { sessions: page.map((r) => ({ ...r, topics: this.topics.topicsOf(r.id) })), more: matching.length > query.limit }
  }

  /** The session of `id` without building its topic list (cheap; for checks on the hot path). */
  record(id: string): SessionRecord | undefined {
    return this.sessions.get(id)
  }

  /** Every session record, in no particular order; for compat views that filter and page themselves. */
  records(): IterableIterator<SessionRecord> {
    return this.sessions.values()
  }

  /** Resolves when every event queued so far has been applied. */
  async settled(): Promise<void> {
    while (this.queue.pendingKeys > 0) await new Promise((resolve) => setImmediate(resolve))
  }
}
