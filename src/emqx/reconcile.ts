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
 * queue, so no event can slip between the check and the fix. The fixes go through the
 * registry like any event — grouped into the same durable batches — a bounded number at a
 * time, so the event path keeps being answered while 100,000 clients are reconciled.
 */
import type { Logger } from 'pino'
import type { QoS, SessionRecord } from '../domain/session.js'
import type { EmqxListedClient, EmqxRestClient } from './emqx-rest.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { ApplyResult, SessionRegistry } from '../registry/registry.js'
import type { LifecycleEvent } from '../domain/lifecycle-event.js'
import { isLiveConnection } from './emqx-client.js'
import type { EmqxSource } from './emqx-source.js'

export type ReconcileTrigger = 'start' | 'provider_loaded' | 'interval' | 'api'

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
  error: string | null
}

/** Applies the event `fix` makes unless the client's session changed since the run began. */
type UnlessChanged = (clientId: string, fix: (current: SessionRecord | undefined, lastEnded: string | undefined) => LifecycleEvent | null) => Promise<ApplyResult>

/** Fixes applied at a time: enough to fill group-commit batches, few enough to leave room for live events. */
const FIXES_IN_FLIGHT = 256

/** How long after an unproven takeover its client is checked with EMQX: hook calls still under way from other nodes arrive first. */
const CHECK_DELAY_MS = 1000

export class Reconciler {
  private running: Promise<ReconcileReport> | undefined
  private readonly checksDue = new Map<string, NodeJS.Timeout>()
  private readonly checksRunning = new Set<Promise<void>>()
  private stopped = false
  last: ReconcileReport | null = null

  constructor(
    private readonly registry: SessionRegistry,
    private readonly rest: EmqxRestClient,
    private readonly source: EmqxSource,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {}

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

  private async reconcile(report: ReconcileReport): Promise<void> {
    const since = report.startedAt
    const clients = new Map<string, EmqxListedClient>()
    for await (const page of this.rest.clients()) for (const c of page) clients.set(c.client.clientId, c)
    const topics = new Map<string, Map<string, QoS>>()
    for await (const page of this.rest.subscriptions()) {
      for (const s of page) {
        let held = topics.get(s.clientId)
        if (!held) topics.set(s.clientId, (held = new Map<string, QoS>()))
        held.set(s.topic, s.qos)
        report.brokerSubscriptions++
      }
    }
    report.brokerClients = clients.size
    const fixes: (() => Promise<void>)[] = []

    for (const session of [...this.registry.records()]) {
      const listed = clients.get(session.clientId)
      if (session.connected && !listed?.connected) {
        // not listed as connected: ended while the hub was not told — or skipped by a listing
        // whose pages shifted as other clients left; EMQX's answer about this client decides
        fixes.push(() => this.confirm(session.clientId, since, report))
      } else if (!session.connected && listed === undefined && this.rest.version === 5) {
        // EMQX 5 lists the persistent sessions it keeps offline: one it does not list is gone
        fixes.push(async () => {
          if ((await this.rest.client(session.clientId)) !== null) return
          if (await this.registry.discard(session.clientId, { unlessChangedSince: since })) report.offlineEnded++
        })
      }
    }
    for (const listed of clients.values()) {
      if (!listed.connected) continue
      fixes.push(() => this.bringTo(listed.client.clientId, listed, topics.get(listed.client.clientId) ?? new Map<string, QoS>(), false, since, report))
    }

    let next = 0
    const worker = async () => {
      while (next < fixes.length) {
        const fix = fixes[next++]!
        await fix().catch((error: Error) => this.log.warn({ err: error.message }, 'a reconcile fix was not applied'))
      }
    }
    await Promise.all(Array.from({ length: Math.min(FIXES_IN_FLIGHT, fixes.length) }, worker))
  }

  /**
   * Asks EMQX about one client now and brings its session there (a suspected ghost, or a
   * takeover whose order only arrival told). Changes nothing when EMQX cannot be asked.
   */
  private async confirm(clientId: string, since: number, report: ReconcileReport): Promise<void> {
    const listed = await this.rest.client(clientId)
    const brokerTopics = listed?.connected ? new Map((await this.rest.subscriptionsOf(clientId)).map((s) => [s.topic, s.qos])) : new Map<string, QoS>()
    await this.bringTo(clientId, listed, brokerTopics, true, since, report)
  }

  /**
   * Brings one client's session to what EMQX holds: `listed` (null or offline: no connection)
   * and its topics. `fresh`: the topics were read for this client alone just now, so a topic
   * the hub holds and they lack is gone (a page of the full listing may have shifted instead).
   */
  private async bringTo(
    clientId: string,
    listed: EmqxListedClient | null,
    brokerTopics: Map<string, QoS>,
    fresh: boolean,
    since: number,
    report: ReconcileReport
  ): Promise<void> {
    const unlessChanged = this.unlessChanged(since, report)
    if (!listed?.connected) {
      const held = this.registry.record(clientId)
      if (!held?.connected) return
      const result = await unlessChanged(clientId, (current) =>
        current?.connected && current.incarnation === held.incarnation
          ? { kind: 'disconnected', clientId, incarnation: current.incarnation, at: Date.now(), reason: 'socket_error' }
          : null
      )
      if (result.applied) report.ghostsEnded++
      return
    }
    const before = this.registry.record(clientId)
    const wasLive = before !== undefined && isLiveConnection(before, listed.client)
    const result = await unlessChanged(clientId, this.source.listedConnect(listed.client))
    if (result.applied) {
      if (wasLive) report.sessionsCorrected++
      else report.sessionsAdded++
    } else if (!wasLive) {
      return // changed meanwhile (left alone) or not connected as listed: its topics are not ours to fix
    }
    await this.fixTopics(clientId, brokerTopics, fresh, report, unlessChanged)
  }

  private unlessChanged(since: number, report: ReconcileReport): UnlessChanged {
    return (clientId, fix) =>
      this.registry.applyFor(
        clientId,
        (current, lastEnded, lastEndedAt) => {
          // changed here (or, as the log told, elsewhere) since the run began — or ended since,
          // as stored, which another replica may have done a moment ago
          if (this.registry.changedSince(clientId, since) || (lastEndedAt !== undefined && lastEndedAt >= since)) {
            report.skippedChanged++
            return null
          }
          return fix(current, lastEnded)
        },
        { reconciling: true }
      )
  }

  private async fixTopics(
    clientId: string,
    brokerTopics: Map<string, QoS>,
    fresh: boolean,
    report: ReconcileReport,
    unlessChanged: UnlessChanged
  ): Promise<void> {
    const session = this.registry.record(clientId)
    if (!session?.connected) return
    // a topic is also re-put when the session's clean start changed: persistent topics are stored
    const persistent = new Set(this.registry.topics.persistentTopicsOf(clientId).map((t) => t.topic))
    const held = new Map(this.registry.topics.topicsOf(clientId).map((t) => [t.topic, t.qos]))
    const missing = [...brokerTopics]
      .filter(([topic, qos]) => held.get(topic) !== qos || persistent.has(topic) === session.cleanStart)
      .map(([topic, qos]) => ({ topic, qos }))
    let extra = [...held.keys()].filter((topic) => !brokerTopics.has(topic))
    if (extra.length > 0 && !fresh) {
      const now = new Set((await this.rest.subscriptionsOf(clientId)).map((s) => s.topic))
      extra = extra.filter((topic) => !now.has(topic))
    }
    if (missing.length > 0) {
      const result = await unlessChanged(clientId, (current) =>
        current?.connected ? { kind: 'subscribed', clientId, incarnation: current.incarnation, at: Date.now(), subscriptions: missing } : null
      )
      if (result.applied) report.topicsAdded += missing.length
    }
    if (extra.length > 0) {
      const result = await unlessChanged(clientId, (current) =>
        current?.connected ? { kind: 'unsubscribed', clientId, incarnation: current.incarnation, at: Date.now(), topics: extra } : null
      )
      if (result.applied) report.topicsRemoved += extra.length
    }
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
    error: null
  }
}
