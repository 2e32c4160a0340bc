/**
 * EMQX mode's carrier: an EMQX cluster carries the connections; the hub hears of them through
 * ExHook (gRPC, IOTHUB_EXHOOK_PORT) or WebHook (POST /v1/hooks/emqx), publishes pushes and
 * kicks through EMQX's REST API, and reconciles with that API — once it listens (the replica is
 * ready meanwhile: see `checks`), when EMQX (re)loads the ExHook provider, and every
 * IOTHUB_RECONCILE_INTERVAL seconds.
 *
 * If EMQX's API cannot be reached (or refuses the credentials), the hub still answers hook
 * calls — they are recorded, and a reconcile never undoes them — but /readyz says not ready,
 * naming the error, and the reconcile is retried with backoff until it succeeds.
 *
 * With several replicas, one at a time reconciles: the holder of the `reconcile` lease. The
 * others check the lease every few seconds (and take it when its holder is gone); a trigger that
 * reaches one of them (EMQX reloading the provider) is passed to the holder as a request. A
 * replica that does not hold the lease reports itself reconciled once the holder has reconciled
 * after it started.
 */
import type { Readiness } from '../observability/readiness.js'
import { EmqxRestClient, publishRefusedForGood } from './emqx-rest.js'
import { EmqxSource } from './emqx-source.js'
import { PushReplay } from './push-replay.js'
import { ExhookServer } from './exhook/exhook-server.js'
import { isReconcileTrigger, Reconciler, type ReconcileReport, type ReconcileTrigger } from './reconcile.js'
import { reconcileRoutes } from './reconcile-route.js'
import { emqxWebhookRoutes, WEBHOOK_PATH } from './webhook-route.js'
import type { Snapshot } from '../store/store.js'
import type { StepDown } from '../registry/registry.js'
import type { CarrierAddresses, CarrierRoutes, ConnectionCarrier, HubCore } from '../carrier/carrier.js'
import { endListedOnly } from '../carrier/listed-only.js'
import type { Lease } from '../replicas/lease.js'

/** The trigger another replica asked the holder to reconcile for (what it would have run itself). */
function requestedTrigger(reason: string | null): ReconcileTrigger {
  return isReconcileTrigger(reason) ? reason : 'provider_loaded'
}

/** The `emqx` check's detail while the first reconcile since this replica started is under way. */
export const RECONCILING = 'serving; the first reconcile with EMQX since start is under way'

/** Longest wait between retries of a failed reconcile, ms. */
const MAX_RETRY_MS = 60_000
/** Between looks at the reconcile lease: how soon a replica takes over from a holder that is gone, ms. */
const LEASE_CHECK_MS = 1000

export class EmqxCarrier implements ConnectionCarrier {
  readonly rest: EmqxRestClient
  readonly source: EmqxSource
  readonly reconciler: Reconciler
  private readonly exhook: ExhookServer
  private timer: NodeJS.Timeout | undefined
  private retryMs = 1000
  private stopped = false
  /** Ready once a reconcile has succeeded (here, or by the lease's holder). */
  private reconciled = false
  private readonly lease: Lease
  /** Publishes the pushes replicas' runs now over stored and did not get EMQX to take (push-replay.ts). */
  private readonly pushReplay: PushReplay
  /** Whether this replica held the lease at its last look: one that has just taken it reconciles at once. */
  private heldBefore = false
  /** When this replica began listening: a reconcile begun after it makes it ready. */
  private listeningSince = Date.now()

  constructor(private readonly core: HubCore) {
    const { config, registry, upstream, metrics, log } = core
    this.rest = new EmqxRestClient({ baseUrl: config.emqxApi, apiKey: config.emqxApiKey, apiSecret: config.emqxApiSecret, version: config.emqxVersion })
    this.source = new EmqxSource(registry, upstream, core.admission, config, metrics, log.child({ component: 'emqx' }))
    const store = core.store
    this.reconciler = new Reconciler(registry, core.fleet, this.rest, this.source, metrics, log.child({ component: 'reconcile' }), {
      // the run waits for live events between its chunks (reconcile.ts)
      ...(store.liveSettled ? { liveFirst: (behindMs: number) => store.liveSettled!(behindMs) } : {}),
      // it fixes nothing another replica changed that this one has not read from the log yet
      ...(store.caughtUp ? { caughtUp: (timeoutMs: number) => store.caughtUp!(timeoutMs) } : {})
    })
    this.source.onUnprovenTakeover = (clientId) => this.reconciler.checkSoon(clientId)
    this.exhook = new ExhookServer(this.source, config, metrics, log.child({ component: 'exhook' }), () => this.reconcileSoon('provider_loaded'))
    this.lease = core.lease('reconcile')
    this.pushReplay = new PushReplay(store, this.rest, core.lease('push-replay'), core.replicas, config.node, core.latePushes, metrics, log.child({ component: 'push-replay' }), {
      withinMs: config.pushTimeout,
      everyMs: config.pushRetryInterval,
      commandExpiryMs: config.commandExpiry * 1000
    })
  }

  get routes(): CarrierRoutes {
    const webhook = emqxWebhookRoutes(this.source, this.core)
    const reconcile = reconcileRoutes(this.reconciler, () => this.lastReport())
    return {
      plugin: async (app) => {
        await app.register(webhook)
        await app.register(reconcile)
      },
      ownAuthPaths: [WEBHOOK_PATH]
    }
  }

  get publisher(): EmqxRestClient {
    return this.rest
  }

  readonly pushRefusedForGood = publishRefusedForGood

  /** The broker kept the connections while the hub was down: nothing ends; the reconcile tells what changed. */
  async recover(_snapshot: Snapshot): Promise<void> {
    await this.core.registry.expireDue(Date.now(), this.core.fleet)
  }

  async listen(): Promise<CarrierAddresses> {
    this.listeningSince = Date.now()
    const exhook = await this.exhook.listen()
    // the first reconcile runs once the hook server answers, so no event is lost meanwhile
    this.reconcileSoon('start')
    this.pushReplay.start()
    return { exhook }
  }

  /**
   * `emqx`: a replica is ready once it serves — the hook server answers and the store is
   * current — while its first reconcile is still under way: at a cold start in front of an EMQX
   * that holds a million clients, that run lists all of them, and a replica held out of its load
   * balancer meanwhile would leave EMQX with no hub to ask about any connect. What stays
   * not ready is a reconcile that failed (EMQX's API refused or unreachable: the hub cannot push
   * or kick either) until one succeeds. The detail says which: `reconciled…` once a run (here, or
   * the lease holder's begun after this replica started) has finished.
   */
  checks(): Readiness['checks'] {
    const last = this.reconciler.last
    const exhook = this.exhook.listening ? { ok: true } : { ok: false, detail: 'ExHook gRPC server is not listening' }
    if (this.reconciled) return { exhook, emqx: { ok: true, detail: 'reconciled with EMQX' } }
    if (!this.lease.held && this.lease.servedSince(this.listeningSince)) return { exhook, emqx: { ok: true, detail: 'reconciled with EMQX (by the replica holding the reconcile lease)' } }
    if (last?.error) return { exhook, emqx: { ok: false, detail: `not reconciled with EMQX yet: ${last.error}` } }
    return { exhook, emqx: { ok: true, detail: RECONCILING } }
  }

  async kick(clientId: string): Promise<boolean> {
    // the cache may not hold it (replicas share the store): as stored, then
    const seen = (await this.core.registry.find(clientId))?.incarnation
    if (await this.rest.kick(clientId)) return true
    return endListedOnly(this.core.registry, clientId, seen, 'kicked')
  }

  /** EMQX closes a connection taken over itself (its connection manager's takeover): nothing to do here. */
  stepDown(_stepDown: StepDown): void {}

  /** Hook events may have been refused while the store was down: EMQX's own list tells. */
  storeReturned(): void {
    this.reconcileSoon('store_returned')
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.exhook.stop()
    // a reconcile under way still writes through the registry: let it finish before the store closes
    await this.reconciler.stop()
    await this.pushReplay.stop()
  }

  /**
   * Runs a reconcile now if this replica holds the lease (else asks the holder to, for a trigger
   * that is news); then schedules the next look: a retry with backoff after a failure, else the
   * lease check, which runs the interval's reconcile when it is due.
   */
  private reconcileSoon(trigger: ReconcileTrigger | 'check'): void {
    if (this.stopped) return
    clearTimeout(this.timer)
    void this.reconcileIfHeld(trigger).then(
      (outcome) => {
        if (this.stopped) return
        if (outcome === 'failed') {
          this.schedule(trigger, this.retryMs)
          this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS)
          return
        }
        if (outcome === 'reconciled') {
          this.reconciled = true
          this.retryMs = 1000
        }
        this.schedule('check', Math.min(LEASE_CHECK_MS, this.intervalMs))
      },
      (error: Error) => {
        this.core.log.warn({ err: error.message }, 'reconcile lease could not be checked; tried again')
        this.schedule(trigger, this.retryMs)
        this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS)
      }
    )
  }

  private async reconcileIfHeld(trigger: ReconcileTrigger | 'check'): Promise<'reconciled' | 'failed' | 'not due' | 'not held'> {
    const held = await this.lease.hold()
    const justTaken = held && !this.heldBefore
    this.heldBefore = held
    if (!held) {
      // news the holder must act on: EMQX reloaded the provider here, this replica started (it
      // is ready once a reconcile begun after its start has finished), the store came back
      if (trigger !== 'check') await this.lease.request(trigger)
      return 'not held'
    }
    const seen = this.lease.seen!
    const requested = seen.requestedAt !== null && (seen.doneAt === null || seen.requestedAt > seen.doneAt)
    const due = seen.doneAt === null || Date.now() - seen.doneAt >= this.intervalMs
    // a holder that has just taken over does not know what its predecessor left undone
    if (trigger === 'check' && !requested && !due && !justTaken) return 'not due'
    const report = await this.reconciler.run(trigger === 'check' ? (requested ? requestedTrigger(seen.requestReason) : 'interval') : trigger)
    if (report.error !== null) return 'failed'
    // when the run began (joining a run under way means an older listing than now)
    await this.lease.done(report.startedAt, report).catch(() => undefined)
    return 'reconciled'
  }

  /** The newest report: this replica's own last run, or the lease holder's, whichever began later. */
  lastReport(): ReconcileReport | undefined {
    const own = this.reconciler.last ?? undefined
    const shared = (this.lease.seen?.note ?? undefined) as ReconcileReport | undefined
    if (!shared) return own
    return own && own.startedAt >= shared.startedAt ? own : shared
  }

  private get intervalMs(): number {
    return this.core.config.reconcileInterval * 1000
  }

  private schedule(trigger: ReconcileTrigger | 'check', ms: number): void {
    clearTimeout(this.timer)
    this.timer = setTimeout(() => this.reconcileSoon(trigger), ms)
    this.timer.unref()
  }
}
