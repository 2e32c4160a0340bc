/**
 * Events delivered out of the hub at least once, in log order, by one replica at a time: the
 * holder of a lease (replicas/lease.ts) reads the change log after its delivery position, makes
 * the entries into events, hands them to its sink (a webhook receiver, EMQX's publish API) a
 * batch at a time, and moves the position on once the sink has them. A batch that fails is sent
 * again, the same one, after a wait that doubles up to a cap — never skipped, so a receiver
 * that comes back gets everything, in order. The position is saved (delivery-position.ts) every
 * SAVE_EVERY_MS and whenever the delivery is caught up or stops, so a restart, or another replica
 * taking the lease over from a dead holder, resumes there: what was sent after the last save is
 * sent again (at least once), nothing is lost.
 *
 * Log order is commit order, so a device's events arrive in the order they happened; batches go
 * one after another, never two at once.
 */
import type { Logger } from 'pino'
import type { HubMetrics } from '../observability/metrics.js'
import type { Lease } from '../replicas/lease.js'
import type { DeliveryPosition } from './delivery-position.js'
import type { EventType } from './event.js'
import type { EventLog, PreparedEvent } from './event-log.js'

/** Entries read from the store at once. */
const PAGE = 500
/** Between looks at the log when nothing woke the delivery, ms. */
const IDLE_MS = 1000
/** Between asks for the lease while another replica holds it, ms. */
const LEASE_POLL_MS = 5000
/** The first wait after a failed batch, ms; it doubles with each further failure. */
const BACKOFF_MIN_MS = 500
/** Least time between saves of the position while delivering, ms. */
const SAVE_EVERY_MS = 200

export type FailureReason = 'status' | 'network' | 'timeout'

/** A delivery the sink could not confirm: the batch is sent again. */
export class DeliveryFailure extends Error {
  constructor(
    message: string,
    readonly reason: FailureReason
  ) {
    super(message)
  }
}

export interface DeliverySink {
  /** Sends `events` in order; resolves once the receiver has them all, rejects when it may not have. */
  send(events: readonly PreparedEvent[], signal: AbortSignal): Promise<void>
}

export interface LeasedDeliveryOptions {
  /** The metrics' `sink` label. */
  sink: 'webhook' | 'mqtt'
  /** The types delivered (all when undefined). */
  types: ReadonlySet<EventType> | undefined
  /** Most events handed to the sink at once. */
  batch: number
  /** Longest wait between attempts at one batch, ms. */
  backoffMaxMs: number
}

export class LeasedDelivery {
  /** The last entry delivered, while this replica holds the lease; null when it does not. */
  private position: number | null = null
  /** The last position saved (by this replica, or by the holder as last seen). */
  private savedPosition: number | null
  private savedAt = 0
  /** Commit time of the oldest entry read and not yet delivered; null when caught up. */
  private pendingSince: number | null = null
  private running: Promise<void> | null = null
  private stopped = false
  private wakeUp: (() => void) | null = null
  private inFlight: AbortController | null = null
  private failing = 0

  constructor(
    private readonly lease: Lease,
    private readonly log: EventLog,
    /** The last entry of the change log this replica knows of. */
    private readonly head: () => number,
    private readonly positions: DeliveryPosition,
    private readonly sink: DeliverySink,
    private readonly options: LeasedDeliveryOptions,
    private readonly metrics: HubMetrics,
    private readonly logger: Logger
  ) {
    this.savedPosition = positions.saved()
    const labels = { sink: options.sink }
    // the holder alone tells: the lag is its own, and two replicas would tell two different ones
    metrics.gauge('iothub_events_delivery_lag_entries', 'Change-log entries committed and not yet delivered, by sink (told by the replica delivering)', ['sink'], (set) => {
      if (this.position !== null) set(labels, Math.max(0, this.head() - this.position))
    })
    metrics.gauge('iothub_events_delivery_lag_seconds', 'How long the oldest entry not yet delivered has waited, by sink (0: caught up; told by the replica delivering)', ['sink'], (set) => {
      if (this.position !== null) set(labels, this.pendingSince === null ? 0 : Math.max(0, Date.now() - this.pendingSince) / 1000)
    })
  }

  start(): void {
    this.running ??= this.run()
  }

  /** New entries are in the log: a delivery waiting for them looks at once. */
  wake(): void {
    if (this.position === null) return // not the holder: it asks for the lease on its own time
    this.wakeUp?.()
  }

  /**
   * The lowest entry this delivery may still need: pruning must keep every entry after it. As
   * last known here (a replica not holding the lease learns the holder's each time it asks for
   * it); positions only grow, so an old one holds back more, never less. 0 while none is known.
   */
  get pruneFloor(): number {
    return this.position ?? this.savedPosition ?? 0
  }

  /** Stops delivering (a batch on its way is abandoned, and sent again by whoever runs next), then saves the position. */
  async stop(): Promise<void> {
    this.stopped = true
    this.inFlight?.abort()
    this.wakeUp?.()
    await this.running
    if (this.position !== null && this.position !== this.savedPosition && this.lease.held) {
      await this.save().catch((error: Error) => this.logger.warn({ err: error.message }, 'event delivery position not saved at stop; resumed from the last one saved'))
    }
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      try {
        if (!(await this.lease.hold())) {
          this.position = null
          this.pendingSince = null
          this.savedPosition = maxOf(this.savedPosition, this.positions.saved())
          await this.idle(LEASE_POLL_MS)
          continue
        }
        if (this.position === null) await this.begin()
        await this.deliverPage()
      } catch (error) {
        // the store did not answer (a read, the lease, a save): the same again in a while
        this.logger.warn({ err: (error as Error).message }, 'event delivery could not read or save; trying again')
        await this.idle(IDLE_MS)
      }
    }
  }

  /** This replica just took the lease: it resumes where the last holder saved, or starts from now. */
  private async begin(): Promise<void> {
    const saved = this.positions.saved()
    if (saved === null) {
      this.position = this.head()
      await this.save() // from now on a restart resumes here
      this.logger.info({ sink: this.options.sink, position: this.position }, 'event delivery starts at the head of the change log')
    } else {
      this.position = saved
      this.savedPosition = saved
      this.logger.info({ sink: this.options.sink, position: saved }, 'event delivery resumes')
    }
  }

  private async deliverPage(): Promise<void> {
    const after = this.position!
    const entries = await this.log.readEntries(after, PAGE)
    if (entries.length === 0) {
      this.pendingSince = null
      if (this.position !== this.savedPosition) await this.save()
      await this.idle(IDLE_MS, true)
      return
    }
    const first = entries[0]!
    if (first.seq !== after + 1) {
      // pruning keeps what a delivery needs (pruneFloor), unless no replica delivered for long
      this.metrics.eventsSkipped.inc({ sink: this.options.sink }, first.seq - after - 1)
      this.logger.error({ sink: this.options.sink, after, oldest: first.seq }, 'the change log no longer holds entries not yet delivered: they are skipped')
    }
    this.pendingSince = first.at
    const types = this.options.types
    const events = (await this.log.prepare(entries)).filter((e) => types === undefined || types.has(e.event.type))
    for (let i = 0; i < events.length; i += this.options.batch) {
      const batch = events.slice(i, i + this.options.batch)
      if (!(await this.sendUntilDelivered(batch))) return
      const next = entries.find((e) => e.seq > batch[batch.length - 1]!.event.seq)
      await this.advance(batch[batch.length - 1]!.event.seq, next?.at ?? null)
    }
    const last = entries[entries.length - 1]!
    // entries that made no event (or none of the types delivered) are passed too
    if (last.seq > this.position!) await this.advance(last.seq, null)
  }

  /** Sends one batch until the sink has it: true, or false once this replica stops delivering. */
  private async sendUntilDelivered(batch: readonly PreparedEvent[]): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopped || !this.lease.held) return this.lostLease()
      const controller = new AbortController()
      this.inFlight = controller
      try {
        await this.sink.send(batch, controller.signal)
        this.metrics.eventsDelivered.inc({ sink: this.options.sink }, batch.length)
        if (this.failing > 0) this.logger.info({ sink: this.options.sink, failedAttempts: this.failing }, 'event delivery works again')
        this.failing = 0
        return true
      } catch (error) {
        if (this.stopped) return false
        const reason = error instanceof DeliveryFailure ? error.reason : 'network'
        this.metrics.eventDeliveryFailures.inc({ sink: this.options.sink, reason })
        const wait = backoff(attempt, this.options.backoffMaxMs)
        // the first failure and then one in ten: a receiver down for an hour is not a log flood
        if (this.failing++ % 10 === 0) {
          this.logger.warn({ sink: this.options.sink, err: (error as Error).message, seq: batch[0]!.event.seq, retryInMs: Math.round(wait) }, 'event delivery failed; sent again after a wait')
        }
        await this.idle(wait)
      } finally {
        this.inFlight = null
      }
    }
  }

  private lostLease(): false {
    if (!this.stopped) {
      this.logger.warn({ sink: this.options.sink, position: this.position }, 'event delivery lease lost: another replica delivers from the position last saved')
      this.position = null
    }
    return false
  }

  private async advance(position: number, nextPendingAt: number | null): Promise<void> {
    this.position = position
    this.pendingSince = nextPendingAt
    if (Date.now() - this.savedAt >= SAVE_EVERY_MS) await this.save()
  }

  private async save(): Promise<void> {
    const position = this.position!
    await this.positions.save(position)
    this.savedPosition = position
    this.savedAt = Date.now()
  }

  /** Waits `ms`, less when stopped — or, `wakeable`, when new entries are told of. */
  private idle(ms: number, wakeable = false): Promise<void> {
    if (this.stopped) return Promise.resolve()
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        if (this.wakeUp === wake) this.wakeUp = null
        resolve()
      }
      const timer = setTimeout(done, ms)
      const wake = done
      if (wakeable || this.stopped) this.wakeUp = wake
      else this.wakeUp = () => (this.stopped ? done() : undefined)
    })
  }
}

/** The wait after the `attempt`-th failure in a row: doubling from BACKOFF_MIN_MS to `maxMs`, ±20 % so replicas' retries spread. */
function backoff(attempt: number, maxMs: number): number {
  const base = Math.min(maxMs, BACKOFF_MIN_MS * 2 ** Math.min(attempt, 30))
  return base * (0.8 + 0.4 * Math.random())
}

function maxOf(a: number | null, b: number | null): number | null {
  if (a === null) return b
  if (b === null) return a
  return Math.max(a, b)
}
