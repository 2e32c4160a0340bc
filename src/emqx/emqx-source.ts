/**
 * EMQX as a source of lifecycle events: what EMQX's hooks report (through ExHook or WebHook,
 * already turned into EmqxClient facts) becomes session and subscription entities, and the
 * answers EMQX asks for (may this client connect, publish, subscribe?) follow the same rules
 * as the embedded broker's. Every method resolves once its effect is durable, so a transport
 * answers EMQX only then.
 *
 * Which events count (docs/emqx-mode.md):
 * - a connect orders by `connected_at` (or arrival): a late connect of an older connection is stale;
 * - a disconnect, subscribe or unsubscribe counts only when it names the session's live
 *   connection (node and peer address, see emqx-client.ts): a late disconnect of a connection
 *   taken over, possibly from another node, is stale;
 * - a disconnect with reason `takenover` or `discarded` is not the client going offline: the
 *   new connection's connect brings the session up to date, so it changes nothing.
 */
import type { Logger } from 'pino'
import type { HubConfig } from '../config.js'
import { PayloadError } from '../domain/device-properties.js'
import { connectionFacts, type ConnectedEvent, type LifecycleEvent } from '../domain/lifecycle-event.js'
import { deviceMountpoint, NO_MOUNTPOINT, unmountTopic } from '../domain/namespace.js'
import { PROTOCOLS, type Protocol, type SessionRecord, type TopicSubscription } from '../domain/session.js'
import type { Upstream } from '../devices/upstream.js'
import type { HubMetrics, RejectReason } from '../observability/metrics.js'
import type { ApplyResult, SessionRegistry } from '../registry/registry.js'
import { mqttDeviceId, type AdmissionPolicy } from '../admission/admission-policy.js'
import { checkTopic, reservedTopic } from '../admission/topic-rules.js'
import { RecentMarks } from '../collections/recent-marks.js'
import { orderConnect } from './connection-order.js'
import { connectionName, disconnectReasonOf, isConnectionOf, isLiveConnection, REPLACED, type EmqxClient } from './emqx-client.js'

/** How long after a takeover a disconnect that names no peer port is checked with EMQX, ms. */
const TAKEOVER_DOUBT_MS = 10_000

/** A hook message the hub cannot take: the transport answers it as the caller's error. */
export class HookInputError extends Error {
  override name = 'HookInputError'
  constructor(
    message: string,
    /** Already counted in the rejected-inputs metric (by the source, with its precise reason). */
    readonly counted = false
  ) {
    super(message)
  }
}

export type PublishVerdict = 'stored' | 'refused' | 'not_upstream'

export interface AuthenticationVerdict {
  ok: boolean
  superuser: boolean
  /** Why not, for the log. */
  why?: string
}

export class EmqxSource {
  /** Client ids `authenticate` last accepted as superusers (their latest login decides). */
  private readonly superusers = new Set<string>()

  constructor(
    private readonly registry: SessionRegistry,
    private readonly upstream: Upstream,
    private readonly admission: AdmissionPolicy,
    private readonly config: HubConfig,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {}

  /**
   * `client.authenticate`: a device's token, or the API credentials (a superuser), by the
   * hub's one admission policy. EMQX waits for this answer, so a login is never held here (only
   * a guessing address refused), and a device cannot take its own id back: EMQX would resume the
   * holder's session, subscriptions and queue included.
   */
  async authenticate(client: Pick<EmqxClient, 'clientId' | 'username' | 'peerHost'>, password: Buffer | string | undefined): Promise<AuthenticationVerdict> {
    const admission = await this.admission.admit(
      { protocol: 'mqtt', clientId: client.clientId, username: client.username ?? undefined, password, peer: client.peerHost },
      { canWait: false, canReclaim: false }
    )
    if (!admission.ok) {
      this.superusers.delete(client.clientId)
      this.metrics.reject(admission.reason)
      this.log.info({ clientId: client.clientId, username: client.username, peer: client.peerHost, why: admission.message }, 'EMQX client refused')
      return { ok: false, superuser: false, why: admission.message }
    }
    admission.release() // EMQX records the session later, through its hooks
    if (admission.superuser) this.superusers.add(client.clientId)
    else this.superusers.delete(client.clientId)
    return { ok: true, superuser: admission.superuser }
  }

  /**
   * `client.authorize` / `client.check_acl`: a device publishes and subscribes inside its
   * namespace only; nobody publishes on a reserved topic. EMQX hands over the topic as the client sent it, before mounting: with
   * EMQX's `%u/` mountpoint any topic but the broker's own (`$…`) stays inside; without one
   * the topic itself must begin with `{deviceId}/`.
   */
  authorize(client: EmqxClient, topic: string, action: 'publish' | 'subscribe' | undefined): boolean {
    const problem = checkTopic(topic, this.config)
    if (problem) {
      this.metrics.reject(problem.reason)
      return false
    }
    // what arrives on `$SYS/` or `$iothub/` is the broker's or the hub's word: no client publishes
    // there, a superuser neither (as the embedded broker refuses it, topic-rules.ts)
    if (action === 'publish' && reservedTopic(topic) !== null) {
      this.metrics.reject('bad_topic')
      return false
    }
    if (this.isSuperuser(client)) return true
    const own = deviceMountpoint(this.deviceIdOf(client))
    const inside = topic.startsWith('$') ? false : client.mountpoint === own || topic.startsWith(own)
    if (!inside) this.metrics.reject('outside_namespace')
    return inside
  }

  /**
   * `client.connected`. How it orders against the session's connection is connection-order.ts'
   * rule; a takeover nothing but arrival orders is applied, then checked with EMQX's REST API
   * (`onUnprovenTakeover`), since a late connect of the old connection would look the same.
   */
  connected(client: EmqxClient): Promise<ApplyResult> {
    const facts = this.connectionFacts(client)
    let unproven = false
    let takeover = false
    // a promise chain, not an async function: every call in flight waits here for its batch's
    // commit, and a suspended async frame per call is live memory each scavenge copies
    const applied = this.registry.applyFor(client.clientId, (current, lastEnded) => {
      const order = orderConnect(client, current, lastEnded, false)
      if (order.verdict === 'older') return { stale: 'connected', why: order.why }
      unproven = order.verdict === 'newer' && order.unproven
      takeover = order.verdict === 'newer' && current?.connected === true
      // the same connection told again keeps what the session knows of its clean start (a
      // hook's default must not undo what the reconcile read from EMQX)
      return this.connectEvent(facts, order.incarnation, order.verdict === 'same' ? current : undefined)
    })
    return applied.then((result) => {
      if (takeover && result.applied) this.noteTakeover(client.clientId)
      if (unproven && result.applied) this.onUnprovenTakeover?.(client.clientId)
      return result
    })
  }

  /** The clients whose connection took over another within TAKEOVER_DOUBT_MS. */
  private readonly takeovers = new RecentMarks<string>(TAKEOVER_DOUBT_MS)

  private noteTakeover(clientId: string): void {
    this.takeovers.mark(clientId)
  }

  /**
   * Called with a clientId whose takeover was applied in arrival order only, or whose new
   * connection a disconnect without a peer port just ended: EMQX's API is to be asked.
   */
  onUnprovenTakeover: ((clientId: string) => void) | undefined

  /**
   * The reconcile's connect of a client EMQX lists as connected: EMQX's API tells what it holds
   * now, so this connection is the session's unless it is the very one the hub holds — which
   * then takes the listing's clean start and expiry (hooks may not have said them).
   * `subscriptions`: the topics EMQX lists for the client; a new connection that does not resume
   * a session holds them from its connect on (ConnectedEvent.subscriptions).
   */
  listedConnect(client: EmqxClient, subscriptions?: TopicSubscription[]): (current: SessionRecord | undefined, lastEnded: string | undefined) => ConnectedEvent | null {
    const facts = this.connectionFacts(client)
    return (current, lastEnded) => {
      const order = orderConnect(client, current, lastEnded, true)
      if (order.verdict === 'older') return null
      if (order.verdict === 'newer') return subscriptions === undefined ? { ...facts, incarnation: order.incarnation } : { ...facts, incarnation: order.incarnation, subscriptions }
      return this.connectEvent(facts, order.incarnation, client.cleanStart === undefined ? current : undefined)
    }
  }

  /**
   * The device of a client's session, for a decision that makes subscription entities (they
   * carry its owner); none for a superuser, whose session belongs to no device.
   */
  deviceOf(client: Pick<EmqxClient, 'username' | 'clientId'>): string | undefined {
    return this.isSuperuser(client) ? undefined : this.deviceIdOf(client)
  }

  /** What a connect tells, checked; the incarnation is the ordering's to decide. */
  private connectionFacts(client: EmqxClient): Omit<ConnectedEvent, 'incarnation'> {
    this.check(client)
    const protocol = this.protocolOf(client)
    const superuser = this.isSuperuser(client)
    const deviceId = superuser ? '' : this.deviceIdOf(client)
    return connectionFacts(
      {
        clientId: client.clientId,
        protocol,
        deviceId,
        username: client.username,
        mountpoint: superuser ? NO_MOUNTPOINT : this.namespaceOf(client, deviceId),
        node: client.node,
        at: client.connectedAt
      },
      {
        peerHost: client.peerHost,
        peerPort: client.peerPort,
        sockPort: client.sockPort,
        keepalive: client.keepalive,
        protoVer: client.protoVer,
        // what an interface does not say (ExHook's ClientInfo has no clean_start) is taken as
        // MQTT's default; the reconcile reads the truth from the REST API
        cleanStart: client.cleanStart,
        expiryInterval: client.expiryInterval ?? this.config.sessionExpiry
      }
    )
  }

  private connectEvent(facts: Omit<ConnectedEvent, 'incarnation'>, incarnation: string, keepSessionOf: SessionRecord | undefined): ConnectedEvent {
    if (!keepSessionOf) return { ...facts, incarnation }
    return { ...facts, incarnation, cleanStart: keepSessionOf.cleanStart, expiryInterval: keepSessionOf.expiryInterval }
  }

  /** `client.disconnected`. */
  disconnected(client: EmqxClient, rawReason: string): Promise<ApplyResult> {
    this.check(client)
    const reason = disconnectReasonOf(rawReason)
    if (reason === REPLACED) {
      this.metrics.eventsTotal.inc({ kind: 'disconnected', outcome: 'stale' })
      return Promise.resolve({ applied: false, why: `reason ${rawReason}: another connection took the session over` })
    }
    // a promise chain, not an async function (as `connected`)
    return this.ofLiveConnection(client, (incarnation) => ({ kind: 'disconnected', clientId: client.clientId, incarnation, at: Date.now(), reason })).then((result) => {
      // without a peer port a late disconnect of the taken-over connection (same node and host)
      // looks like the new one's: soon after a takeover, ask EMQX which is still there
      if (result.applied && client.peerPort === undefined && this.takeovers.within(client.clientId)) {
        this.takeovers.delete(client.clientId)
        this.onUnprovenTakeover?.(client.clientId)
      }
      return result
    })
  }

  /** `session.subscribed` (one topic per call in ExHook; a list in some WebHook payloads). */
  subscribed(client: EmqxClient, subscriptions: TopicSubscription[]): Promise<ApplyResult> {
    this.check(client)
    for (const s of subscriptions) this.checkBrokerTopic(s.topic)
    // the subscription entities a subscribe makes carry the device's owner: its decision reads the device
    return this.ofLiveConnection(
      client,
      (incarnation) => ({ kind: 'subscribed', clientId: client.clientId, incarnation, at: Date.now(), subscriptions }),
      this.deviceOf(client)
    )
  }

  /** `session.unsubscribed`. */
  unsubscribed(client: EmqxClient, topics: string[]): Promise<ApplyResult> {
    this.check(client)
    for (const t of topics) this.checkBrokerTopic(t)
    return this.ofLiveConnection(client, (incarnation) => ({ kind: 'unsubscribed', clientId: client.clientId, incarnation, at: Date.now(), topics }))
  }

  /**
   * `session.terminated`: EMQX ended the session (expired, kicked while offline, or a clean
   * session's end, which `client.disconnected` has already recorded). An offline session ends
   * here with its subscription entities — only if its last connection is the one the call
   * names: a late call about an older session must not end the client's newer one. A
   * connected session is left to its connection's events.
   */
  async sessionTerminated(client: EmqxClient, rawReason: string): Promise<boolean> {
    this.check(client)
    if (disconnectReasonOf(rawReason) === REPLACED) return false
    return this.registry.discard(client.clientId, { onlyIf: (offline) => isConnectionOf(offline, client) })
  }

  /**
   * `message.publish`: a device's publish on one of its property topics changes its entity
   * (stored before the hook is answered). A payload the topic does not take is refused: the
   * transport tells EMQX not to route it.
   */
  async published(from: string, brokerTopic: string, payload: Buffer): Promise<PublishVerdict> {
    // a session another replica has just recorded may not be in the caches yet: read it then
    const session = await this.registry.find(from)
    if (!session || session.mountpoint === NO_MOUNTPOINT || !brokerTopic.startsWith(session.mountpoint)) return 'not_upstream'
    const deviceTopic = unmountTopic(session.mountpoint, brokerTopic)
    if (!this.upstream.handles(deviceTopic)) return 'not_upstream'
    // labelled as the embedded broker labels them: attributes, telemetry, raw, command_response
    const property = deviceTopic.slice(deviceTopic.lastIndexOf('me/') + 3).replace('/', '_')
    try {
      if (!(await this.upstream.receive(session.deviceId, deviceTopic, brokerTopic, payload))) {
        // a device the hub does not hold (or no longer does): EMQX routes it as any publish
        this.metrics.upstreamTotal.inc({ property, outcome: 'no_device' })
        return 'not_upstream'
      }
      this.metrics.upstreamTotal.inc({ property, outcome: 'applied' })
      return 'stored'
    } catch (error) {
      if (!(error instanceof PayloadError)) throw error
      this.metrics.reject('bad_payload')
      this.metrics.upstreamTotal.inc({ property, outcome: 'refused' })
      this.log.warn({ deviceId: session.deviceId, topic: deviceTopic, err: error.message }, 'upstream publish refused')
      return 'refused'
    }
  }

  /** Applies an event of `client`'s connection, which is the session's live one or else stale. */
  private ofLiveConnection(client: EmqxClient, build: (incarnation: string) => LifecycleEvent, device?: string): Promise<ApplyResult> {
    return this.registry.applyFor(
      client.clientId,
      (current: SessionRecord | undefined) => build(current && isLiveConnection(current, client) ? current.incarnation : `not-live:${connectionName(client)}`),
      { device }
    )
  }

  /**
   * Only a client `authenticate` accepted with the API credentials: a username alone proves
   * nothing (a device may be named like the API user; with WebHook the hub never sees passwords).
   */
  private isSuperuser(client: Pick<EmqxClient, 'username' | 'clientId'>): boolean {
    return client.username !== null && client.username === this.config.apiUser && this.superusers.has(client.clientId)
  }

  /**
   * Where the device's topics live on the broker. With EMQX's `%u/` mountpoint (`{deviceId}/`)
   * EMQX puts them there; with none (or any other, which is not the device's own) the
   * authorization hook makes the device use `{deviceId}/…` itself, under that mountpoint.
   */
  private namespaceOf(client: EmqxClient, deviceId: string): string {
    const own = deviceMountpoint(deviceId)
    return client.mountpoint === own ? own : `${client.mountpoint ?? ''}${own}`
  }

  private deviceIdOf(client: Pick<EmqxClient, 'username' | 'clientId'>): string {
    return mqttDeviceId(this.config.auth, client.clientId, client.username)
  }

  private protocolOf(client: EmqxClient): Protocol {
    const protocol = (client.protocol ?? 'mqtt').toLowerCase()
    if (!(PROTOCOLS as readonly string[]).includes(protocol)) throw this.bad(`protocol "${client.protocol}" is not one the hub keeps sessions for (${PROTOCOLS.join(', ')})`)
    return protocol as Protocol
  }

  private check(client: EmqxClient): void {
    if (typeof client.clientId !== 'string' || client.clientId.length === 0) throw this.bad('no clientid')
    if (client.clientId.length > this.config.maxClientIdLength) throw this.bad(`clientid longer than ${this.config.maxClientIdLength} characters`)
    if (typeof client.node !== 'string' || client.node.length === 0) throw this.bad('no node')
  }

  private checkBrokerTopic(topic: string): void {
    const problem = typeof topic === 'string' ? checkTopic(topic, this.config) : { reason: 'bad_topic' as const, message: 'no topic' }
    if (problem) throw this.bad(problem.message, problem.reason)
  }

  private bad(message: string, reason: RejectReason = 'bad_hook'): HookInputError {
    this.metrics.reject(reason)
    return new HookInputError(message, true)
  }
}
