/**
 * What every MQTT packet handler shares: the hub's parts it reports to, the per-client state,
 * and the bookkeeping of events in flight (so the broker's stop can wait for them).
 */
import type { Aedes, Client, PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import type { AdmissionPolicy } from '../../admission/admission-policy.js'
import type { HubConfig } from '../../config.js'
import { NO_MOUNTPOINT } from '../../domain/namespace.js'
import type { DisconnectReason } from '../../domain/session.js'
import type { Upstream } from '../../devices/upstream.js'
import type { HubMetrics, RejectReason } from '../../observability/metrics.js'
import type { DeviceDirectory } from '../../registry/device-directory.js'
import type { SessionRegistry } from '../../registry/registry.js'
import type { ClientState, Namespace } from './client-state.js'

export interface MqttDeps {
  registry: SessionRegistry
  devices: DeviceDirectory
  upstream: Upstream
  admission: AdmissionPolicy
  /** Closes whatever connection holds a client id, and discards its session: a device takes its own id back. */
  takeBack: (clientId: string) => Promise<void>
  config: HubConfig
  metrics: HubMetrics
  log: Logger
}

export class MqttContext {
  /** Each client's state, from its CONNECT (preConnect) to its close. */
  readonly clients = new WeakMap<Client, ClientState>()
  /** Each client's namespace, decided as its CONNECT is parsed — before preConnect. */
  readonly namespaces = new WeakMap<Client, Namespace>()
  /**
   * Client publishes Aedes must not route: those refused without closing the connection
   * (EMQX's `acl_deny_action = ignore`), and upstream data the hub routed itself, in the order
   * the device's changes were stored.
   */
  readonly notForAedes = new WeakSet<PublishPacket>()
  /** From now on, connections that close do so because the hub stops. */
  stopping = false
  private broker: Aedes | undefined
  private readonly inFlight = new Set<Promise<unknown>>()

  constructor(readonly deps: MqttDeps) {}

  get aedes(): Aedes {
    if (!this.broker) throw new Error('the MQTT source is not attached to a broker')
    return this.broker
  }

  attach(aedes: Aedes): void {
    this.broker = aedes
  }

  /** The client's mountpoint; none for a client not (yet) known. */
  mountpointOf(client: Client): string {
    return this.clients.get(client)?.namespace.mountpoint ?? NO_MOUNTPOINT
  }

  /** Marks why a live connection is about to end (the API's kick, a takeover, …). */
  endsBecause(client: Client, reason: DisconnectReason): void {
    const state = this.clients.get(client)
    if (state && state.endReason === undefined) state.endReason = reason
  }

  /** Hands a registry write over, remembered until it settles (see idle). */
  track<T>(applying: Promise<T>): Promise<T> {
    this.inFlight.add(applying)
    const forget = () => this.inFlight.delete(applying)
    applying.then(forget, forget)
    return applying
  }

  /** Resolves once every lifecycle event handed to the registry is applied. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight])
  }

  /** Counts and logs a device's input the hub refused. */
  reject(reason: RejectReason, client: Client | null, message: string): void {
    this.deps.metrics.reject(reason)
    this.deps.log.info({ clientId: client?.id, reason, detail: message }, 'input refused')
  }
}

/** A device's topic that is empty once its mountpoint is taken off: `""` mounted is `{deviceId}/`. */
export function isEmptyOnceUnmounted(mountpoint: string, topic: string): boolean {
  return mountpoint !== NO_MOUNTPOINT && topic === mountpoint
}
