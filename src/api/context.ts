/** What the HTTP API needs from the hub; routes get this and nothing else. */
import type { LoginThrottle } from '../admission/login-throttle.js'
import type { HubConfig } from '../config.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { DeviceProperties } from '../devices/device-properties.js'
import type { BrokerPublisher, Dispatcher } from '../devices/dispatcher.js'
import type { DeviceDirectory } from '../registry/device-directory.js'
import type { SessionRegistry } from '../registry/registry.js'
import type { EmqxSource } from '../sources/emqx/emqx-source.js'
import type { Reconciler } from '../sources/emqx/reconcile.js'

export interface Readiness {
  ready: boolean
  checks: Record<string, { ok: boolean; detail?: string }>
}

export interface ApiContext {
  config: HubConfig
  registry: SessionRegistry
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
  /** EMQX mode only: where WebHook calls go. */
  emqx?: EmqxSource
  /** EMQX mode only: the reconcile with EMQX's REST API. */
  reconciler?: Reconciler
}
