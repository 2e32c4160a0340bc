/**
 * Every open `GET /v1/events` stream of this hub, and the live feed they share: the change log's
 * entries as this replica's follower applies them (its own commits and other replicas' alike, in
 * log order), each made into its event once and handed to the consumers at the head. Consumers
 * behind it read the log from the store (event-consumer.ts), so any replica serves any position.
 * A heartbeat comment goes to every stream every `heartbeatMs`.
 */
import type { ServerResponse } from 'node:http'
import type { Logger } from 'pino'
import type { HubMetrics } from '../observability/metrics.js'
import type { LogEntry } from '../store/change-log.js'
import { EventConsumer, type CloseReason, type Feed, type LiveBatch } from './event-consumer.js'
import type { EventFilter } from './event-filter.js'
import type { EventLog } from './event-log.js'
import { encodeFrames } from './sse-frame.js'

/**
 * Live entries held for consumers while earlier ones are made into events; past this many the
 * feed drops them, and its live consumers read them back from the store instead.
 */
const MAX_PENDING = 20_000

export interface EventStreamsOptions {
  heartbeatMs: number
  /** Bytes of events that may wait in one consumer's socket before it is closed as slow. */
  bufferBytes: number
}

export class EventStreams implements Feed {
  private readonly consumers = new Set<EventConsumer>()
  private pending: LogEntry[] = []
  private pumping: Promise<void> | null = null
  private heartbeatTimer: NodeJS.Timeout | undefined
  private stopped = false
  delivered = 0
  constructor(
    readonly log: EventLog,
    private readonly options: EventStreamsOptions,
    private readonly metrics: HubMetrics,
    private readonly logger: Logger
  ) {
    metrics.gauge('iothub_event_consumers', 'Open GET /v1/events streams', [], (set) => set({}, this.consumers.size))
  }

  /** Where the follower starts: entries up to it are in the store, not to come live. */
  start(position: number): void {
    this.delivered = Math.max(this.delivered, position)
    this.heartbeatTimer = setInterval(() => {
      for (const c of this.consumers) c.heartbeat()
    }, this.options.heartbeatMs)
    this.heartbeatTimer.unref()
  }

  /** Entries the follower applied, in log order. */
  heard(entries: readonly LogEntry[]): void {
    if (entries.length === 0) return
    if (this.pumping === null && !this.anyLive()) {
      // nobody at the head: whoever comes reads these from the store
      this.delivered = entries[entries.length - 1]!.seq
      return
    }
    if (this.pending.length + entries.length > MAX_PENDING) {
      this.logger.warn({ dropped: this.pending.length + entries.length }, 'event feed fell behind the change log: its consumers read on from the store')
      this.pending = []
      return
    }
    for (const e of entries) this.pending.push(e)
    this.pumping ??= this.pump().finally(() => (this.pumping = null))
  }

  /**
   * Whether the entries after `after` were pruned: then the oldest entry the log still holds (the
   * one after the head when it holds none), else null.
   */
  async prunedAfter(after: number): Promise<{ oldest: number } | null> {
    const [first] = await this.log.readEntries(after, 1)
    if (first) return first.seq === after + 1 ? null : { oldest: first.seq }
    return after < this.delivered ? { oldest: this.delivered + 1 } : null
  }

  /** Opens a stream on `res` for events after `after` that `filter` takes. */
  open(res: ServerResponse, after: number, filter: EventFilter): EventConsumer {
    const consumer = new EventConsumer(res, this, filter, this.options.bufferBytes, after)
    this.consumers.add(consumer)
    consumer.start()
    return consumer
  }

  gone(consumer: EventConsumer, reason: CloseReason | null): void {
    this.consumers.delete(consumer)
    if (reason !== null) this.metrics.eventConsumersClosed.inc({ reason })
  }

  sent(count = 1): void {
    this.metrics.eventsSent.inc(count)
  }

  /** Closes every stream, telling each where to resume (the hub is stopping). */
  stop(): void {
    this.stopped = true
    clearInterval(this.heartbeatTimer)
    for (const c of [...this.consumers]) c.close('server_shutdown', 'the hub is stopping: resume from another replica, or from this one once it is back')
  }

  private anyLive(): boolean {
    for (const c of this.consumers) if (c.isLive) return true
    return false
  }

  private async pump(): Promise<void> {
    while (this.pending.length > 0 && !this.stopped) {
      const batch = this.pending
      this.pending = []
      const from = batch[0]!.seq
      const through = batch[batch.length - 1]!.seq
      try {
        const events = this.anyLive() ? await this.log.prepare(batch) : []
        let bytes: Buffer | undefined
        const live: LiveBatch = { events, allFrames: () => (bytes ??= encodeFrames(events.map((e) => ({ seq: e.event.seq, json: e.json })))) }
        for (const c of this.consumers) c.deliver(from, through, live)
      } catch (error) {
        // its consumers see the gap in the next batch and read these from the store
        this.logger.warn({ err: (error as Error).message, from, through }, 'events of live entries could not be made')
      }
      this.delivered = through
    }
  }
}
