/**
 * Turns what the embedded Aedes broker does into lifecycle events for the registry, and holds
 * the broker at the points where the hub's answer must be durable first:
 *
 * - CONNECT: `authenticate` checks the device token, then records `connected`; the CONNACK
 *   leaves only once that is stored. Connects of one clientId are serialized from
 *   authentication to CONNACK (as EMQX's connection manager locks a clientId), so the
 *   connection Aedes keeps after a takeover is always the newest incarnation.
 * - SUBSCRIBE: `authorizeSubscribe` records `subscribed` (one event per packet) before the
 *   SUBACK; a topic we refuse gets the SUBACK failure code 0x80.
 * - UNSUBSCRIBE: recorded from Aedes' `unsubscribe` event.
 * - The socket closing ends the connection, with the reason seen on the way out.
 */
import type { Socket } from 'node:net'
import type { Aedes, AedesOptions, AedesPublishPacket, Client, ConnectPacket, PublishPacket, Subscription } from 'aedes'
import type { Logger } from 'pino'
import type { HubConfig } from '../../config.js'
import { changePropertyOfTopic } from '../../domain/change-topics.js'
import { PayloadError } from '../../domain/device-properties.js'
import { newIncarnation } from '../../domain/incarnation.js'
import { insideNamespace, NO_MOUNTPOINT, unmountTopic } from '../../domain/namespace.js'
import type { DisconnectReason, TopicSubscription } from '../../domain/session.js'
import type { HubMetrics, RejectReason } from '../../observability/metrics.js'
import type { Upstream } from '../../devices/upstream.js'
import type { DeviceDirectory } from '../../registry/device-directory.js'
import { KeyedQueue } from '../../registry/keyed-queue.js'
import type { SessionRegistry } from '../../registry/registry.js'
import type { TopicBook } from '../../registry/topic-book.js'
import { checkTopic } from '../../admission/topic-rules.js'
import { MalformedLengthError, PacketTooLargeError } from '../packet-size-guard.js'
import type { SubscriptionWriter } from '../aedes-persistence.js'
import { mountClientTopics } from '../mountpoint.js'
import { guardSlowConsumer } from '../slow-consumer-guard.js'
import { patchConnackSessionPresent } from '../connack-session-present.js'
import type { AdmissionPolicy, Identity } from '../../admission/admission-policy.js'

/** Whose topics a connection uses, decided from its CONNECT (see namespace.ts). */
interface Namespace {
  /** Who the CONNECT claims to be (verified by `authenticate`), or why it cannot be anyone. */
  identity: Identity
  mountpoint: string
  /** Set when the CONNECT names no usable namespace: `authenticate` refuses it with this. */
  refusal?: { returnCode: number; reason: RejectReason; message: string }
}

/** What we learn about one connection, from its CONNECT to its close. */
interface Connection {
  namespace: Namespace
  clientIdGiven: boolean
  keepalive: number
  protoVer: number
  peerHost: string | null
  peerPort: number | null
  sockPort: number | null
  /** Set once `connected` is recorded; events of this connection carry it. */
  incarnation?: string
  /** Why it ended, when something told us before the socket closed. */
  endReason?: DisconnectReason
  /** Lets the next connect of the same clientId proceed. */
  release?: () => void
  /** Settles once this connection's end is recorded. */
  ended?: Promise<void>
  /** Clean sessions: topics of SUBSCRIBEs authorized but not yet added by Aedes (see attach). */
  subscribing?: Map<string, number>
  /** Topics of UNSUBSCRIBEs not yet recorded: no longer held, as far as the subscription limit goes. */
  unsubscribing?: Map<string, number>
  /** The will's broker topic, if the CONNECT carries a will. */
  willTopic?: string
  /** Whether the CONNACK says "session present": the hub kept this client's session for it. */
  sessionPresent?: boolean
}

/** A will as the CONNECT carried it, tagged with its publisher's mountpoint. */
export interface WillPacket {
  topic: string
  mountpoint?: string
}

/** Aedes' table of connected clients, public in its JavaScript but not in its types. */
type LiveAedes = Aedes & { clients: Record<string, Client> }

/** Aedes internals read here: set when the client sent DISCONNECT. */
type AedesClient = Client & { _disconnected?: boolean }

const CONNACK_IDENTIFIER_REJECTED = 2
const CONNACK_SERVER_UNAVAILABLE = 3
const CONNACK_BAD_USERNAME_OR_PASSWORD = 4
const CONNACK_NOT_AUTHORIZED = 5

/** The CONNACK code of each refusal of a login; any other is 5, not authorized. */
const CONNACK_CODE_OF_REFUSAL: Partial<Record<RejectReason, number>> = {
  bad_client_id: CONNACK_IDENTIFIER_REJECTED,
  bad_username: CONNACK_BAD_USERNAME_OR_PASSWORD
}

export class AedesSource {
  private readonly connections = new WeakMap<Client, Connection>()
  private readonly namespaces = new WeakMap<Client, Namespace>()
  /**
   * Client publishes Aedes must not route: those refused without closing the connection
   * (EMQX's `acl_deny_action = ignore`), and upstream data the hub routed itself, in the order
   * the device's changes were stored.
   */
  private readonly notForAedes = new WeakSet<PublishPacket>()
  private readonly connectLocks = new KeyedQueue()
  /** One SUBSCRIBE's topics being gathered (see authorizeSubscribe); `adding`: how many are new to the session. */
  private readonly pendingSubscribes = new Map<Client, { subscriptions: TopicSubscription[]; answers: ((stored: boolean) => void)[]; adding: number }>()
  private stopping = false
  private readonly inFlight = new Set<Promise<unknown>>()
  private aedes: LiveAedes | undefined

  constructor(
    private readonly registry: SessionRegistry,
    private readonly devices: DeviceDirectory,
    private readonly upstream: Upstream,
    private readonly admission: AdmissionPolicy,
    private readonly config: HubConfig,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {}

  /** Takes a new Aedes client before it reads its first packet: its topics get its mountpoint. */
  adopt(client: Client): void {
    const socket = client.conn as Socket
    const peerHost = socket.remoteAddress
    guardSlowConsumer(socket, this.config.maxInflightBytes, (buffered) => {
      this.endsBecause(client, 'slow_consumer')
      this.reject('slow_consumer', client, `${buffered} bytes waiting to be written, more than ${this.config.maxInflightBytes}`)
      client.close()
    })
    patchConnackSessionPresent(socket, () => this.connections.get(client)?.sessionPresent === true)
    mountClientTopics(client, (connect) => {
      const namespace = this.namespaceOf(connect, peerHost)
      this.namespaces.set(client, namespace)
      return namespace.mountpoint
    })
  }

  /** Who the CONNECT claims to be (the admission policy's rules 1 and 2), which names its namespace. */
  private namespaceOf(connect: ConnectPacket, peerHost: string | undefined): Namespace {
    const { username, password, clientId } = connect
    const identity = this.admission.identify({ protocol: 'mqtt', clientId, username, password, peer: peerHost })
    if (!identity.ok) {
      return { identity, mountpoint: NO_MOUNTPOINT, refusal: { returnCode: CONNACK_CODE_OF_REFUSAL[identity.reason] ?? CONNACK_NOT_AUTHORIZED, reason: identity.reason, message: identity.message } }
    }
    return { identity, mountpoint: identity.mountpoint }
  }

  /** Whether Aedes must not route `packet` (see `notForAedes`). */
  aedesMustNotRoute(packet: PublishPacket): boolean {
    return this.notForAedes.has(packet)
  }

  /** The Aedes handlers this source provides. */
  hooks(): Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizeSubscribe' | 'authorizePublish' | 'authorizeForward'> {
    return {
      preConnect: (client, packet, done) => {
        const socket = client.conn as Socket
        this.connections.set(client, {
          namespace: this.namespaces.get(client) ?? this.namespaceOf(packet, socket.remoteAddress),
          clientIdGiven: packet.clientId.length > 0,
          keepalive: packet.keepalive ?? 0,
          protoVer: packet.protocolVersion ?? 4,
          peerHost: socket.remoteAddress ?? null,
          peerPort: socket.remotePort ?? null,
          sockPort: socket.localPort ?? null,
          ...(packet.will ? { willTopic: packet.will.topic } : {})
        })
        // the will keeps its publisher's namespace, so a will published after a crash is checked
        // against it as a live client's is (see willOfPreviousRunRefusal)
        if (packet.will) (packet.will as WillPacket).mountpoint = this.connections.get(client)!.namespace.mountpoint
        socket.once('close', () => this.closed(client))
        done(null, true)
      },
      authenticate: (client, username, password, done) => this.authenticate(client, username, password, done),
      authorizeSubscribe: (client, sub, done) => this.authorizeSubscribe(client, sub, done),
      authorizePublish: (client, packet, done) => this.authorizePublish(client, packet, done),
      authorizeForward: (client, packet) => this.forward(client, packet)
    }
  }

  private authorizePublish(client: Client | null, packet: PublishPacket, done: (error: Error | null) => void): void {
    const namespace = client && this.connections.get(client)?.namespace
    if (namespace && isEmptyOnceUnmounted(namespace.mountpoint, packet.topic)) {
      this.reject('bad_topic', client, 'empty topic')
      // a protocol error [MQTT-4.7.3-1]: the connection closes (worded so clientError does not count it again)
      return done(new Error('topic is empty once the device prefix is taken off'))
    }
    if (namespace && !insideNamespace(namespace.mountpoint, packet.topic)) {
      // dropped, not disconnected: a device learns nothing of what lies outside its namespace
      this.reject('outside_namespace', client, `publish to ${packet.topic} is outside the device's namespace`)
      this.notForAedes.add(packet)
      return done(null)
    }
    if (packet.topic.startsWith('$SYS/')) {
      this.reject('bad_topic', client, '$SYS/ topics are reserved')
      return done(new Error('$SYS/ topic is reserved'))
    }
    const refusal = checkTopic(packet.topic, this.config)
    if (refusal) {
      this.reject(refusal.reason, client, refusal.message)
      return done(new Error(refusal.message))
    }
    if (!client || !namespace) return done(null) // a will published at start, or a server publish
    // lets delivery recognize the sender (see forward)
    ;(packet as PublishPacket & { clientId?: string }).clientId = client.id
    const deviceId = namespace.identity.ok ? namespace.identity.deviceId : undefined
    const deviceTopic = unmountTopic(namespace.mountpoint, packet.topic)
    if (namespace.mountpoint === NO_MOUNTPOINT || deviceId === undefined || !this.upstream.handles(deviceTopic) || !this.devices.get(deviceId)) {
      return done(null)
    }
    // an empty retained publish clears the retained message: nothing for the device entity
    if (packet.retain && packet.payload.length === 0) return done(null)
    // Upstream data: the device entity changes, then the message is routed, both in the
    // device's queue of changes (so watchers see its changes in the order they were stored),
    // and all before the PUBACK — which makes the publish journal needless for it.
    const kind = deviceTopic.slice(deviceTopic.lastIndexOf('me/') + 3).replace('/', '_')
    const receive = () => this.receiveUpstream(client, packet, deviceId, deviceTopic, kind, done)
    if (packet.qos !== 2) return receive()
    // Aedes asks this hook before it looks for a QoS 2 re-send (same message id, DUP): one it
    // already holds was applied and routed the first time
    const persistence = (this.aedes as unknown as { persistence: { incomingGetPacket(c: Client, p: PublishPacket): Promise<unknown> } }).persistence
    persistence.incomingGetPacket(client, packet).then(() => {
      this.notForAedes.add(packet)
      done(null)
    }, receive)
  }

  private receiveUpstream(client: Client, packet: PublishPacket, deviceId: string, deviceTopic: string, kind: string, done: (error: Error | null) => void): void {
    let routingFailed: Error | undefined
    const route = () =>
      this.route(client, packet).catch((error: Error) => {
        routingFailed = error
      })
    this.upstream.receive(deviceId, deviceTopic, packet.topic, packet.payload as Buffer, route).then(
      () => {
        this.metrics.upstreamTotal.inc({ property: kind, outcome: 'applied' })
        if (routingFailed) {
          // stored, not routed: Aedes gets the packet back and routes it (or journals it) itself
          this.log.warn({ clientId: client.id, deviceId, topic: deviceTopic, err: routingFailed.message }, 'upstream data stored; routing it again')
        } else {
          this.notForAedes.add(packet)
        }
        done(null)
      },
      (error: Error) => {
        if (error instanceof PayloadError) {
          this.metrics.upstreamTotal.inc({ property: kind, outcome: 'refused' })
          this.reject('bad_payload', client, `${deviceTopic} from device ${deviceId}: ${error.message}`)
          this.notForAedes.add(packet)
          return done(null)
        }
        this.metrics.reject('store_unavailable')
        this.log.error({ clientId: client.id, deviceId, topic: deviceTopic, err: error.message }, 'upstream data not stored')
        done(error) // closes the connection; a QoS 1 sender sends it again when it reconnects
      }
    )
  }

  /** Routes a client's publish now, as Aedes would (with its sender, for `forward`). */
  private route(client: Client, packet: PublishPacket): Promise<void> {
    const { topic, payload, qos, retain } = packet
    const copy = { cmd: 'publish', topic, payload, qos, retain, dup: false, clientId: client.id } as PublishPacket
    return new Promise((resolve, reject) => this.aedes!.publish(copy, (error) => (error ? reject(error) : resolve())))
  }

  /**
   * On the way out to a client: the mountpoint comes off the topic, and a change a device sent
   * on one of its change topics is not echoed back to the connection that sent it.
   */
  private forward(client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const mountpoint = this.connections.get(client)?.namespace.mountpoint ?? NO_MOUNTPOINT
    if (mountpoint === NO_MOUNTPOINT) return packet
    // a packet re-sent from the offline queue was stored as delivered: already unmounted
    if (!packet.topic.startsWith(mountpoint)) return packet
    const topic = unmountTopic(mountpoint, packet.topic)
    if ((packet as { clientId?: string }).clientId === client.id && changePropertyOfTopic(topic) !== undefined) return null
    // Re-sending a persistent session's queue, Aedes writes the packet it passed here (a copy
    // made for this client, already given its write callback) and ignores what we return.
    if (Object.hasOwn(packet, 'writeCallback')) {
      packet.topic = topic
      return packet
    }
    // otherwise a copy: the same packet goes to every subscriber. Aedes lowers the QoS to the
    // granted one by looking up the delivered topic among the client's subscriptions; the
    // unmounted topic is not found there, so the lookup is made here with the broker's.
    const granted = (client as Client & { subscriptions: Record<string, { qos: number } | undefined> }).subscriptions[packet.topic]?.qos
    const qos = granted !== undefined && granted < packet.qos ? (granted as 0 | 1 | 2) : packet.qos
    return Object.assign(Object.create(Object.getPrototypeOf(packet) as object) as AedesPublishPacket, packet, { topic, qos })
  }

  attach(aedes: Aedes): void {
    this.aedes = aedes as LiveAedes
    aedes.on('connackSent', (_packet, client) => this.connections.get(client)?.release?.())
    aedes.on('keepaliveTimeout', (client) => this.endsBecause(client, 'keepalive_timeout'))
    aedes.on('clientError', (client, error) => {
      const reason = classifyClientError(error)
      this.endsBecause(client, reason === 'slow_consumer' ? 'slow_consumer' : 'socket_error')
      if (reason) this.reject(reason, client, error.message)
    })
    aedes.on('connectionError', (_client, error) => {
      if (isFramingError(error)) return // counted where it was detected
      this.metrics.reject(classifyClientError(error) ?? 'malformed_packet')
      this.log.debug({ err: error.message }, 'connection refused before CONNECT')
    })
    aedes.on('subscribe', (subscriptions, client) => {
      const inFlight = this.connections.get(client)?.subscribing
      if (inFlight) for (const { topic } of subscriptions) countDown(inFlight, topic)
    })
    aedes.on('unsubscribe', (topics, client) => {
      // Persistent clients' UNSUBSCRIBEs were recorded before the UNSUBACK, by the writer below.
      // Aedes also "unsubscribes" everything of a closing client; the close itself ends those.
      if (!client.clean || client.closed) return
      // Aedes handles the packets of one read concurrently: an UNSUBSCRIBE can be done before
      // a SUBSCRIBE sent earlier (or later) in the same read adds its topic. Only what Aedes no
      // longer holds, and will not add, was unsubscribed.
      const inFlight = this.connections.get(client)?.subscribing
      const held = (client as Client & { subscriptions: Record<string, unknown> }).subscriptions
      const removed = topics.filter((t) => held[t] === undefined && !inFlight?.has(t))
      if (removed.length === 0) return
      this.recordUnsubscribe(client, removed).catch((error: Error) =>
        this.log.error({ clientId: client.id, err: error.message }, 'unsubscribe not stored')
      )
    })
  }

  /**
   * The Aedes persistence's subscription writes, routed through the registry so they are
   * incarnation-checked (a late UNSUBSCRIBE of a taken-over connection changes nothing).
   */
  subscriptionWriter(): SubscriptionWriter {
    return {
      // Already recorded topic by topic in authorizeSubscribe. Aedes passes the whole SUBSCRIBE
      // packet here, topics we refused included, so writing it would store those.
      add: async () => undefined,
      remove: (client, topics) => this.recordUnsubscribe(client as Client, topics),
      // A clean start: the `connected` event already discarded the old session's topics.
      clean: async () => undefined
    }
  }

  private async recordUnsubscribe(client: Client, topics: string[]): Promise<void> {
    const conn = this.connections.get(client)
    const incarnation = conn?.incarnation
    if (!incarnation) return
    this.recordSubscribe(client) // a SUBSCRIBE that came first is recorded first
    // until recorded, these topics do not count against the session's limit (see authorizeSubscribe)
    const leaving = (conn.unsubscribing ??= new Map<string, number>())
    for (const topic of topics) leaving.set(topic, (leaving.get(topic) ?? 0) + 1)
    try {
      await this.track(this.registry.apply({ kind: 'unsubscribed', clientId: client.id, incarnation, at: Date.now(), topics }))
    } finally {
      for (const topic of topics) countDown(leaving, topic)
    }
  }

  /** From now on, connections that close do so because the hub stops. */
  stop(): void {
    this.stopping = true
  }

  /** Marks why a live connection is about to end (the API's kick, a takeover, …). */
  endsBecause(client: Client, reason: DisconnectReason): void {
    const conn = this.connections.get(client)
    if (conn && conn.endReason === undefined) conn.endReason = reason
  }

  private authenticate(
    client: AedesClient,
    username: string | undefined,
    password: Buffer | undefined,
    done: (error: (Error & { returnCode: number }) | null, success: boolean | null) => void
  ): void {
    const conn = this.connections.get(client)!
    const refuse = (returnCode: number, reason: RejectReason, message: string) => {
      this.reject(reason, client, message)
      done(Object.assign(new Error(message), { returnCode }), false)
    }
    if (!conn.clientIdGiven && !client.clean) return refuse(CONNACK_IDENTIFIER_REJECTED, 'bad_client_id', 'empty client id needs clean session')
    if (client.id.length > this.config.maxClientIdLength) return refuse(CONNACK_IDENTIFIER_REJECTED, 'bad_client_id', 'client id too long')
    if (!isWellFormedMqttString(client.id)) return refuse(CONNACK_IDENTIFIER_REJECTED, 'bad_client_id', 'client id is not well-formed UTF-8')
    if (username !== undefined && !isWellFormedMqttString(username)) {
      return refuse(CONNACK_BAD_USERNAME_OR_PASSWORD, 'bad_username', 'username is not well-formed UTF-8')
    }

    const { refusal, identity } = conn.namespace
    if (refusal || !identity.ok) return refuse(refusal?.returnCode ?? CONNACK_NOT_AUTHORIZED, refusal?.reason ?? 'not_authorized', refusal?.message ?? 'not authorized')
    // A will is published in the device's name as any publish is: inside its namespace only.
    if (conn.willTopic !== undefined) {
      const willRefusal = this.willRefusal(conn.namespace.mountpoint, conn.willTopic)
      if (willRefusal) return refuse(CONNACK_NOT_AUTHORIZED, willRefusal.reason, `will: ${willRefusal.message}`)
    }
    this.admission
      .admit(
        { protocol: 'mqtt', clientId: client.id, username, password, peer: conn.peerHost },
        { canWait: true, canReclaim: true, abandoned: () => client.closed }
      )
      .then((admission) => {
        if (client.closed) return admission.ok && admission.release() // gave up while its login was held
        if (!admission.ok) return refuse(CONNACK_CODE_OF_REFUSAL[admission.reason] ?? CONNACK_NOT_AUTHORIZED, admission.reason, admission.message)
        // checked here to refuse early, and again under the client id's lock (see connect)
        admission.release()
        void this.connectLocks.run(client.id, () => this.connect(client, conn, identity, username ?? null, done))
      }, (error: Error) => {
        this.log.error({ clientId: client.id, err: error.message }, 'login not checked')
        done(Object.assign(new Error('server unavailable'), { returnCode: CONNACK_SERVER_UNAVAILABLE }), false)
      })
  }

  /**
   * Why a will the previous run stored for a client it lost (a crash) may not be published now,
   * or null. Its client is gone, so the namespace is the one stored with the will.
   */
  willOfPreviousRunRefusal(will: WillPacket): { reason: RejectReason; message: string } | null {
    if (will.mountpoint !== undefined) return this.willRefusal(will.mountpoint, will.topic)
    // stored before wills carried their namespace: no device's topic begins with `$`
    if (will.topic.startsWith('$')) return { reason: 'outside_namespace', message: `${will.topic} is the broker's own topic` }
    return checkTopic(will.topic, this.config)
  }

  /** Why a will on `topic` may not be published by a client of `mountpoint`, or null. */
  private willRefusal(mountpoint: string, topic: string): { reason: RejectReason; message: string } | null {
    if (isEmptyOnceUnmounted(mountpoint, topic)) return { reason: 'bad_topic', message: 'empty topic' }
    if (!insideNamespace(mountpoint, topic)) return { reason: 'outside_namespace', message: `${topic} is outside the device's namespace` }
    if (topic.startsWith('$SYS/')) return { reason: 'bad_topic', message: '$SYS/ topics are reserved' }
    return checkTopic(topic, this.config)
  }

  private connect(
    client: AedesClient,
    conn: Connection,
    identity: Identity & { ok: true },
    username: string | null,
    done: (error: (Error & { returnCode: number }) | null, success: boolean | null) => void
  ): Promise<void> {
    return new Promise<void>((releaseLock) => {
      if (client.closed) return releaseLock() // gave up while an earlier connect held the lock
      // checked again under the lock: a connect of another device may have taken the id meanwhile
      const admission = this.admission.admitSession(client.id, identity, { canReclaim: true })
      if (!admission.ok) {
        this.reject(admission.reason, client, admission.message)
        done(Object.assign(new Error(admission.message), { returnCode: CONNACK_NOT_AUTHORIZED }), false)
        return releaseLock()
      }
      const deviceId = admission.deviceId
      const release = () => {
        admission.release()
        releaseLock()
      }
      if (admission.reclaim) {
        // the device takes its own id back: whoever held it is closed and its session discarded
        this.reclaim(client.id).then(
          () => this.record(client, conn, deviceId, username, done, release),
          (error: Error) => {
            this.metrics.reject('store_unavailable')
            this.log.error({ clientId: client.id, err: error.message }, 'connect refused: the session held under this id could not be discarded')
            done(Object.assign(new Error('server unavailable'), { returnCode: CONNACK_SERVER_UNAVAILABLE }), false)
            release()
          }
        )
        return
      }
      this.record(client, conn, deviceId, username, done, release)
    })
  }

  /** Closes the connection holding `clientId` (if any here) and discards its session. */
  private async reclaim(clientId: string): Promise<void> {
    const holding = this.aedes?.clients[clientId]
    if (holding) {
      this.endsBecause(holding, 'taken_over')
      holding.close()
      await this.whenEnded(holding)
    }
    const held = this.registry.record(clientId)
    if (held && !(await this.registry.discard(clientId))) {
      throw new Error(`the session of ${clientId} is still connected (${held.protocol})`)
    }
    this.log.info({ clientId, heldBy: held?.deviceId || 'a superuser' }, 'a device took its own id back as a client id')
  }

  /** Records the `connected` event of an admitted connect, and answers Aedes. */
  private record(
    client: AedesClient,
    conn: Connection,
    deviceId: string,
    username: string | null,
    done: (error: (Error & { returnCode: number }) | null, success: boolean | null) => void,
    release: () => void
  ): void {
    if (client.closed) return release()
    const kept = this.registry.record(client.id)
    conn.sessionPresent = !client.clean && kept !== undefined && !kept.cleanStart && kept.deviceId === deviceId
    conn.release = release
    const previous = this.aedes?.clients[client.id]
    conn.incarnation = newIncarnation(this.config.node)
    const refuse = (error: Error): void => {
      conn.incarnation = undefined
      this.metrics.reject('store_unavailable')
      this.log.error({ clientId: client.id, err: error.message }, 'connect refused: session not recorded')
      done(Object.assign(new Error('server unavailable'), { returnCode: CONNACK_SERVER_UNAVAILABLE }), false)
      release()
    }
    this.track(this.registry.apply({
        kind: 'connected',
        clientId: client.id,
        incarnation: conn.incarnation,
        at: Date.now(),
        protocol: 'mqtt',
        deviceId,
        username,
        mountpoint: conn.namespace.mountpoint,
        node: this.config.node,
        peerHost: conn.peerHost,
        peerPort: conn.peerPort,
        sockPort: conn.sockPort,
        keepalive: conn.keepalive,
        protoVer: conn.protoVer,
        cleanStart: client.clean,
        expiryInterval: this.config.sessionExpiry
      }))
      .then(
        (result) => {
          if (!result.applied) return refuse(new Error(`connect not applied: ${result.why}`))
          if (previous && previous !== client) this.endsBecause(previous, 'taken_over')
          done(null, true)
        },
        // two-armed, not .catch: a throw from Aedes' own continuation must not answer twice
        refuse
      )
  }

  private authorizeSubscribe(client: Client, sub: Subscription, done: (error: Error | null, subscription?: Subscription | null) => void): void {
    const namespace = this.connections.get(client)?.namespace
    if (namespace && isEmptyOnceUnmounted(namespace.mountpoint, sub.topic)) {
      this.reject('bad_topic', client, 'empty topic filter')
      return done(null, null)
    }
    if (namespace && !insideNamespace(namespace.mountpoint, sub.topic)) {
      this.reject('outside_namespace', client, `subscription to ${sub.topic} is outside the device's namespace`)
      return done(null, null)
    }
    const refusal = checkTopic(sub.topic, this.config)
    if (refusal) {
      this.reject(refusal.reason, client, refusal.message)
      return done(null, null) // SUBACK 0x80 for this topic; the others go on
    }
    if (!this.connections.get(client)?.incarnation) return done(null, null) // not (or no longer) a recorded connection
    // Aedes authorizes the topics of one SUBSCRIBE one by one, in one synchronous loop: they
    // are gathered here and recorded as one event, one durable write, before the SUBACK.
    let pending = this.pendingSubscribes.get(client)
    const leaving = this.connections.get(client)?.unsubscribing
    const adds = !this.registry.topics.holds(client.id, sub.topic) || leaving?.has(sub.topic) === true
    if (adds) {
      const held = this.registry.topics.countOf(client.id) - countHeld(this.registry.topics, client.id, leaving) + (pending?.adding ?? 0)
      if (held >= this.config.maxSubscriptionsPerSession) {
        this.reject('too_many_subscriptions', client, `session holds ${held} topics, the most allowed is ${this.config.maxSubscriptionsPerSession}`)
        return done(null, null)
      }
    }
    if (!pending) {
      pending = { subscriptions: [], answers: [], adding: 0 }
      this.pendingSubscribes.set(client, pending)
      queueMicrotask(() => this.recordSubscribe(client))
    }
    const { topic, qos, rh, rap, nl } = sub
    if (client.clean) {
      // until Aedes has added it (its `subscribe` event): see the `unsubscribe` listener
      const conn = this.connections.get(client)!
      const inFlight = (conn.subscribing ??= new Map<string, number>())
      inFlight.set(topic, (inFlight.get(topic) ?? 0) + 1)
    }
    if (adds) pending.adding++
    pending.subscriptions.push({ topic, qos, rh, rap, nl })
    pending.answers.push((stored) => done(null, stored ? sub : null))
  }

  private recordSubscribe(client: Client): void {
    const pending = this.pendingSubscribes.get(client)
    if (!pending) return // already recorded (an UNSUBSCRIBE flushed it)
    const { subscriptions, answers } = pending
    this.pendingSubscribes.delete(client)
    const incarnation = this.connections.get(client)!.incarnation!
    this.track(this.registry.apply({ kind: 'subscribed', clientId: client.id, incarnation, at: Date.now(), subscriptions })).then(
      (result) => answers.forEach((answer) => answer(result.applied)),
      (error: Error) => {
        this.metrics.reject('store_unavailable')
        this.log.error({ clientId: client.id, topics: subscriptions.map((s) => s.topic), err: error.message }, 'subscription refused: not stored')
        answers.forEach((answer) => answer(false))
      }
    )
  }

  private closed(client: AedesClient): void {
    const conn = this.connections.get(client)
    if (!conn) return
    conn.release?.()
    const incarnation = conn.incarnation
    if (!incarnation) return
    const reason: DisconnectReason =
      conn.endReason ?? (client._disconnected ? 'client_disconnect' : this.stopping ? 'server_shutdown' : 'socket_error')
    conn.ended = this.track(this.registry.apply({ kind: 'disconnected', clientId: client.id, incarnation, at: Date.now(), reason })).then(
      () => undefined,
      (error: Error) => this.log.error({ clientId: client.id, err: error.message }, 'disconnect not stored')
    )
  }

  /** Resolves once the end of `client`'s connection is recorded (at once if it never connected). */
  async whenEnded(client: Client): Promise<void> {
    const conn = this.connections.get(client)
    if (!conn?.incarnation) return
    // `ended` is set by the socket's close listener, which runs before any added later
    if (!conn.ended) await new Promise<void>((resolve) => client.conn.once('close', () => resolve()))
    await conn.ended
  }

  /** Resolves once every lifecycle event this source has handed to the registry is applied. */
  async idle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight])
  }

  private track<T>(applying: Promise<T>): Promise<T> {
    this.inFlight.add(applying)
    const forget = () => this.inFlight.delete(applying)
    applying.then(forget, forget)
    return applying
  }

  private reject(reason: RejectReason, client: Client | null, message: string): void {
    this.metrics.reject(reason)
    this.log.info({ clientId: client?.id, reason, detail: message }, 'input refused')
  }
}

/**
 * MQTT strings must be well-formed UTF-8 without U+0000 [MQTT-1.5.3-1, -2]. mqtt-packet decodes
 * ill-formed bytes into U+FFFD, so U+FFFD is refused too — a real one in a client id or
 * username is far rarer than a device sending bytes that are not UTF-8.
 */
function isWellFormedMqttString(value: string): boolean {
  return !value.includes('\uFFFD') && !value.includes('\u0000')
}

/** Errors of the packet-size guard, which counts them itself. */
function isFramingError(error: Error): boolean {
  return error instanceof PacketTooLargeError || error instanceof MalformedLengthError
}

/** Maps the errors Aedes and mqtt-packet raise on bad input to our reject reasons. */
function classifyClientError(error: Error): RejectReason | null {
  const m = error.message
  if (isFramingError(error)) return null
  if (m === 'connect did not arrive in time') return 'connect_timeout'
  if (m === 'drain timeout') return 'slow_consumer' // Aedes' drainTimeout: the socket stayed full
  if (m === 'Client queue limit reached') return 'packets_before_connack'
  if (m.includes('too many levels')) return 'topic_too_deep'
  if (m.includes('is only allowed') || m.includes('is not allowed in PUBLISH') || m.includes('empty topic')) return 'bad_topic'
  if (/invalid|malformed|cannot parse|unknown command|protocol/i.test(m)) return 'malformed_packet'
  return null
}

/** A device's topic that is empty once its mountpoint is taken off: `""` mounted is `{deviceId}/`. */
function isEmptyOnceUnmounted(mountpoint: string, topic: string): boolean {
  return mountpoint !== NO_MOUNTPOINT && topic === mountpoint
}

/** How many of `topics` the session holds. */
function countHeld(book: TopicBook, sessionId: string, topics: Map<string, number> | undefined): number {
  let n = 0
  if (topics) for (const topic of topics.keys()) if (book.holds(sessionId, topic)) n++
  return n
}

function countDown(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 0) - 1
  if (left > 0) counts.set(key, left)
  else counts.delete(key)
}
