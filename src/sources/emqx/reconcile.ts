/**
 * The seed's "option 2": the broker's REST API is the truth the hub's view is brought back to.
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
import type { QoS, SessionRecord } from '../../domain/session.js'
import type { EmqxListedClient, EmqxRestClient } from '../../brokers/emqx/emqx-rest.js'
import type { HubMetrics } from '../../observability/metrics.js'
import type { ApplyResult, SessionRegistry } from '../../registry/registry.js'
import type { LifecycleEvent } from '../../domain/lifecycle-event.js'
import { isLiveConnection } from './emqx-client.js'
import type { EmqxSource } from './emqx-source.js'

export type ReconcileTrigger = 'start' | 'provider_loaded' | 'interval' | 'api'

export interface ReconcileReport {
  trigger: ReconcileTrigger
  /** Epoch ms. */
  startedAt: number
  durationMs: number
  pages: number
  brokerClients: number
  brokerSubscriptions: number
  ghostsEnded: number
  offlineEnded: number
  sessionsAdded: number
  topicsAdded: number
  topicsRemoved: number
  /** Clients left alone because an event changed them during the run. */
  skippedChanged: number
  error: string | null
}

/** Applies the event `fix` makes unless the client's session changed since the run began. */
type UnlessChanged = (clientId: string, fix: (current: SessionRecord | undefined) => LifecycleEvent | null) => Promise<ApplyResult>

/** Fixes applied at a time: enough to fill group-commit batches, few enough to leave room for live events. */
const FIXES_IN_FLIGHT = 256

export class Reconciler {
  private running: Promise<ReconcileReport> | undefined
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
    this.running ??= this.runOnce(trigger).finally(() => (this.running = undefined))
    return this.running
  }

  private async runOnce(trigger: ReconcileTrigger): Promise<ReconcileReport> {
    const report: ReconcileReport = {
      trigger,
      startedAt: Date.now(),
      durationMs: 0,
      pages: 0,
      brokerClients: 0,
      brokerSubscriptions: 0,
      ghostsEnded: 0,
      offlineEnded: 0,
      sessionsAdded: 0,
      topicsAdded: 0,
      topicsRemoved: 0,
      skippedChanged: 0,
      error: null
    }
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
    this.metrics.reconcileChanges.inc({ change: 'ghost_ended' }, report.ghostsEnded + report.offlineEnded)
    this.metrics.reconcileChanges.inc({ change: 'session_added' }, report.sessionsAdded)
    this.metrics.reconcileChanges.inc({ change: 'topic_added' }, report.topicsAdded)
    this.metrics.reconcileChanges.inc({ change: 'topic_removed' }, report.topicsRemoved)
    this.metrics.reconcileSeconds.set(report.durationMs / 1000)
    if (report.error === null) this.log.info(report, 'reconciled with EMQX')
    else this.log.error(report, 'reconcile with EMQX failed')
    return report
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
    const unlessChanged: UnlessChanged = (clientId, fix) =>
      this.registry.applyFor(
        clientId,
        (current) => {
          if (this.registry.changedSince(clientId, since)) {
            report.skippedChanged++
            return null
          }
          return fix(current)
        },
        { reconciling: true }
      )

    for (const session of [...this.registry.records()]) {
      const listed = clients.get(session.clientId)
      if (session.connected && !listed?.connected) {
        fixes.push(async () => {
          const result = await unlessChanged(session.clientId, (current) =>
            current?.connected && current.incarnation === session.incarnation
              ? { kind: 'disconnected', clientId: session.clientId, incarnation: current.incarnation, at: Date.now(), reason: 'socket_error' }
              : null
          )
          if (result.applied) report.ghostsEnded++
        })
      } else if (!session.connected && listed === undefined && this.rest.version === 5) {
        // EMQX 5 lists the persistent sessions it keeps offline: one it does not list is gone
        fixes.push(async () => {
          if (await this.registry.discard(session.clientId, { unlessChangedSince: since })) report.offlineEnded++
        })
      }
    }

    for (const { client, connected } of clients.values()) {
      if (!connected) continue
      fixes.push(async () => {
        const current = this.registry.record(client.clientId)
        if (!current || !isLiveConnection(current, client)) {
          const result = await unlessChanged(client.clientId, () => this.source.connectedEvent(client))
          if (!result.applied) return
          report.sessionsAdded++
        }
        await this.fixTopics(client.clientId, topics.get(client.clientId) ?? new Map<string, QoS>(), report, unlessChanged)
      })
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

  private async fixTopics(
    clientId: string,
    brokerTopics: Map<string, QoS>,
    report: ReconcileReport,
    unlessChanged: UnlessChanged
  ): Promise<void> {
    const held = new Map(this.registry.topics.topicsOf(clientId).map((t) => [t.topic, t.qos]))
    const missing = [...brokerTopics].filter(([topic, qos]) => held.get(topic) !== qos).map(([topic, qos]) => ({ topic, qos }))
    const extra = [...held.keys()].filter((topic) => !brokerTopics.has(topic))
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
