/**
 * MQTT presence topics: each event published on `$iothub/events/{type}/{clientId}` (device events,
 * which have no client, on `…/{deviceId}`), its JSON as the payload, QoS 1, not retained.
 *
 * Only superusers read them: a device's topics are mounted under its namespace and `$` topics are
 * never mounted, so a device's SUBSCRIBE to them is refused (0x80, outside its namespace); and no
 * client at all may publish there (topic-rules.ts, reserved topics), so what arrives there is the
 * hub's.
 *
 * Embedded mode: every replica publishes the entries its follower applies, in log order, one
 * after the other — so a client's events reach a subscriber in the order they happened — to its
 * own broker's subscribers. Live only: a subscriber that was away catches up with
 * `GET /v1/events`. EMQX mode (IOTHUB_EVENTS_MQTT=on): one replica at a time publishes through
 * EMQX's REST API, as a leased delivery (leased-delivery.ts, `mqttSink`): at least once, resumed
 * after a restart or by another replica.
 */
import type { Logger } from 'pino'
import type { BrokerPublisher } from '../devices/dispatcher.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { LogEntry } from '../store/change-log.js'
import type { EventType, HubEvent } from './event.js'
import type { EventLog, PreparedEvent } from './event-log.js'
import { DeliveryFailure, type DeliverySink } from './leased-delivery.js'

/** The first level of every event topic: a filter must begin with it to receive one. */
export const EVENT_TOPIC_ROOT = '$iothub'
export const EVENT_TOPIC_PREFIX = `${EVENT_TOPIC_ROOT}/events/`

/**
 * The topic of an event. A client id may hold any character: `/` would split it into levels and
 * `+`, `#` may not stand in a topic name, so those (and `%`, to keep the encoding reversible) are
 * percent-encoded: `%2F`, `%2B`, `%23`, `%25`.
 */
export function eventTopic(event: HubEvent): string {
  const id = 'clientId' in event && event.clientId !== null ? event.clientId : event.deviceId
  return `${EVENT_TOPIC_PREFIX}${event.type}/${id.replace(/[%/+#]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)}`
}

function message(e: PreparedEvent): { topic: string; payload: Buffer; qos: 1; retain: false } {
  return { topic: eventTopic(e.event), payload: Buffer.from(e.json), qos: 1, retain: false }
}

/** EMQX mode's sink: each event published through EMQX's REST API, one after the other. */
export function mqttSink(publisher: BrokerPublisher): DeliverySink {
  return {
    async send(events: readonly PreparedEvent[], signal: AbortSignal): Promise<void> {
      for (const e of events) {
        if (signal.aborted) throw new DeliveryFailure('delivery stopped', 'network')
        try {
          await publisher.publish(message(e))
        } catch (error) {
          const status = (error as { status?: number }).status
          throw new DeliveryFailure(`EMQX did not take the publish to ${eventTopic(e.event)}: ${(error as Error).message}`, status === undefined ? 'network' : 'status')
        }
      }
    }
  }
}

/** Entries held while earlier ones are published; past this many, the rest are read back from the store. */
const MAX_PENDING = 20_000
/** Entries read back from the store at once. */
const PAGE = 500

/** Embedded mode: the entries this replica's follower applies, published to its own broker as they come. */
export class EmbeddedEventPublisher {
  private pending: LogEntry[] = []
  private pumping: Promise<void> | null = null
  /** The last entry published (or passed); entries after it are still to go. */
  private position = 0
  /** The last entry the follower told of. */
  private head = 0
  /** Until the broker listens, nobody could read what is published. */
  private started = false
  private stopped = false

  constructor(
    private readonly log: EventLog,
    private readonly publisher: BrokerPublisher,
    private readonly types: ReadonlySet<EventType>,
    private readonly metrics: HubMetrics,
    private readonly logger: Logger,
    /**
     * Whether any session could receive an event topic (holds a `$iothub/…` filter): until one
     * does, entries pass unmade — rendering every change for nobody cost every lifecycle event.
     */
    private readonly anyoneSubscribed: () => boolean
  ) {}

  /** Publishes from after `position` (the follower's, once the broker listens): what came before is not published. */
  start(position: number): void {
    this.position = Math.max(this.position, position)
    this.head = Math.max(this.head, position)
    this.started = true
  }

  heard(entries: readonly LogEntry[]): void {
    if (!this.started || this.stopped || entries.length === 0) return
    this.head = entries[entries.length - 1]!.seq
    if (this.pumping === null && !this.anyoneSubscribed()) {
      // live only: what nobody could receive now is not published later either
      this.position = this.head
      return
    }
    // fallen behind: the pump reads on from the store where the held ones end
    if (this.pending.length + entries.length > MAX_PENDING) this.pending = []
    else for (const e of entries) this.pending.push(e)
    this.pumping ??= this.pump().finally(() => (this.pumping = null))
  }

  /** Stops publishing; a publish on its way is not waited for (the broker is closing). */
  stop(): void {
    this.stopped = true
    this.pending = []
  }

  private async pump(): Promise<void> {
    while (!this.stopped && this.position < this.head) {
      let batch = this.pending
      this.pending = []
      try {
        if (batch.length === 0 || batch[0]!.seq > this.position + 1) batch = await this.log.readEntries(this.position, PAGE)
        if (batch.length === 0) throw new Error('the change log holds none of them')
        await this.publish(await this.log.prepare(batch.filter((entry) => entry.seq > this.position)))
      } catch (error) {
        this.logger.warn({ err: (error as Error).message, after: this.position, head: this.head }, 'events for MQTT could not be made: skipped')
        this.metrics.eventsMqttPublished.inc({ outcome: 'failed' })
        this.position = this.head
        return
      }
      this.position = Math.max(this.position, batch[batch.length - 1]!.seq)
    }
  }

  private async publish(events: readonly PreparedEvent[]): Promise<void> {
    for (const e of events) {
      if (this.stopped) return
      if (!this.types.has(e.event.type)) continue
      try {
        // one after the other: a client's events reach each subscriber in their order
        await this.publisher.publish(message(e))
        this.metrics.eventsMqttPublished.inc({ outcome: 'published' })
      } catch (error) {
        this.metrics.eventsMqttPublished.inc({ outcome: 'failed' })
        this.logger.warn({ err: (error as Error).message, seq: e.event.seq }, 'event not published on MQTT')
      }
    }
  }
}
