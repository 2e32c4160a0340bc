/**
 * Recovery from the broker (docs/ARCHITECTURE.md, "Restart and reconcile"): in EMQX mode the
 * broker's REST API is the truth the hub's view is brought back to, since EMQX carries the
 * connections and the hub only hears of them.
 * A run pages through EMQX's clients and subscriptions, then
 * - ends the hub's connected sessions EMQX no longer has connected (ghosts: a disconnect the
 *   hub missed) — and, with EMQX 5, which lists offline persistent sessions too, the offline
 *   sessions EMQX no longer holds at all;
 * - records connections EMQX has that the hub missed (or holds an older connection of);
 * - adds and removes topics until each connected session's set equals EMQX's.
 *
 * Events arriving during a run are never undone by it: a client whose session changed after
 * the run began is left alone (SessionRegistry.changedSince), checked inside the client's own
 * queue, so no event can slip between the check and the fix. Another replica's change counts
 * there once this replica has read it from the change log, so the fixes of what a read of the
 * store showed wait until the log is applied up to its head as read after it (`caughtUp`; a
 * page whose wait times out is left alone, counted in `skippedBehind`); and each fix is
 * decided only on the very session it was worked out from (its incarnation and version, in the
 * fix's decision against the stored row), so a change made anywhere between the read and the
 * fix is not undone either. The fixes go through the registry like any event — grouped into
 * the same durable batches, after the live events (group-commit.ts: they are `background`) — a
 * bounded number at a time.
 *
 * Live events come first. A hook call is EMQX waiting on us on a client's connect; a reconcile
 * is not. Both share one main thread, one store writer and the database's cpus, so the run is
 * cut into short chunks (a page read, 5 ms of clients compared) and, between two chunks, once
 * live events have waited on the store for 50 ms, waits for them to be stored (`liveFirst`, the
 * store's liveSettled): a store transaction of live events makes ~10 round trips, each of which
 * would otherwise wait behind a chunk. A busier live path makes the run slower, never the other
 * way round, and by at most a quarter of its time, so the run always ends.
 *
 * What the hub holds is read from the store (FleetReads), not from a replica's memory, which
 * does not hold the whole fleet: each page of listed clients is compared with their stored
 * sessions in one read, and a client whose stored session already is what EMQX lists
 * (connected, the same connection, clean start and expiry, the same topics and QoS) costs
 * nothing more — no decision, no transaction. Only clients that differ go through the
 * registry. Ghosts are found by a keyset walk of the stored connected sessions.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'
import type { Logger } from 'pino'
import type { QoS, Session, SessionRecord } from '../domain/session.js'
import { resumesSession, transition } from '../domain/transitions.js'
import type { EmqxListedClient, EmqxRestClient } from './emqx-rest.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { ApplyResult, SessionRegistry } from '../registry/registry.js'
import type { LifecycleEvent } from '../domain/lifecycle-event.js'
import type { FleetReads } from '../store/fleet-reads.js'
import { isLiveConnection } from './emqx-client.js'
import type { EmqxSource } from './emqx-source.js'

/** What the reconcile reads of the stored fleet: one session, a listed page's sessions, and the keyset walk of stored sessions. */
export type ReconcileReads = Pick<FleetReads, 'session' | 'sessionsOf' | 'sessionStates'>

export interface ReconcilerOptions {
  /** Listed clients compared with the store in one read, and stored sessions per page of the ghost walk. */
  pageSize?: number
  /**
   * When live events have waited on the store `behindMs` or more, resolves once those asked so
   * far are stored; else at once (Store.liveSettled): awaited between the run's chunks. Absent,
   * the run only yields a turn of the event loop.
   */
  liveFirst?: (behindMs: number) => Promise<void>
  /**
   * Resolves true once this replica has applied every change committed to the store before the
   * call, by any replica; false when that takes longer than `timeoutMs` (Store.caughtUp).
   * Absent: every change is this process's own, applied as it commits.
   */
  caughtUp?: (timeoutMs: number) => Promise<boolean>
}

/** What asked for a reconcile; `store_returned`: the store answers again after failing, and hook calls were refused meanwhile. */
export type ReconcileTrigger = 'start' | 'provider_loaded' | 'interval' | 'api' | 'store_returned'

const TRIGGERS: ReadonlySet<string> = new Set<ReconcileTrigger>(['start', 'provider_loaded', 'interval', 'api', 'store_returned'])

/** Whether `value` names a trigger (as another replica wrote it in the lease's request). */
export function isReconcileTrigger(value: string | null): value is ReconcileTrigger {
  return value !== null && TRIGGERS.has(value)
}

export interface ReconcileReport {
  /** `check`: one client checked after a takeover only arrival ordered (not kept as `last`). */
  trigger: ReconcileTrigger | 'check'
  /** Epoch ms. */
  startedAt: number
  durationMs: number
  pages: number
  brokerClients: number
  brokerSubscriptions: number
  ghostsEnded: number
  offlineEnded: number
  sessionsAdded: number
  /** Connections the hub held whose clean start or expiry EMQX's listing corrected. */
  sessionsCorrected: number
  topicsAdded: number
  topicsRemoved: number
  /** Clients left alone because an event changed them during the run. */
  skippedChanged: number
  /**
   * Clients that differ left alone because this replica could not apply the change log up to
   * what their stored sessions showed in time, so could not tell whether another replica had
   * just changed them; the next run sees to them.
   */
  skippedBehind: number
  error: string | null
}

/**
 * Applies the event `fix` makes to the client's session, unless the session changed since the
 * run began or is no longer `compared` (the one the fix was worked out from): CHANGED then.
 */
type UnlessChanged = (
  compared: SessionRecord | undefined,
  fix: (current: SessionRecord | undefined, lastEnded: string | undefined) => LifecycleEvent | null
) => Promise<ApplyResult | typeof CHANGED>

/** A fix not applied because its client changed meanwhile (counted in `skippedChanged`). */
const CHANGED = 'changed'

/** Fixes applied at a time: enough to fill group-commit batches, few enough to leave room for live events. */
const FIXES_IN_FLIGHT = 256

/** Listed clients per read of their stored sessions, and stored sessions per page of the ghost walk: EMQX's own page size. */
const READ_PAGE = 1000

/**
 * The main thread's time a run takes between two pauses for live events (ms), comparing clients
 * or walking stored sessions: the most a live event waits for the run's sake. Measured by the
 * clock, not by a count of clients: a pause costs a whole turn of the event loop, so pausing
 * every 100 clients made a run at 200,000 on an idle machine 1.7 times as long.
 */
const SLICE_MS = 5

/**
 * How long a live event may wait on the store before the run stops for it: above what a commit
 * takes while the live path keeps up (a few to ~40 ms at 500 hook calls/s on an idle 2-cpu
 * machine), so a run that does not slow the live path is not slowed either.
 */
const LIVE_BEHIND_MS = 50

/**
 * The most of a run's time spent waiting for live events: however busy the live path is, the
 * run goes on at least three quarters of the time, so it ends (at worst a third slower than
 * unpaced: 1,000,000 listed clients stay within their 120 s) instead of starving.
 */
const MOST_WAITING = 0.25

/**
 * How long a run waits for this replica to apply the change log up to what a read of the store
 * showed before it fixes what that read found (ms): far above the follower's usual lag (a few
 * ms), so a page is left alone only when the follower is stuck or the store struggles.
 */
const CATCH_UP_MS = 5000

const NO_TOPICS = new Map<string, QoS>()

/** How long after an unproven takeover its client is checked with EMQX: hook calls still under way from other nodes arrive first. */
const CHECK_DELAY_MS = 1000

export class Reconciler {
  private running: Promise<ReconcileReport> | undefined
  private readonly checksDue = new Map<string, NodeJS.Timeout>()
  private readonly checksRunning = new Set<Promise<void>>()
  private stopped = false
  last: ReconcileReport | null = null

  private readonly pageSize: number
  private readonly liveFirst: (behindMs: number) => Promise<void>
  private readonly caughtUp: (timeoutMs: number) => Promise<boolean>
  /** When the run's current slice of main-thread work began (performance.now()). */
  private sliceStartedAt = 0
  /** The run under way: when it began and how long it has waited for live events (ms). */
  private pacing = { startedAt: 0, waitedMs: 0 }

  constructor(
    private readonly registry: SessionRegistry,
    /** The stored fleet: what the hub holds is read here, never from a replica's memory. */
    private readonly fleet: ReconcileReads,
    private readonly rest: EmqxRestClient,
    private readonly source: EmqxSource,
    private readonly metrics: HubMetrics,
    private readonly log: Logger,
    options: ReconcilerOptions = {}
  ) {
    this.pageSize = options.pageSize ?? READ_PAGE
    this.liveFirst = options.liveFirst ?? (() => Promise.resolve())
    this.caughtUp = options.caughtUp ?? (() => Promise.resolve(true))
  }

  /**
   * Between two chunks of a run: a turn of the event loop (I/O waiting on the main thread runs —
   * a read that answers from memory would otherwise never let it), then the live events that
   * came meanwhile are stored before the run goes on.
   */
  private async pause(): Promise<void> {
    await nextTurn()
    this.sliceStartedAt = performance.now()
    const pacing = this.pacing
    const now = Date.now()
    if (pacing.waitedMs > (now - pacing.startedAt) * MOST_WAITING) return
    await this.liveFirst(LIVE_BEHIND_MS)
    pacing.waitedMs += Date.now() - now
  }

  /** Whether the current slice has taken SLICE_MS of the main thread: then the run pauses. */
  private sliceOver(): boolean {
    return performance.now() - this.sliceStartedAt >= SLICE_MS
  }

  /** Runs a reconcile; a call while one runs waits for that one instead of starting another. */
  run(trigger: ReconcileTrigger): Promise<ReconcileReport> {
    if (this.stopped) return Promise.resolve({ ...emptyReport(trigger), error: 'the hub is stopping' })
    this.running ??= this.runOnce(trigger).finally(() => (this.running = undefined))
    return this.running
  }

  /**
   * Checks one client with EMQX a moment from now (CHECK_DELAY_MS, so hook calls still on their
   * way from other nodes arrive first): for a takeover only arrival ordered. Several asks for
   * one client before it runs make one check. A failed check changes nothing; the next full
   * reconcile covers the client anyway.
   */
  checkSoon(clientId: string): void {
    if (this.stopped || this.checksDue.has(clientId)) return
    const timer = setTimeout(() => {
      this.checksDue.delete(clientId)
      const report = emptyReport('check')
      const check = this.confirm(clientId, Date.now(), report)
        .then(() => this.count(report))
        .catch((error: Error) => this.log.warn({ clientId, err: error.message }, 'checking a takeover with EMQX failed'))
        .finally(() => this.checksRunning.delete(check))
      this.checksRunning.add(check)
    }, CHECK_DELAY_MS)
    timer.unref()
    this.checksDue.set(clientId, timer)
  }

  /** No new runs or checks; resolves when those under way are done. */
  async stop(): Promise<void> {
    this.stopped = true
    for (const timer of this.checksDue.values()) clearTimeout(timer)
    this.checksDue.clear()
    await Promise.allSettled([this.running, ...this.checksRunning])
  }

  private async runOnce(trigger: ReconcileTrigger): Promise<ReconcileReport> {
    const report = emptyReport(trigger)
    const pagesBefore = this.rest.pagesRead
    try {
      await this.reconcile(report)
    } catch (error) {
      report.error = (error as Error).message
    }
    report.pages = this.rest.pagesRead - pagesBefore
    report.durationMs = Date.now() - report.startedAt
    this.last = report
    this.metrics.reconcileRuns.inc({ trigger, outcome: report.error === null ? 'ok' : 'failed' })
    this.metrics.reconcileSeconds.set(report.durationMs / 1000)
    this.count(report)
    if (report.error === null) this.log.info(report, 'reconciled with EMQX')
    else this.log.error(report, 'reconcile with EMQX failed')
    return report
  }

  /** A run's or a check's changes, into the metrics (a check that changed something is logged too). */
  private count(report: ReconcileReport): void {
    const changes = {
      ghost_ended: report.ghostsEnded + report.offlineEnded,
      session_added: report.sessionsAdded,
      session_corrected: report.sessionsCorrected,
      topic_added: report.topicsAdded,
      topic_removed: report.topicsRemoved
    }
    for (const [change, n] of Object.entries(changes)) if (n > 0) this.metrics.reconcileChanges.inc({ change }, n)
    if (report.trigger === 'check' && Object.values(changes).some((n) => n > 0)) this.log.info(changes, 'a takeover checked with EMQX was corrected')
  }

  /**
   * The run, streamed so that its memory does not grow with what EMQX lists beyond one compact
   * entry per listed client: EMQX's subscriptions first (topic sets, encoded), then its clients a
   * page at a time, each page compared with the store and fixed before the next is read, then
   * the ghost walk. The listing's order among themselves is safe: a client that changed after
   * the run began is left alone whichever listing saw it first.
   */
  private async reconcile(report: ReconcileReport): Promise<void> {
    const since = report.startedAt
    this.pacing = { startedAt: since, waitedMs: 0 }
    // every listed client, its topics and whether listed connected (the ghost walk asks EMQX
    // about one listed offline)
    const listed = new ListedClients()
    for await (const page of this.rest.subscriptions()) {
      await this.pause()
      for (const s of page) listed.addTopic(s.clientId, s.topic, s.qos)
      report.brokerSubscriptions += page.length
    }
    const fixes = new FixPool(FIXES_IN_FLIGHT, (error) => this.log.warn({ err: error.message }, 'a reconcile fix was not applied'))
    // a read that fails ends the run, once the fixes under way are done (none outlives it)
    try {
      let pending: EmqxListedClient[] = []
      for await (const page of this.rest.clients()) {
        await this.pause()
        for (const c of page) {
          listed.list(c.client.clientId, c.connected)
          if (c.connected) pending.push(c)
        }
        while (pending.length >= this.pageSize) {
          await this.comparePage(pending.splice(0, this.pageSize), listed, since, report, fixes)
        }
      }
      if (pending.length > 0) await this.comparePage(pending, listed, since, report, fixes)
      pending = []
      report.brokerClients = listed.clients
      await this.walkStored(listed, since, report, fixes)
    } finally {
      await fixes.drained()
    }
  }

  /** Listed connected clients against their stored sessions, in one read: only those that differ are fixed. */
  private async comparePage(page: readonly EmqxListedClient[], listedClients: ListedClients, since: number, report: ReconcileReport, fixes: FixPool): Promise<void> {
    await this.pause()
    const stored = await this.fleet.sessionsOf(page.map((c) => c.client.clientId))
    // another replica's change that this read shows counts for changedSince once applied here
    const logApplied = await this.caughtUp(CATCH_UP_MS)
    let behind = 0
    for (let i = 0; i < page.length; i++) {
      // a read answered from memory resolves at once: without these pauses, comparing 500,000
      // clients would hold off every hook call until it is done
      if (this.sliceOver()) await this.pause()
      const listed = page[i]!
      const id = listed.client.clientId
      const brokerTopics = listedClients.topicsOf(id)
      listedClients.compared(id)
      const held = stored.get(id)
      if (this.matches(held, listed, brokerTopics)) {
        // nothing to fix; counted as the fix's own check would have counted it
        if (this.registry.changedSince(id, since)) report.skippedChanged++
        continue
      }
      if (!logApplied) {
        behind++
        continue
      }
      await fixes.add(() => this.bringTo(id, listed, brokerTopics, false, since, report, held))
    }
    if (behind > 0) this.leftBehind(behind, report)
  }

  /** Clients that differ, left alone: this replica had not applied the change log up to what the store showed of them. */
  private leftBehind(clients: number, report: ReconcileReport): void {
    report.skippedBehind += clients
    this.log.warn({ clients, waitedMs: CATCH_UP_MS }, 'clients that differ from EMQX left for the next reconcile: the change log was not applied up to what the store showed of them in time')
  }

  /**
   * Stored sessions EMQX does not list as connected, by a keyset walk of the store: connected
   * ones are ghosts (a disconnect the hub missed — or a client a shifting listing skipped; EMQX's
   * answer about it decides); with EMQX 5, which lists the persistent sessions it keeps offline,
   * an offline one it does not list at all is gone.
   */
  private async walkStored(listed: ListedClients, since: number, report: ReconcileReport, fixes: FixPool): Promise<void> {
    const walkOffline = this.rest.version === 5
    for (let after: string | undefined; ; ) {
      // ids and states only: the few sessions EMQX disagrees about are read whole by their fix
      await this.pause()
      const page = await this.fleet.sessionStates(!walkOffline, after, this.pageSize)
      for (let i = 0; i < page.states.length; i++) {
        // hook calls are answered between chunks, however fast the reads answer
        if (this.sliceOver()) await this.pause()
        const session = page.states[i]!
        const id = session.id
        const listedAs = listed.connected(id)
        if (session.connected && listedAs !== true) {
          await fixes.add(() => this.confirm(id, since, report))
        } else if (!session.connected && walkOffline && listedAs === undefined) {
          await fixes.add(() => this.discardGone(id, since, report))
        }
      }
      const last = page.states.at(-1)
      if (!page.more || last === undefined) return
      after = last.id
    }
  }

  /** Ends an offline session EMQX 5 does not list, once EMQX says again it does not hold it. */
  private async discardGone(clientId: string, since: number, report: ReconcileReport): Promise<void> {
    if ((await this.rest.client(clientId)) !== null) return
    // read after EMQX was asked, as a page is after its listing
    const stored = await this.fleet.session(clientId)
    if (stored === undefined) return
    if (!(await this.caughtUp(CATCH_UP_MS))) return this.leftBehind(1, report)
    if (await this.registry.discard(clientId, { unlessChangedSince: since, onlyIf: (offline) => sameSession(offline, stored) })) report.offlineEnded++
  }

  /**
   * Whether the stored session already is what EMQX lists for this client, so that fixing it
   * would change nothing: the same live connection (connected, node, peer, EMQX's connect time),
   * which the listing's connect would find repeated — the same clean start and expiry — and the
   * same topics with the same QoS. Decided by the rules the fix itself applies (the source's
   * listed connect, the pure transition), so a skip never hides a change.
   */
  private matches(stored: Session | undefined, listed: EmqxListedClient, brokerTopics: ReadonlyMap<string, QoS>): boolean {
    if (!stored?.connected || !isLiveConnection(stored, listed.client)) return false
    if (stored.topics.length !== brokerTopics.size || stored.topics.some((t) => brokerTopics.get(t.topic) !== t.qos)) return false
    let event: LifecycleEvent | null
    try {
      event = this.source.listedConnect(listed.client)(stored, undefined)
    } catch {
      return false // a listing the source refuses: the fix reports it
    }
    // another incarnation: a reconnect from the same peer (EMQX stamped another connect time)
    if (event === null || event.kind !== 'connected' || event.incarnation !== stored.incarnation) return false
    return transition(stored, event).outcome === 'stale'
  }

  /**
   * Asks EMQX about one client now and brings its session there (a suspected ghost, or a
   * takeover whose order only arrival told). Changes nothing when EMQX cannot be asked.
   */
  private async confirm(clientId: string, since: number, report: ReconcileReport): Promise<void> {
    const listed = await this.rest.client(clientId)
    const brokerTopics = listed?.connected ? new Map((await this.rest.subscriptionsOf(clientId)).map((s) => [s.topic, s.qos])) : new Map<string, QoS>()
    // read after EMQX was asked, as a page is after its listing
    const stored = await this.fleet.session(clientId)
    if (!(await this.caughtUp(CATCH_UP_MS))) return this.leftBehind(1, report)
    await this.bringTo(clientId, listed, brokerTopics, true, since, report, stored)
  }

  /**
   * Brings one client's session to what EMQX holds: `listed` (null or offline: no connection)
   * and its topics. `fresh`: the topics were read for this client alone just now, so a topic
   * the hub holds and they lack is gone (a page of the full listing may have shifted instead).
   * `held`: the session as stored when the run read it, before any fix: every fix is decided on
   * it, or on what this run's own fix before made of it, and on no other.
   */
  private async bringTo(
    clientId: string,
    listed: EmqxListedClient | null,
    brokerTopics: ReadonlyMap<string, QoS>,
    fresh: boolean,
    since: number,
    report: ReconcileReport,
    held: Session | undefined
  ): Promise<void> {
    const unlessChanged = this.unlessChanged(clientId, since, report, listed ? this.source.deviceOf(listed.client) : undefined)
    if (!listed?.connected) {
      if (!held?.connected) return
      const result = await unlessChanged(held, (current) =>
        current?.connected ? { kind: 'disconnected', clientId, incarnation: current.incarnation, at: Date.now(), reason: 'socket_error' } : null
      )
      if (result !== CHANGED && result.applied) report.ghostsEnded++
      return
    }
    const wasLive = held !== undefined && isLiveConnection(held, listed.client)
    // a new connection holds EMQX's topics from its connect on, in the connect's own commit: a
    // push read between two commits would find it subscribed to nothing
    const listedTopics = [...brokerTopics].map(([topic, qos]) => ({ topic, qos }))
    const connect = this.source.listedConnect(listed.client, listedTopics)
    let topicsWithConnect = 0
    const result = await unlessChanged(held, (current, lastEnded) => {
      const event = connect(current, lastEnded)
      topicsWithConnect = event?.subscriptions !== undefined && !resumesSession(current, event) ? event.subscriptions.length : 0
      return event
    })
    if (result === CHANGED) return
    let session = held
    if (result.applied) {
      if (wasLive) report.sessionsCorrected++
      else report.sessionsAdded++
      report.topicsAdded += topicsWithConnect
      // read again for its topics (a new connection's are EMQX's, a resumed one's kept): as
      // this run's connect left it, or changed since by someone else
      session = await this.fleet.session(clientId)
      if (!sameSession(session, result.after ?? undefined)) {
        report.skippedChanged++
        return
      }
    } else if (!wasLive) {
      return // not connected as listed: its topics are not ours to fix
    }
    await this.fixTopics(clientId, session, brokerTopics, fresh, report, unlessChanged, held)
  }

  /** `device`: the client's, read in each fix's decision (a subscribe's entities carry its owner). */
  private unlessChanged(clientId: string, since: number, report: ReconcileReport, device: string | undefined): UnlessChanged {
    return async (compared, fix) => {
      let changed = false
      const result = await this.registry.applyFor(
        clientId,
        (current, lastEnded, lastEndedAt) => {
          // changed here (or, as the log told, elsewhere) since the run began — or ended since,
          // as stored, which another replica may have done a moment ago — or, as stored, no
          // longer the session compared: changed by anyone since it was read, however lately
          changed = this.registry.changedSince(clientId, since) || (lastEndedAt !== undefined && lastEndedAt >= since) || !sameSession(current, compared)
          return changed ? null : fix(current, lastEnded)
        },
        { reconciling: true, device }
      )
      if (!changed) return result
      report.skippedChanged++
      return CHANGED
    }
  }

  /** `session`: as stored (as `held`, or as this run's connect left it). */
  private async fixTopics(
    clientId: string,
    session: Session | undefined,
    brokerTopics: ReadonlyMap<string, QoS>,
    fresh: boolean,
    report: ReconcileReport,
    unlessChanged: UnlessChanged,
    held: SessionRecord | undefined
  ): Promise<void> {
    if (!session?.connected) return
    // a topic is also re-put when this run changed the session's clean start in place: a
    // persistent session's topics are stored as persistent, a clean one's not (see
    // session-mutations.ts); a new connection's topics were cleared or, resumed, stay persistent
    const cleanStartCorrected = held !== undefined && held.incarnation === session.incarnation && held.cleanStart !== session.cleanStart
    const holds = new Map(session.topics.map((t) => [t.topic, t.qos]))
    const missing = [...brokerTopics]
      .filter(([topic, qos]) => holds.get(topic) !== qos || cleanStartCorrected)
      .map(([topic, qos]) => ({ topic, qos }))
    let extra = [...holds.keys()].filter((topic) => !brokerTopics.has(topic))
    if (extra.length > 0 && !fresh) {
      const now = new Set((await this.rest.subscriptionsOf(clientId)).map((s) => s.topic))
      extra = extra.filter((topic) => !now.has(topic))
    }
    let compared: SessionRecord = session
    if (missing.length > 0) {
      const result = await unlessChanged(compared, (current) =>
        current?.connected ? { kind: 'subscribed', clientId, incarnation: current.incarnation, at: Date.now(), subscriptions: missing } : null
      )
      if (result === CHANGED) return
      if (result.applied) {
        report.topicsAdded += missing.length
        // the removal below is decided on the session this subscribe left
        if (result.after) compared = result.after
      }
    }
    if (extra.length > 0) {
      const result = await unlessChanged(compared, (current) =>
        current?.connected ? { kind: 'unsubscribed', clientId, incarnation: current.incarnation, at: Date.now(), topics: extra } : null
      )
      if (result !== CHANGED && result.applied) report.topicsRemoved += extra.length
    }
  }
}

/** Whether two reads of a client's session show the same one: none, or the same connection after as many events. */
function sameSession(a: SessionRecord | undefined, b: SessionRecord | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.incarnation === b.incarnation && a.version === b.version
}

/**
 * Runs fixes `size` at a time, in the order added; `add` waits while all are busy, so a run
 * holds a bounded number of fixes however many clients differ. A fix that fails is reported
 * and the others go on.
 */
class FixPool {
  private readonly running = new Set<Promise<void>>()

  constructor(
    private readonly size: number,
    private readonly failed: (error: Error) => void
  ) {}

  async add(fix: () => Promise<void>): Promise<void> {
    while (this.running.size >= this.size) await Promise.race(this.running)
    const run: Promise<void> = fix()
      .catch((error: Error) => this.failed(error))
      .finally(() => this.running.delete(run))
    this.running.add(run)
  }

  async drained(): Promise<void> {
    while (this.running.size > 0) await Promise.race(this.running)
  }
}

function emptyReport(trigger: ReconcileTrigger | 'check'): ReconcileReport {
  return {
    trigger,
    startedAt: Date.now(),
    durationMs: 0,
    pages: 0,
    brokerClients: 0,
    brokerSubscriptions: 0,
    ghostsEnded: 0,
    offlineEnded: 0,
    sessionsAdded: 0,
    sessionsCorrected: 0,
    topicsAdded: 0,
    topicsRemoved: 0,
    skippedChanged: 0,
    skippedBehind: 0,
    error: null
  }
}

/**
 * What EMQX lists, by client, held compactly for the length of a run: one string per client, a
 * state character (listed connected, listed offline, or so far only subscribed) then its topics
 * (`<qos><topic>` entries joined by NUL, which no MQTT topic may contain). One map, not a map of
 * topics and another of listed clients: at 1,000,000 listed clients each id is held once (the
 * subscription listing's string; the client listing's are let go with their page), and a
 * connected client's topics are let go once it is compared.
 */
class ListedClients {
  private readonly byClient = new Map<string, string>()
  /** Clients the client listing named (not those only subscribed). */
  clients = 0

  addTopic(clientId: string, topic: string, qos: QoS): void {
    const held = this.byClient.get(clientId)
    const entry = `${qos}${topic}`
    if (held === undefined) {
      this.byClient.set(clientId, SUBSCRIBED + entry)
      return
    }
    if (held.length === 1) {
      this.byClient.set(clientId, held + entry)
      return
    }
    // listed twice (pages that shifted): the later row's QoS counts
    const topics = this.topicsOf(clientId) as Map<string, QoS>
    topics.set(topic, qos)
    this.byClient.set(clientId, held[0]! + [...topics].map(([t, q]) => `${q}${t}`).join(SEPARATOR))
  }

  /** The client listing's row of a client (listed twice — pages that shifted — its later row counts). */
  list(clientId: string, connected: boolean): void {
    const held = this.byClient.get(clientId)
    if (held === undefined || held[0] === SUBSCRIBED) this.clients++
    this.byClient.set(clientId, (connected ? CONNECTED : OFFLINE) + (held?.slice(1) ?? ''))
  }

  /** True when listed connected, false when listed offline, undefined when the client listing did not name it. */
  connected(clientId: string): boolean | undefined {
    const state = this.byClient.get(clientId)?.[0]
    return state === CONNECTED ? true : state === OFFLINE ? false : undefined
  }

  /** The client's listed topics and their QoS (none: an empty map). */
  topicsOf(clientId: string): ReadonlyMap<string, QoS> {
    const held = this.byClient.get(clientId)
    if (held === undefined || held.length === 1) return NO_TOPICS
    const topics = new Map<string, QoS>()
    for (const entry of held.slice(1).split(SEPARATOR)) topics.set(entry.slice(1), Number(entry[0]) as QoS)
    return topics
  }

  /**
   * Lets a compared client's topics go (its fix, if any, holds its own copy). A client listed
   * twice is compared again without them: its fix then asks EMQX for its topics before removing any.
   */
  compared(clientId: string): void {
    const held = this.byClient.get(clientId)
    if (held !== undefined && held.length > 1) this.byClient.set(clientId, held[0]!)
  }
}

const CONNECTED = 'c'
const OFFLINE = 'o'
const SUBSCRIBED = 's'
const SEPARATOR = '\u0000'
