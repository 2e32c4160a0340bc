/**
 * What carries the devices' connections, seen from the hub: our own embedded Aedes broker, or
 * an EMQX cluster in front of which the hub runs (docs/ARCHITECTURE.md, "two carriers"). The hub's core
 * — store, registry, devices, properties, API — is the same either way; a carrier feeds it
 * lifecycle events, publishes its pushes, and brings its view up to date at start.
 */
import type { AddressInfo } from 'node:net'
import type { FastifyPluginAsync } from 'fastify'
import type { Logger } from 'pino'
import type { Readiness } from '../observability/readiness.js'
import type { HubConfig } from '../config.js'
import type { Lease } from '../replicas/lease.js'
import type { ReplicaView } from '../replicas/replica-keeper.js'
import type { BrokerPublisher } from '../devices/dispatcher.js'
import type { LatePushes } from '../devices/late-pushes.js'
import type { Upstream } from '../devices/upstream.js'
import type { AdmissionPolicy } from '../admission/admission-policy.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { DeviceDirectory } from '../registry/device-directory.js'
import type { SessionRegistry, StepDown } from '../registry/registry.js'
import type { FleetReads } from '../store/fleet-reads.js'
import type { Snapshot, Store } from '../store/store.js'
import type { TlsCredentials } from '../tls/tls-credentials.js'

/** The hub's core, which a carrier is built on. */
export interface HubCore {
  config: HubConfig
  store: Store
  registry: SessionRegistry
  /** Reads over the whole fleet: queries where the store is shared, the caches where not. */
  fleet: FleetReads
  devices: DeviceDirectory
  upstream: Upstream
  /** Who may log in, and as what: one policy for every transport. */
  admission: AdmissionPolicy
  metrics: HubMetrics
  log: Logger
  /** The certificate of TLS listeners; undefined when none is configured. */
  tls?: TlsCredentials
  /** A lease on work that one replica of the hub at a time runs (replicas/lease.ts). */
  lease: (name: string) => Lease
  /** The replicas recorded in the store, live or not (replicas/replica-keeper.ts). */
  replicas: (now: number) => Promise<ReplicaView[]>
  /** What a push published late from the journal says, and in whose turn it goes (devices/late-pushes.ts). */
  latePushes: LatePushes
}

export interface CarrierAddresses {
  /** The embedded broker's MQTT listener. */
  mqtt?: AddressInfo
  /** The embedded broker's MQTT over TLS listener, when a certificate is configured. */
  mqtts?: AddressInfo
  /** The embedded CoAP gateway (UDP). */
  coap?: AddressInfo
  /** The ExHook gRPC server EMQX calls. */
  exhook?: AddressInfo
}

/** HTTP routes a carrier adds to the hub's API. */
export interface CarrierRoutes {
  plugin: FastifyPluginAsync
  /** Paths that check credentials of their own rather than the API's Basic auth. */
  ownAuthPaths: readonly string[]
}

/**
 * What a carrier that holds its clients' sessions itself (the embedded broker) knows of each:
 * the EMQX-compatible client listing shows it. None where EMQX holds them.
 */
export interface SessionHolding {
  /** Messages in the client's queue: waiting while its session is offline, or sent and not yet acknowledged. */
  queued(clientId: string): number
  /** The most messages one session's queue keeps (the oldest are dropped beyond it). */
  readonly maxQueued: number
  /** The most topics one session may subscribe to (or observe, over CoAP). */
  readonly maxSubscriptions: number
}

export interface ConnectionCarrier {
  readonly publisher: BrokerPublisher
  /** How the hub's pushes are published, where not as `publisher` publishes (devices/dispatcher.ts). */
  readonly pushPublisher?: BrokerPublisher
  /** Whether the broker refused a push for good (trying it again would be refused again); none: never. */
  readonly pushRefusedForGood?: (error: Error) => boolean
  /** Its clients' queues and limits, where it holds their sessions itself (embedded mode). */
  readonly holding?: SessionHolding
  /** Routes of its own (EMQX: the WebHook receiver and the reconcile); none in embedded mode. */
  readonly routes?: CarrierRoutes
  /**
   * At start, once the registry holds what the store kept and before any listener is open:
   * takes the carrier's own part of the snapshot and brings the registry up to date with what
   * happened while the hub was down (embedded: the previous run's connections are gone).
   */
  recover(snapshot: Snapshot): Promise<void>
  /** Opens the carrier's listeners. */
  listen(): Promise<CarrierAddresses>
  /** Its part of `/readyz`. */
  checks(): Readiness['checks']
  /**
   * Disconnects a connected client; a session the registry lists as connected but the carrier
   * does not hold is ended in the registry (reason `kicked`). False when neither is there.
   */
  kick(clientId: string): Promise<boolean>
  /**
   * Acts on a step-down the registry hands it: the connection a newer connect of its client id
   * took the session from is closed (or forgotten) by whichever transport holds it.
   */
  stepDown(stepDown: StepDown): void
  /**
   * The store answers again after failing: ends what the registry still shows connected but
   * the carrier no longer holds (embedded), or reconciles with the broker at once (EMQX).
   */
  storeReturned(): void
  /** Closes its listeners and disconnects what it carries; resolves once that is recorded. */
  stop(): Promise<void>
}
