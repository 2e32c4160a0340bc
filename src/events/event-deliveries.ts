/**
 * The events the hub sends out on its own, as configured: webhooks out (IOTHUB_EVENTS_WEBHOOK_URL,
 * a leased delivery under `events-webhook`), and MQTT presence topics (IOTHUB_EVENTS_MQTT: the
 * embedded broker's live publisher, or in EMQX mode a leased delivery under `events-mqtt`
 * through EMQX's REST API). Each leased delivery holds the pruning of the change log back at its
 * position, on whichever replica prunes.
 */
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { HubConfig } from '../config.js'
import type { BrokerPublisher } from '../devices/dispatcher.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { ReplicaKeeper } from '../replicas/replica-keeper.js'
import type { LogEntry } from '../store/change-log.js'
import { SoleReplica } from '../store/coordination.js'
import type { Store } from '../store/store.js'
import { filePosition, leaseNotePosition, type DeliveryPosition } from './delivery-position.js'
import type { EventLog } from './event-log.js'
import { LeasedDelivery, type DeliverySink, type LeasedDeliveryOptions } from './leased-delivery.js'
import { EmbeddedEventPublisher, mqttSink } from './mqtt-events.js'
import { webhookSink } from './webhook-sink.js'

export interface EventDeliveries {
  /** Entries the follower applied, in log order. */
  heard(entries: readonly LogEntry[]): void
  start(): void
  stop(): Promise<void>
}

export interface DeliveryParts {
  config: HubConfig
  store: Store
  log: EventLog
  replicas: ReplicaKeeper
  publisher: BrokerPublisher
  metrics: HubMetrics
  logger: Logger
  /** Whether any session holds a filter that can match an event topic (embedded MQTT presence). */
  eventSubscribers: () => boolean
}

export function eventDeliveries(parts: DeliveryParts): EventDeliveries {
  const { config, store, log, replicas, publisher, metrics, logger } = parts
  const leased: LeasedDelivery[] = []
  const lease = (name: string, sink: DeliverySink, options: LeasedDeliveryOptions) => {
    const held = replicas.lease(name)
    // leases of a store with one writer live in its process: the position goes to a file
    const position: DeliveryPosition = store.coordination instanceof SoleReplica ? filePosition(join(config.dataDir, `${name}.position.json`)) : leaseNotePosition(held)
    const delivery = new LeasedDelivery(held, log, () => store.following().applied, position, sink, options, metrics, logger.child({ delivery: name }))
    replicas.holdPruning(() => delivery.pruneFloor)
    leased.push(delivery)
  }
  if (config.eventsWebhookUrl !== '') {
    lease('events-webhook', webhookSink(config.eventsWebhookUrl, config.eventsWebhookSecret, config.eventsWebhookTimeout), {
      sink: 'webhook',
      types: config.eventsWebhookTypes.length > 0 ? new Set(config.eventsWebhookTypes) : undefined,
      batch: config.eventsWebhookBatch,
      backoffMaxMs: config.eventsWebhookBackoffMax
    })
  }
  const live =
    config.eventsMqtt === 'on' && config.broker === 'embedded'
      ? new EmbeddedEventPublisher(log, publisher, new Set(config.eventsMqttTypes), metrics, logger.child({ component: 'mqtt-events' }), parts.eventSubscribers)
      : undefined
  if (config.eventsMqtt === 'on' && config.broker === 'emqx') {
    // EMQX's publish API takes one message a call: small batches keep a failed one's repeat short
    lease('events-mqtt', mqttSink(publisher), { sink: 'mqtt', types: new Set(config.eventsMqttTypes), batch: 50, backoffMaxMs: config.eventsWebhookBackoffMax })
  }
  return {
    heard(entries) {
      live?.heard(entries)
      for (const d of leased) d.wake()
    },
    start() {
      live?.start(store.following().applied)
      for (const d of leased) d.start()
    },
    async stop() {
      live?.stop()
      await Promise.all(leased.map((d) => d.stop()))
    }
  }
}
