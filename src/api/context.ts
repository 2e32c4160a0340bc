/** What the HTTP API needs from the hub; routes get this and nothing else. */
import type { LoginThrottle } from '../admission/login-throttle.js'
import type { CarrierRoutes, SessionHolding } from '../carrier/carrier.js'
import type { HubConfig } from '../config.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { DeviceProperties } from '../devices/device-properties.js'
import type { BrokerPublisher, Dispatcher } from '../devices/dispatcher.js'
import type { DeviceDirectory } from '../registry/device-directory.js'
import type { SessionRegistry } from '../registry/registry.js'
import type { FleetReads } from '../store/fleet-reads.js'
import type { Readiness } from '../observability/readiness.js'
import type { ReplicaView } from '../replicas/replica-keeper.js'
import type { EventStreams } from '../events/event-streams.js'
import type { StatusSources } from './routes/status.js'


export interface ApiContext {
  config: HubConfig
  registry: SessionRegistry
  /** Listings and lookups over the whole fleet (queries where the store is shared). */
  fleet: FleetReads
  devices: DeviceDirectory
  properties: DeviceProperties
  dispatcher: Dispatcher
  /** Publishes as the hub (the EMQX-compatible publish API). */
  broker: BrokerPublisher
  metrics: HubMetrics
  /** Wrong logins by client address (and device id): shared by every way in. */
  loginThrottle: LoginThrottle
  /** Disconnects a connected client, once that is recorded; false when no such client is connected. */
  kick(clientId: string): Promise<boolean>
  /** Asks the store (shared, at most once a second), then tells whether the hub is ready. */
  readiness(): Promise<Readiness>
  /** The replicas that share the store (GET /v1/replicas). */
  replicas(): Promise<ReplicaView[]>
  /** The event streams of GET /v1/events, fed by the change log. */
  events: EventStreams
  /** GET /v1/status's sampler, the shared fleet totals, the store and the last reconcile. */
  status: StatusSources
  /** Routes of the carrier's own (EMQX mode: the WebHook receiver and the reconcile). */
  carrierRoutes?: CarrierRoutes
  /** Sessions' queues and limits, where the hub's own broker holds them (embedded mode). */
  holding?: SessionHolding
}
