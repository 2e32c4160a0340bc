/**
 * The session registry: the live set of session entities, kept by the rules in
 * docs/ARCHITECTURE.md ("Rules the registry keeps") — a client's events apply in order, an older
 * incarnation never touches a newer one, and an event counts as applied only once its effect is
 * durable.
 *
 * It knows lifecycle events, the store and the TopicBook; nothing of Aedes, HTTP or MQTT.
 */
import { LRUCache } from 'lru-cache'
import type { Logger } from 'pino'
import type { LifecycleEvent, LifecycleEventKind } from '../domain/lifecycle-event.js'
import type { DisconnectReason, SessionRecord, TopicSubscription } from '../domain/session.js'
import { endConnection, expire, TOMBSTONE_MS, transition, type Applied, type SessionEndReason } from '../domain/transitions.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { LoggedChange } from '../store/change-log.js'
import type { Decided, Decider, Decision, StoredSession } from '../store/decision.js'
import type { FleetReads } from '../store/fleet-reads.js'
import type { LogOrigin } from '../store/log-follower.js'
import type { Plan } from '../store/plan.js'
import type { Mutation } from '../store/store.js'
import { KeyedQueue } from './keyed-queue.js'
import { entityPuts, sameSubscription, sessionMutations } from './session-mutations.js'
import type { SubscriptionBook } from './subscription-book.js'
import type { TopicBook } from './topic-book.js'

/** Other holders of per-session state (the broker's queues) that must go when a session ends. */
export interface SessionStateOwner {
  planDropSession(sessionId: string): Plan
}

/**
 * Told of a session change: `after` null when the session ended. `before` may be the caches' own
 * record, which a version change (a subscribe, an unsubscribe) bumps in place before the observers
 * hear of it: compare what a version change leaves alone (connection, device, incarnation), not
 * versions.
 */
export type SessionObserver = (before: SessionRecord | undefined, after: SessionRecord | null) => void

/**
 * `applied: false`: the event was stale (it belonged to a connection no longer the session's).
 * `after`: the session as the event left it (null: ended); absent when it changed nothing (a
 * SUBSCRIBE repeating what the session holds).
 */
export type ApplyResult = { applied: true; after?: SessionRecord | null } | { applied: false; why: string }

export interface ApplyOptions {
  /** The reconcile's own fix: not marked as a change (`changedSince`), committed after live events. */
  reconciling?: boolean
  /**
   * The session's device, where the event may make subscription entities (a subscribe): read
   * with the session in its decision, for the owner the entities carry.
   */
  device?: string
}

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

/**
 * How much of the fleet the registry's caches hold: all of it where this process is the store's
 * only writer and decides from them (SQLite), or the sessions used last, at most `sessions` of
 * them, where the store decides and every listing is a query (PostgreSQL): a replica's memory
 * then does not grow with the fleet.
 */
export type SessionCaching = { holdsFleet: true } | { holdsFleet: false; sessions: number }

/** The registry's cache of sessions: a Map, or an LRU of bounded size. */
interface SessionCache {
  get(id: string): SessionRecord | undefined
  set(id: string, session: SessionRecord): unknown
  delete(id: string): unknown
  values(): IterableIterator<SessionRecord> | Generator<SessionRecord>
  readonly size: number
}

/** Sessions the expiry sweep reads and ends at a time. */
const EXPIRY_PAGE = 500

const APPLIED: ApplyResult = { applied: true }
const NOT_BUILT: ApplyResult = { applied: false, why: 'nothing to apply' }
const NO_PLANS: Plan[] = []

/** What a source's `applyFor` builder answers for an event it found stale itself. */
export interface Stale {
  stale: LifecycleEvent['kind']
  why: string
}

/** What deciding one change of a session came to. */
type SessionDecision =
  | { kind: 'stale'; eventKind: LifecycleEventKind; why: string }
  | { kind: 'unchanged' }
  | {
      kind: 'applied'
      transition: Applied
      /** The session as stored before the change. */
      before: SessionRecord | undefined
      /** The broker's own state of an ending session, dropped with it (embedded mode). */
      owners: Plan[]
    }

type AppliedDecision = Extract<SessionDecision, { kind: 'applied' }>

/** Sessions of the previous run ended per decision at start. */
const END_CHUNK = 1000

const UNCHANGED: Decided<SessionDecision> = { mutations: [], result: { kind: 'unchanged' } }
/** A decision whose builder had nothing to apply: stores nothing. */
const NOTHING_BUILT: Decided<null> = { mutations: [], result: null }

/** First and longest wait before the ends the store refused are tried again, ms. */
const FIRST_RETRY_MS = 500
const MAX_RETRY_MS = 30_000

/**
 * An end applied to memory while the store refused it: the event (or expiry), and the mutations
 * decided for it from the caches then. Where this process is the store's only writer, the caches
 * already show the end, so those mutations are what gets stored; where the store decides, the
 * event is decided again on what is stored when it answers.
 */
type SessionEnd = { kind: 'disconnected'; event: LifecycleEvent } | { kind: 'expired'; at: number }
type UnstoredEnd = SessionEnd & { mutations: Mutation[] }

/** An event to apply, or what builds it from the session as stored (see applyFor). */
type EventSource = LifecycleEvent | ((stored: StoredSession) => LifecycleEvent | Stale | null)

/** The event `source` gives for the session as `stored`. */
function eventFrom(source: EventSource, stored: StoredSession): LifecycleEvent | Stale | null {
  return typeof source === 'function' ? source(stored) : source
}

/**
 * The registry decides every change of a session through a Decider: against the session as
 * stored, locked, in the transaction that stores the change (PostgreSQL, several replicas), or
 * against its own caches where this process is the store's only writer (SQLite). Its caches —
 * the sessions here, the TopicBook's topics and the SubscriptionBook's entities — change only as
 * the change log hands committed changes back (`applyChange`), in log order, whichever replica
 * made them. Where the caches do not hold the fleet (`SessionCaching`), the sessions here are
 * the ones used last, and the TopicBook and SubscriptionBook stay empty: FleetReads answers for
 * them from the store.
 */
export class SessionRegistry {
  private readonly sessions: SessionCache
  private readonly tombstones = new Map<string, { incarnation: string; at: number }>()
  private readonly queue = new KeyedQueue()
  private readonly owners: SessionStateOwner[] = []
  private readonly observers: SessionObserver[] = []
  private readonly cacheObservers: SessionObserver[] = []
  private stepDownHandler: ((stepDown: StepDown) => void) | undefined
  private readonly eventCounters: CounterCache = new Map()
  private readonly disconnectCounters: CounterCache = new Map()
  /** When each clientId's session last changed here (epoch ms), pruned with the tombstones. */
  private readonly lastChange = new Map<string, number>()
  /**
   * Ends of connections (and sessions) applied to memory but not yet stored, by clientId, in the
   * order they happened: decided again, and stored, as soon as the store answers. Anything else
   * the client does next waits until they are stored (see decideAfterEnds), so the store never
   * sees a later change before an end.
   */
  private readonly unstoredEnds = new Map<string, UnstoredEnd[]>()
  private retryTimer: NodeJS.Timeout | undefined
  private retryMs = FIRST_RETRY_MS
  private stopped = false

  constructor(
    private readonly decider: Decider,
    readonly topics: TopicBook,
    readonly subscriptions: SubscriptionBook,
    /** The owner (tenant) of a device, which its subscription entities carry. */
    private readonly ownerOf: (deviceId: string) => string,
    private readonly metrics: HubMetrics,
    private readonly log: Logger,
    readonly caching: SessionCaching = { holdsFleet: true }
  ) {
    this.sessions = caching.holdsFleet ? new Map<string, SessionRecord>() : new LRUCache<string, SessionRecord>({ max: caching.sessions })
    metrics.gauge('iothub_sessions_unstored_ends', 'Connection or session ends applied but not yet stored (the store failed); retried', [], (set) =>
      set({}, this.unstoredEnds.size)
    )
  }

  addStateOwner(owner: SessionStateOwner): void {
    this.owners.push(owner)
  }

  /** Told of every session change made here, once it is durable (the side effects are this replica's to do). */
  observe(observer: SessionObserver): void {
    this.observers.push(observer)
  }

  /** Told of every change of the cached sessions, whichever replica made it (counts kept over the whole fleet). */
  observeCache(observer: SessionObserver): void {
    this.cacheObservers.push(observer)
  }

  /** Who acts on step-downs: the carrier (one; a later call replaces it). */
  onStepDown(handler: (stepDown: StepDown) => void): void {
    this.stepDownHandler = handler
  }

  load(sessions: Iterable<SessionRecord>): void {
    for (const s of sessions) this.sessions.set(s.id, s)
  }

  /**
   * A committed change of a session, handed back by the change log, in log order. One another
   * replica made counts for `changedSince` from when it was committed there (`at`; this
   * replica's own changes are marked as it makes them, its reconcile's fixes not at all), so a
   * reconcile here never undoes it — and one committed before a reconcile began, but read after,
   * does not hold that reconcile back.
   */
  applyChange(m: Extract<LoggedChange, { op: 'session.put' | 'session.version' | 'session.delete' }>, origin: LogOrigin = 'here', at = Date.now()): void {
    const id = m.op === 'session.put' ? m.session.id : m.id
    if (origin === 'elsewhere' && at > (this.lastChange.get(id) ?? -Infinity)) this.lastChange.set(id, at)
    const before = this.sessions.get(id)
    let after: SessionRecord | null
    if (m.op === 'session.put') {
      // the caches' own copy: the entry's record goes on to the event stream and back to the
      // carrier as the event's outcome, and a later version change bumps the cached one in place
      after = { ...m.session }
      this.sessions.set(id, after)
    } else if (m.op === 'session.version') {
      if (!before) return
      // In place: a subscribe or unsubscribe changes nothing of a session but its version. A new
      // record per such event was one more object per event that outlived the next scavenge (the
      // caches hold it), and a scavenge's pause grows with what survives it; on two cpus the
      // store's writer thread waits for a cpu through that pause (docs/perf-journal.md, "what the
      // events tail's episodes are made of"). What must not change afterwards never is a cached
      // record: a change-log entry's (a put caches a copy of it, above) and the outcome a carrier is
      // answered (the transition's own). Those that do hold a cached one (observers, decisions in
      // flight, connectinfo, the expiry sweep) read what a version change leaves as it was.
      before.version = m.version
      after = before
      this.sessions.set(id, after) // a bounded cache (LRU) counts it as used
    } else {
      if (!before) return
      // remember the ended connection, so its late events cannot bring the session back (where
      // the store decides, it keeps them)
      if (this.decider.fromCaches) this.entomb(id, m.incarnation ?? before.incarnation)
      this.sessions.delete(id)
      after = null
    }
    for (const observe of this.cacheObservers) observe(before, after)
  }

  /**
   * Remembers the ended connection of `clientId` — in place where one of an earlier connection is
   * remembered still: a client that comes and goes would otherwise leave a new tombstone per
   * connection, each outliving the scavenges (see applyChange's version change).
   */
  private entomb(clientId: string, incarnation: string): void {
    const at = Date.now()
    const tomb = this.tombstones.get(clientId)
    if (tomb === undefined) this.tombstones.set(clientId, { incarnation, at })
    else {
      tomb.incarnation = incarnation
      tomb.at = at
    }
  }

  /** The session of `clientId` as the caches hold it, as a decision reads it. */
  cachedSession(clientId: string): StoredSession {
    const session = this.sessions.get(clientId)
    return {
      session,
      topics: this.topics.entriesOf(clientId),
      entities: this.subscriptions.entitiesOf(clientId),
      ...(session === undefined ? this.tombstoneOf(clientId) : { lastIncarnation: undefined })
    }
  }

  private tombstoneOf(clientId: string): { lastIncarnation: string | undefined; lastEndedAt?: number } {
    const tomb = this.tombstones.get(clientId)
    return tomb ? { lastIncarnation: tomb.incarnation, lastEndedAt: tomb.at } : { lastIncarnation: undefined }
  }

  /**
   * At start nothing is connected: clean sessions of the previous run end, persistent ones go
   * offline (reason `server_shutdown`) and start counting towards their expiry from now.
   */
  async endPreviousRun(now: number, chunk = END_CHUNK): Promise<{ ended: number; offline: number }> {
    let ended = 0
    let offline = 0
    const connected: string[] = []
    for (const s of this.sessions.values()) if (s.connected) connected.push(s.id)
    // one decision, and so one commit, per chunk of sessions rather than one per session: a
    // crash can leave a million of them connected
    for (let from = 0; from < connected.length; from += chunk) {
      const ids = connected.slice(from, from + chunk)
      const decisions = await this.decider.decide({
        reads: { sessions: ids },
        decide: (view) => {
          const mutations: Mutation[] = []
          const result: [id: string, decision: AppliedDecision][] = []
          for (const id of ids) {
            const stored = view.session(id)
            if (!stored.session?.connected) continue
            const decided = this.decided(id, endConnection(stored.session, now, 'server_shutdown'), stored)
            for (const m of decided.mutations) mutations.push(m)
            result.push([id, decided.result as AppliedDecision])
          }
          return { mutations, result }
        }
      })
      for (const [id, decision] of decisions) {
        this.afterApplied(id, decision, true)
        if (decision.transition.session === null) ended++
        else offline++
      }
    }
    return { ended, offline }
  }

  /**
   * At start: makes the subscription entities that stored sessions' topics call for but that
   * are missing — a store written before subscription entities existed. Returns how many.
   */
  async restoreSubscriptionEntities(now: number): Promise<number> {
    let made = 0
    // a topic whose entity is held needs nothing: only the others are worked out (an entity's id is a hash)
    const lacking: SessionRecord[] = []
    const lacks = (sessionId: string, topic: string) => !this.subscriptions.holds(sessionId, topic)
    // walked from the TopicBook, whose sessions come with their topics: a session is looked up
    // once (in the SubscriptionBook), not twice, and its record only when it lacks an entity
    for (const id of this.topics.sessionsWithTopic(lacks)) {
      const s = this.sessions.get(id)
      if (s === undefined) continue
      const topics = this.topics.topicsOf(s.id).filter((t) => !this.subscriptions.holds(s.id, t.topic))
      if (topics.length > 0 && entityPuts(this.cachedSession(s.id), s, topics, this.ownerOf, now).length > 0) lacking.push(s)
    }
    await Promise.all(
      lacking.map((s) =>
        this.decider.decide({
          reads: { sessions: [s.id] },
          decide: (view) => {
            const stored = view.session(s.id)
            const topics = [...stored.topics.values()].map((t) => t.subscription)
            const mutations = entityPuts(stored, stored.session, topics, this.ownerOf, now)
            made += mutations.length
            return { mutations, result: undefined }
          }
        })
      )
    )
    return made
  }

  /** Applies one lifecycle event; resolves once its effect is durable (or it was stale). */
  apply(event: LifecycleEvent): Promise<ApplyResult> {
    // in the client's turn, which applyInOrder leaves itself (KeyedQueue.enter)
    return this.queue.enter(event.clientId, () => this.applyInOrder(event.clientId, event, true, undefined, true))
  }

  /**
   * Applies the event `build` makes, in the client's order, from the session as it is stored when
   * the client's earlier events are done — for sources whose events name their connection by
   * what it is (node, peer address) rather than by an incarnation (EMQX's hooks): `build` reads
   * the current session (or, when there is none, the incarnation of the last one that ended, and
   * when) to
   * tell whether the event is the live connection's, and how a connect orders against it. It
   * may run more than once (a store retrying its transaction), so it must have no effect but
   * its answer.
   */
  applyFor(
    clientId: string,
    build: (current: SessionRecord | undefined, lastEnded: string | undefined, lastEndedAt: number | undefined) => LifecycleEvent | Stale | null,
    options: ApplyOptions = {}
  ): Promise<ApplyResult> {
    return this.queue.enter(clientId, () =>
      this.applyInOrder(
        clientId,
        (stored) =>
          stored.session === undefined ? build(undefined, stored.lastIncarnation, stored.lastEndedAt) : build(stored.session, undefined, undefined),
        !options.reconciling,
        options.device,
        true
      )
    )
  }

  /**
   * Whether an event of `clientId` was applied here at or after `since` (epoch ms): the reconcile
   * leaves such clients alone, so what arrived while it listed the broker is never undone.
   */
  changedSince(clientId: string, since: number): boolean {
    return (this.lastChange.get(clientId) ?? -Infinity) >= since
  }

  /**
   * `marksChange: false` for the reconcile's own fixes, which `changedSince` must not see.
   * `leaves`: the call holds the client's turn in the queue (`KeyedQueue.enter`) and leaves it once
   * its outcome is applied — in the continuations below, which every event has anyway, rather than
   * in a promise and closure of the queue's own per event in flight.
   *
   * Not an async function: every event in flight waits here until its batch commits — thousands
   * under load — and a suspended async frame (its registers, context and promise) is live memory
   * that every scavenge copies; two continuations sharing one context hold less.
   */
  private applyInOrder(id: string, source: EventSource, marksChange = true, device?: string, leaves = false): Promise<ApplyResult> {
    let event: LifecycleEvent | undefined
    return this.decideAfterEnds(
      id,
      (stored, ownerOf) => {
        event = undefined // a decision made again starts over
        const built = eventFrom(source, stored)
        if (built === null) return null
        if ('stale' in built) return { mutations: [], result: { kind: 'stale', eventKind: built.stale, why: built.why } }
        event = built
        return this.decideEvent(stored, built, ownerOf)
      },
      // the reconcile's own fixes (which do not mark a change): nobody waits on them, live events go first
      !marksChange,
      device
    ).then(
      (decision) => {
        try {
          return this.outcome(id, decision, event, marksChange)
        } finally {
          if (leaves) this.queue.leave(id)
        }
      },
      (error: unknown) => {
        try {
          // the store may have failed before the decision was made: what the caches say is then
          // the best guess of the event
          if (event === undefined) {
            const guessed = eventFrom(source, this.cachedSession(id))
            if (guessed !== null && !('stale' in guessed)) event = guessed
          }
          if (event?.kind !== 'disconnected') {
            if (event) this.count(event.kind, 'failed')
            throw error
          }
          // The broker has closed the connection already: showing it connected until the store
          // answers would be the lie (pushes would name it, the API would list it). Memory takes
          // the end now; the store gets it as soon as it can (unstoredEnds).
          return this.outcome(id, this.applyUnstored(id, { kind: 'disconnected', event }, error as Error), event, marksChange)
        } finally {
          if (leaves) this.queue.leave(id)
        }
      }
    )
  }

  /** What applying `event` came to, once its decision is durable (or was refused and kept in memory). */
  private outcome(id: string, decision: SessionDecision | null, event: LifecycleEvent | undefined, marksChange: boolean): ApplyResult {
    if (decision === null) return NOT_BUILT
    if (decision.kind === 'stale') {
      this.count(decision.eventKind, 'stale')
      this.log.debug({ clientId: id, kind: decision.eventKind, why: decision.why }, 'stale lifecycle event ignored')
      return { applied: false, why: decision.why }
    }
    if (decision.kind === 'unchanged' || !event) return APPLIED // a SUBSCRIBE repeating what the session holds
    this.afterApplied(id, decision, marksChange)
    this.count(event.kind, 'applied')
    if (event.kind === 'disconnected' && decision.before) this.ended(decision.before, event.reason, decision.transition.session === null)
    // the line's fields are built only when it is written: at a quieter level, per connect, they are garbage
    if (event.kind === 'connected' && this.log.isLevelEnabled('info')) {
      this.log.info({ clientId: id, deviceId: event.deviceId, protocol: event.protocol, peer: `${event.peerHost}:${event.peerPort}`, cleanStart: event.cleanStart }, 'connected')
    }
    return { applied: true, after: decision.transition.session }
  }

  /** What an applied change does here once it is durable: the broker's state, observers, a step-down. */
  private afterApplied(id: string, decision: AppliedDecision, marksChange: boolean): void {
    if (marksChange) this.lastChange.set(id, Date.now())
    for (const p of decision.owners) p.apply()
    for (const observe of this.observers) observe(decision.before, decision.transition.session)
    const tookOver = decision.transition.tookOver
    if (tookOver) {
      this.ended(tookOver, 'taken_over', false)
      this.stepDownHandler?.({ reason: 'taken_over', session: tookOver })
    }
  }

  /** One event against the session as stored. */
  private decideEvent(stored: StoredSession, event: LifecycleEvent, ownerOf = this.ownerOf): Decided<SessionDecision> {
    const current = stored.session
    if (event.kind === 'subscribed' && current && this.alreadyHolds(stored, event.incarnation, event.subscriptions)) {
      // a SUBSCRIBE repeating what the session holds, or Aedes restoring a resumed session
      return UNCHANGED
    }
    const t = transition(current, event, current === undefined ? stored.lastIncarnation : undefined)
    if (t.outcome === 'stale') return { mutations: [], result: { kind: 'stale', eventKind: event.kind, why: t.why } }
    return this.decided(event.clientId, t, stored, ownerOf)
  }

  /** A transition's mutations, with those of the broker's state when the session ends. */
  private decided(id: string, t: Applied, stored: StoredSession, ownerOf = this.ownerOf): Decided<SessionDecision> {
    const mutations = sessionMutations(id, t, stored, ownerOf, Date.now())
    const owners = t.session === null ? this.owners.map((o) => o.planDropSession(id)) : NO_PLANS
    for (const p of owners) for (const m of p.mutations) mutations.push(m)
    return { mutations, result: { kind: 'applied', transition: t, before: stored.session, owners } }
  }

  /** Decides a change of `id`'s session, after storing any end of it not stored yet. */
  private async decide(id: string, decide: (stored: StoredSession) => Decided<SessionDecision>, background = false): Promise<SessionDecision> {
    return (await this.decideAfterEnds(id, decide, background))!
  }

  /**
   * `background`: a change nobody waits on (the reconcile's), committed after live ones
   * (group-commit.ts). `device`: the session's device, read (and locked) with it, so the
   * subscription entities a subscribe makes carry its owner as stored — not as this replica's
   * device cache holds it, which, where replicas share the store, may not hold the device at all.
   */
  private decideAfterEnds(
    id: string,
    decide: (stored: StoredSession, ownerOf: (deviceId: string) => string) => Decided<SessionDecision> | null,
    background = false,
    device?: string
  ): Promise<SessionDecision | null> {
    if (this.unstoredEnds.has(id)) return this.storeUnstoredEnd(id).then(() => this.decideNow(id, decide, background, device))
    return this.decideNow(id, decide, background, device)
  }

  /**
   * Not an async function, as nothing after its decision needs one: every event in flight waits
   * here until its batch commits, and a suspended async frame is live memory each scavenge copies.
   */
  private decideNow(
    id: string,
    decide: (stored: StoredSession, ownerOf: (deviceId: string) => string) => Decided<SessionDecision> | null,
    background: boolean,
    device: string | undefined
  ): Promise<SessionDecision | null> {
    return this.decider.decide<SessionDecision | null>({
      background,
      reads: device === undefined ? { sessions: [id] } : { sessions: [id], devices: [device] },
      decide: (view) => {
        const ownerOf = device === undefined ? this.ownerOf : (deviceId: string) => (deviceId === device ? (view.device(device)?.owner ?? '') : this.ownerOf(deviceId))
        // nothing built (null) stores nothing and answers null: a decision made again may build
        return decide(view.session(id), ownerOf) ?? NOTHING_BUILT
      }
    })
  }

  /** Applies an end to memory that the store refused, to be decided and stored again later. */
  private applyUnstored(id: string, end: SessionEnd, error: Error): SessionDecision {
    const cached = this.cachedSession(id)
    const decided =
      end.kind === 'disconnected' ? this.decideEvent(cached, end.event) : cached.session ? this.expiryOf(cached, end.at) : null
    const applied = decided?.result.kind === 'applied'
    if (applied) this.applyToCaches(decided.mutations)
    // where the store decides, the caches may lag it (the connection was another replica's):
    // the end is kept for the store to decide whatever they say
    if (applied || !this.decider.fromCaches) {
      this.unstoredEnds.set(id, [...(this.unstoredEnds.get(id) ?? []), { ...end, mutations: applied ? decided.mutations : [] }])
      this.log.warn({ clientId: id, err: error.message }, 'connection end not stored yet: applied, and stored once the store answers')
      this.scheduleRetry()
    }
    return decided?.result ?? { kind: 'unchanged' }
  }

  /** Memory only, for an end the store refused: the same changes the log would hand back. */
  private applyToCaches(mutations: readonly Mutation[]): void {
    for (const m of mutations) {
      switch (m.op) {
        case 'session.put':
        case 'session.version':
        case 'session.delete':
          this.applyChange(m)
          break
        case 'topic.put':
        case 'topic.delete':
        case 'topic.clear':
          if (this.caching.holdsFleet) this.topics.applyChange(m)
          break
        case 'subscription.put':
        case 'subscription.delete':
        case 'subscription.clear':
          if (this.caching.holdsFleet) this.subscriptions.applyChange(m)
          break
        default:
      }
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.stopped || this.unstoredEnds.size === 0) return
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      void this.storeUnstoredEnds()
    }, this.retryMs)
    this.retryTimer.unref()
  }

  /** Decides and stores the ends of `id` not stored yet, in order; throws if the store still refuses. */
  private async storeUnstoredEnd(id: string): Promise<void> {
    for (;;) {
      const end = this.unstoredEnds.get(id)?.[0]
      if (!end) return
      await this.decider.decide({
        reads: { sessions: [id] },
        decide: (view) => {
          // the caches are the stored state but for these ends, which they show already
          if (this.decider.fromCaches) return { mutations: end.mutations, result: { kind: 'unchanged' } }
          const stored = view.session(id)
          // decided again on what is stored now: stale if a newer connection has the session
          const decided = end.kind === 'disconnected' ? this.decideEvent(stored, end.event) : stored.session ? this.expiryOf(stored, end.at) : null
          return decided ?? UNCHANGED
        }
      })
      const left = this.unstoredEnds.get(id)?.filter((e) => e !== end) ?? []
      if (left.length > 0) this.unstoredEnds.set(id, left)
      else this.unstoredEnds.delete(id)
    }
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
          try {
            await this.storeUnstoredEnd(id)
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
    this.disconnectCounter(session.protocol, reason).inc()
    if (this.log.isLevelEnabled('info')) {
      this.log.info({ clientId: session.clientId, deviceId: session.deviceId, protocol: session.protocol, reason, sessionEnded }, 'disconnected')
    }
  }

  /** The labelled counter of a protocol's disconnects for a reason, looked up once (not hashed per disconnect). */
  private disconnectCounter(protocol: SessionRecord['protocol'], reason: DisconnectReason): Counted {
    return counterOf(this.disconnectCounters, protocol, reason, () => this.metrics.disconnectTally(protocol, reason))
  }

  /** Counts an event; its tally is looked up once, and counts in a plain number (metrics.ts, Tallies). */
  private count(kind: LifecycleEventKind, outcome: 'applied' | 'stale' | 'failed'): void {
    counterOf(this.eventCounters, kind, outcome, () => this.metrics.eventTally(kind, outcome)).inc()
  }

  private alreadyHolds(stored: StoredSession, incarnation: string, subscriptions: TopicSubscription[]): boolean {
    const current = stored.session!
    if (current.incarnation !== incarnation || !current.connected) return false
    const persistent = !current.cleanStart
    return subscriptions.every((s) => {
      const held = stored.topics.get(s.topic)
      return held !== undefined && held.persistent === persistent && sameSubscription(held.subscription, s)
    })
  }

  /**
   * Ends the sessions `ids` — connected or offline, as stored — with `reason`, in one decision
   * (one batch) with `also`'s: how a device's deletion ends its sessions, its subscription
   * entities and the device itself as one stored change. Taken in each client's turn (every
   * queue, in sorted order, so two such calls never wait on each other), so none of their events
   * is decided meanwhile. A live connection's own end comes later and is stale: its carrier
   * must close it. Answers `also`'s result and the sessions ended (as stored before), with how
   * many subscription entities each held.
   */
  async endSessionsWith<R>(
    ids: readonly string[],
    reason: SessionEndReason,
    also: Decision<R>
  ): Promise<{ result: R; ended: { session: SessionRecord; entities: number }[] }> {
    const sorted = [...new Set(ids)].sort()
    const inTurn = (i: number): Promise<{ result: R; ended: { session: SessionRecord; entities: number }[] }> =>
      i < sorted.length ? this.queue.run(sorted[i]!, () => inTurn(i + 1)) : this.endAll(sorted, reason, also)
    return inTurn(0)
  }

  private async endAll<R>(ids: readonly string[], reason: SessionEndReason, also: Decision<R>) {
    for (const id of ids) if (this.unstoredEnds.has(id)) await this.storeUnstoredEnd(id)
    const { decisions, entities, result } = await this.decider.decide({
      reads: { ...also.reads, sessions: [...(also.reads.sessions ?? []), ...ids] },
      decide: (view) => {
        const mutations: Mutation[] = []
        const decisions: [string, AppliedDecision][] = []
        const entities = new Map<string, number>()
        for (const id of ids) {
          const stored = view.session(id)
          if (!stored.session) continue
          const decided = this.decided(id, { outcome: 'applied', session: null, topics: { kind: 'clear' }, endedBy: reason }, stored)
          for (const m of decided.mutations) mutations.push(m)
          decisions.push([id, decided.result as AppliedDecision])
          entities.set(id, stored.entities.size)
        }
        const more = also.decide(view)
        return { mutations: [...mutations, ...more.mutations], result: { decisions, entities, result: more.result } }
      }
    })
    const ended: { session: SessionRecord; entities: number }[] = []
    for (const [id, decision] of decisions) {
      this.afterApplied(id, decision, true)
      const before = decision.before!
      if (before.connected && reason !== 'expired' && reason !== 'discarded') this.ended(before, reason, true)
      ended.push({ session: before, entities: entities.get(id) ?? 0 })
    }
    return { result, ended }
  }

  /** Ends an offline session now, as an operator asks (EMQX's kick of a disconnected client). */
  discard(id: string, options: { unlessChangedSince?: number; onlyIf?: (offline: SessionRecord) => boolean } = {}): Promise<boolean> {
    return this.queue.run(id, async () => {
      if (options.unlessChangedSince !== undefined && this.changedSince(id, options.unlessChangedSince)) return false
      const decision = await this.decide(id, (stored) => {
        const current = stored.session
        if (!current || current.connected) return UNCHANGED
        if (options.onlyIf && !options.onlyIf(current)) return UNCHANGED
        return this.decided(id, { outcome: 'applied', session: null, topics: { kind: 'clear' }, endedBy: 'discarded' }, stored)
      }, options.unlessChangedSince !== undefined) // the reconcile's: in the background
      if (decision.kind !== 'applied') return false
      this.afterApplied(id, decision, options.unlessChangedSince === undefined)
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
      const result = await this.applyInOrder(id, (stored) => {
        const current = stored.session
        if (!current?.connected || !unheld(current)) return null
        return { kind: 'disconnected', clientId: id, incarnation: current.incarnation, at: Date.now(), reason }
      })
      return result.applied
    })
  }

  /**
   * Ends every persistent session offline past its expiry interval, walking `fleet`'s due
   * sessions a page at a time (each is decided again on what is stored when it is ended).
   */
  async expireDue(now: number, fleet: Pick<FleetReads, 'dueToExpire'>): Promise<number> {
    let expired = 0
    let after: string | undefined
    for (;;) {
      const due = await fleet.dueToExpire(now, after, EXPIRY_PAGE)
      if (due.length === 0) break
      after = due.at(-1)!.id
      expired += await this.expire(due, now)
      if (due.length < EXPIRY_PAGE) break
    }
    for (const [clientId, tomb] of this.tombstones) if (now - tomb.at > TOMBSTONE_MS) this.tombstones.delete(clientId)
    for (const [clientId, at] of this.lastChange) if (now - at > TOMBSTONE_MS) this.lastChange.delete(clientId)
    return expired
  }

  private async expire(due: readonly SessionRecord[], now: number): Promise<number> {
    let expired = 0
    await Promise.all(
      due.map((s) =>
        this.queue.run(s.id, async () => {
          let decision: SessionDecision
          try {
            decision = await this.decide(s.id, (stored) => (stored.session ? (this.expiryOf(stored, now) ?? UNCHANGED) : UNCHANGED))
          } catch (error) {
            // expired is expired: as for a connection's end, memory takes it now
            decision = this.applyUnstored(s.id, { kind: 'expired', at: now }, error as Error)
          }
          if (decision.kind !== 'applied') return
          this.afterApplied(s.id, decision, true)
          this.count('sessionExpired', 'applied')
          this.log.info({ clientId: s.clientId, deviceId: s.deviceId, disconnectedAt: decision.before?.disconnectedAt }, 'session expired')
          expired++
        })
      )
    )
    return expired
  }

  private expiryOf(stored: StoredSession, now: number): Decided<SessionDecision> | null {
    const t = expire(stored.session!, now)
    return t ? this.decided(stored.session!.id, t, stored) : null
  }

  get size(): number {
    return this.sessions.size
  }

  /**
   * Where a session the caches do not have (yet) is read from, when other replicas write the
   * store too (set by the hub); without it the caches are the whole truth.
   */
  private readThrough: ((id: string) => Promise<SessionRecord | undefined>) | undefined

  readSessionsThrough(read: (id: string) => Promise<SessionRecord | undefined>): void {
    this.readThrough = read
  }

  /** The session of `id` from the caches, or as stored when they miss it and others write the store. */
  async find(id: string): Promise<SessionRecord | undefined> {
    return this.sessions.get(id) ?? (await this.readThrough?.(id))
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

type Counted = { inc(): void }
/** Children of a counter with two labels, by their values (each value set from a fixed list). */
type CounterCache = Map<string, Map<string, Counted>>

/** The tally of `first`, `second` in `cache`, made by `make` the first time. */
function counterOf(cache: CounterCache, first: string, second: string, make: () => Counted): Counted {
  let bySecond = cache.get(first)
  if (!bySecond) cache.set(first, (bySecond = new Map<string, Counted>()))
  let counter = bySecond.get(second)
  if (!counter) bySecond.set(second, (counter = make()))
  return counter
}
