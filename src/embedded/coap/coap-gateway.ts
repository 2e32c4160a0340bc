/**
 * The CoAP gateway of embedded mode, on UDP IOTHUB_COAP_PORT, speaking EMQX 5's CoAP gateway
 * *connection mode* so devices and docs written for EMQX work (README, "CoAP devices"):
 *
 * - `POST /mqtt/connection?clientid=&username=&password=` → 2.01, the connection's token as payload;
 * - `PUT /mqtt/connection?clientid=&token=` heartbeat → 2.04; `DELETE …` closes → 2.02;
 * - `POST` (or `PUT`) `/ps/{topic}?clientid=&token=` publishes → 2.04;
 * - `GET /ps/{topic}?clientid=&token=` with Observe 0 subscribes (each message a notification),
 *   with Observe 1 unsubscribes. A notification larger than one block (1,024 bytes, or the size
 *   the observe asked for with Block2) carries its first block; the device fetches the rest with
 *   GETs carrying Block2, as RFC 7959 §2.6 has it (see coap-blocks.ts).
 *
 * A request body sent block-wise (Block1) is reassembled before node-coap's server sees it, and
 * copies of a request still being handled are not handled again (coap-inbound.ts, coap-block1.ts).
 *
 * The port is open to any sender, and a source address can be forged, so no answer to what a
 * device sends wrong is larger than what it sent: a datagram that is no CoAP message is ignored
 * or reset (coap-datagram.ts), an error answer's diagnostic is cut to fit (coap-diagnostic.ts),
 * and no answer carries internal error text. A device observes at most
 * `maxSubscriptionsPerSession` topics (4.03 beyond), and an observation whose notification goes
 * unacknowledged ends once its retransmissions are spent (coap-unacknowledged.ts).
 *
 * A CoAP connection is a session entity (protocol `coap`, a clean session) of the device named
 * by the clientid, whose password is the device token; its topics live in the device's
 * namespace on the same broker as MQTT's, and observes make subscription entities as MQTT
 * subscriptions do. Each answer leaves once its effect is stored. A session that another
 * connection takes over (an MQTT CONNECT with the same clientId) is forgotten here.
 */
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import * as coap from 'coap'
import type { IncomingMessage, ObserveWriteStream, OutgoingMessage } from 'coap'
import type { NamedOption, ParsedPacket } from 'coap-packet'
import { Counter } from 'prom-client'
import type { Logger } from 'pino'
import type { AedesPublishPacket } from 'aedes'
import type { EmbeddedBroker } from '../embedded-broker.js'
import type { HubConfig } from '../../config.js'
import { PayloadError } from '../../domain/device-properties.js'
import { connectedEvent } from '../../domain/lifecycle-event.js'
import { newIncarnation } from '../../domain/incarnation.js'
import { deviceMountpoint, mountTopic } from '../../domain/namespace.js'
import type { DisconnectReason, SessionRecord } from '../../domain/session.js'
import type { Upstream } from '../../devices/upstream.js'
import type { HubMetrics, RejectReason } from '../../observability/metrics.js'
import type { DeviceDirectory } from '../../registry/device-directory.js'
import type { SessionRegistry } from '../../registry/registry.js'
import type { AdmissionPolicy, Refusal } from '../../admission/admission-policy.js'
import { portInUse } from '../../port-in-use.js'
import { checkTopic } from '../../admission/topic-rules.js'
import { admits, charge, currentSecond, freeFrom, freshUse, heldBy, inboundLimits, type InboundLimits, type RateUse } from '../inbound-rate.js'
import { Block1Reassembly, DEFAULT_BLOCK1_LIMITS, type BodyAdmitted, type BodyRefusal } from './coap-block1.js'
import { BlockOptionError, blockValue, MAX_BLOCK_SIZE, readBlock, sliceBlock, uintValue, type BlockRequest } from './coap-blocks.js'
import { diagnostic } from './coap-diagnostic.js'
import { CoapInbound, peerOf } from './coap-inbound.js'
import { endStreamWith, endUnaltered, lastObserveNumber, nextNotificationConfirmable, piggybackTimedOut, replaceStreamOptions, requestPacket, roundExchangeLifetime, serverSocket, watchStreamSends } from './coap-internals.js'
import { qosOf, readCoapRequest, readPacketRequest, type CoapRequest } from './coap-request.js'
import { UnacknowledgedNotifications } from './coap-unacknowledged.js'

/** What one notification sent: its later blocks are read from it (RFC 7959 §2.6). */
interface Representation {
  payload: Buffer
  etag: Buffer
  /** The Observe number the notification carried. */
  observe: number
}

/** One live observation: a broker subscription feeding a CoAP observe stream. */
interface Observer {
  stream: ObserveWriteStream
  deliver: (packet: AedesPublishPacket, done: () => void) => void
  /** The token of the observe request; its notifications carry it. */
  token: Buffer
  /** Notifications larger than this go block-wise: 1,024, or less if the observe asked (Block2). */
  blockSize: number
  /** The latest notification, until a newer one replaces it. */
  latest?: Representation
}

/** `RateUse`: its requests on /ps held to the MQTT connection's rate (inbound-rate.ts). */
interface CoapConnection extends RateUse {
  clientId: string
  deviceId: string
  token: string
  incarnation: string
  lastHeard: number
  /** By broker topic. */
  observers: Map<string, Observer>
  /** Observes being stored: with `observers`, what counts against maxSubscriptionsPerSession. */
  observesPending: number
}

/**
 * A message larger than this is not notified: it would take a device over 64 blocks (of 1,024
 * bytes, or more of smaller ones) to fetch, and the gateway keeps the latest one per observation.
 */
const MAX_NOTIFICATION_BYTES = 64 * 1024

/**
 * Confirmable notifications of one observation that may wait for their ACK at once. Each waiting
 * one is held (node-coap keeps it to retransmit, the gateway times it) until its ACK or for
 * MAX_TRANSMIT_WAIT (93 s): an observer that answers nothing, of a topic its own device floods
 * at the rate a connection may publish, would make the hub hold tens of thousands. RFC 7252 §4.7
 * asks one at a time of a client (NSTART 1); a window of 32 lets a device on a slow link take a
 * burst. Past it, a message is not notified, and counted (`backlog`), as the MQTT side drops for
 * a client that does not read.
 */
const MAX_UNACKNOWLEDGED_NOTIFICATIONS = 32

/**
 * The receive buffer asked for the gateway's socket: the kernel default (about 208 KiB, some 190
 * datagrams) drops bursts of requests. Linux grants at most net.core.rmem_max.
 */
const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

/** Options a block-wise notification sets on its stream's packet; a later notification clears them. */
const BLOCK_OPTIONS: ReadonlySet<string> = new Set(['Block2', 'Size2', 'ETag'])

class CoapError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly reason: RejectReason,
    /** Seconds the device is to wait before it asks again (the answer's Max-Age, RFC 8516). */
    readonly retryAfter?: number
  ) {
    super(message)
  }
}

/** The request codes of RFC 7252 §12.1.1 that publish, as coap-packet reads them. */
const POST = '0.02'
const PUT = '0.03'

function noSuchResource(path: readonly string[]): CoapError {
  return new CoapError('4.04', `no resource /${path.join('/')}: use /mqtt/connection or /ps/{topic}`, 'bad_coap_request')
}

function notAllowedOnPs(method: string): CoapError {
  return new CoapError('4.05', `${method} is not allowed on /ps: POST or PUT publishes, GET with Observe subscribes`, 'bad_coap_request')
}

export class CoapGateway {
  private server: ReturnType<typeof coap.createServer> | undefined
  private inbound: CoapInbound | undefined
  private readonly connections = new Map<string, CoapConnection>()
  private sweepTimer: NodeJS.Timeout | undefined
  private port: number | undefined
  private lastEtag = 0
  private readonly notificationsDropped: Counter<'reason'>
  private unacknowledged: UnacknowledgedNotifications<Observer> | undefined
  /** Undefined: no rate (IOTHUB_MAX_MESSAGE_RATE and IOTHUB_MAX_BYTE_RATE both 0). */
  private readonly limits: InboundLimits | undefined

  constructor(
    private readonly registry: SessionRegistry,
    private readonly devices: DeviceDirectory,
    private readonly upstream: Upstream,
    private readonly admission: AdmissionPolicy,
    private readonly broker: EmbeddedBroker,
    /** Closes whatever connection holds a client id, and discards its session: a device takes its own id back. */
    private readonly takeBack: (clientId: string) => Promise<void>,
    private readonly config: HubConfig,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {
    this.limits = inboundLimits(config.maxMessageRate, config.maxByteRate)
    this.notificationsDropped = new Counter({
      name: 'iothub_coap_notifications_dropped_total',
      help: 'Messages a CoAP observer was not notified of, by reason (too_large: over 64 KiB; backlog: 32 of its notifications awaiting their ACK)',
      labelNames: ['reason'] as const,
      registers: [metrics.registry]
    })
    registry.observe((before, after) => this.sessionChanged(before, after))
  }

  get listening(): boolean {
    return this.port !== undefined
  }

  async listen(): Promise<AddressInfo> {
    // RFC 7252's transmission parameters from ACK_TIMEOUT (node-coap keeps them process-wide);
    // MAX_LATENCY scaled with it, so a shorter timeout also drops a silent observer sooner
    const ackTimeout = this.config.coapAckTimeout / 1000
    coap.updateTiming({ ackTimeout, ackRandomFactor: 1.5, maxRetransmit: 4, maxLatency: ackTimeout * 50 })
    roundExchangeLifetime()
    // node-coap answers with an empty ACK, then separately (a confirmable message), when the
    // handler takes longer than piggybackReplyMs (50 ms by default). Answers leave only once their
    // effect is stored, which under load takes longer: piggybacking them for up to half the
    // client's ACK_TIMEOUT (taken to be the gateway's) saves a message and an exchange each, and
    // still answers before the client retransmits.
    const piggybackReplyMs = Math.min(1000, this.config.coapAckTimeout / 2)
    const server = coap.createServer({ reuseAddr: false, piggybackReplyMs }, (req, res) => this.handle(req, res))
    this.server = server
    const host = this.config.coapHost
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        reject(error.code === 'EADDRINUSE' ? portInUse('CoAP', host, this.config.coapPort, 'IOTHUB_COAP_PORT / --coap-port') : error)
      )
      server.listen(this.config.coapPort, host, () => resolve())
    })
    const socket = serverSocket(server)
    try {
      socket.setRecvBufferSize(RECEIVE_BUFFER_BYTES)
    } catch (error) {
      this.log.debug({ err: (error as Error).message }, 'CoAP receive buffer not enlarged')
    }
    this.log.debug({ asked: RECEIVE_BUFFER_BYTES, bytes: socket.getRecvBufferSize() }, 'CoAP receive buffer')
    const lifetimeMs = coap.parameters.exchangeLifetime * 1000
    const block1 = new Block1Reassembly({ ...DEFAULT_BLOCK1_LIMITS, maxBody: this.config.maxPacketSize, lifetimeMs }, (packet) => this.admitBody(packet))
    const unacknowledged = new UnacknowledgedNotifications<Observer>(coap.parameters.maxTransmitWait * 1000)
    this.unacknowledged = unacknowledged
    try {
      this.inbound = CoapInbound.install(server, block1, {
        reject: (reason) => this.metrics.reject(reason),
        replied: (peer, messageId) => unacknowledged.replied(peer, messageId),
        refused: (code, why) => this.log.debug({ code, why }, 'CoAP request refused by node-coap')
      }, lifetimeMs)
    } catch (error) {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      this.server = undefined
      throw error
    }
    this.port = socket.address().port
    this.sweepTimer = setInterval(() => {
      this.endSilentConnections()
      this.inbound?.expire()
    }, Math.min(1000, (this.config.coapHeartbeat * 1000) / 4))
    this.sweepTimer.unref()
    return { address: host, family: host.includes(':') ? 'IPv6' : 'IPv4', port: this.port }
  }

  /** Ends every CoAP session (`server_shutdown`), then closes the socket. */
  async stop(): Promise<void> {
    clearInterval(this.sweepTimer)
    await Promise.all([...this.connections.values()].map((c) => this.end(c, 'server_shutdown')))
    const server = this.server
    this.server = undefined
    this.inbound = undefined
    this.port = undefined
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  private handle(req: IncomingMessage, res: OutgoingMessage | ObserveWriteStream): void {
    res.on('error', (error: Error) => this.log.warn({ err: error.message }, 'CoAP response failed'))
    if (requestPacket(req).reset) return
    const inbound = this.inbound
    // copies of this request (retransmissions) are not handled while it is
    const { requestBytes, block1 } = inbound?.started(req, () => emptyAckSent(req, res)) ?? { requestBytes: 0 }
    // RFC 7959 §2.3: the answer to a body sent block-wise carries the Block1 of its last block
    if (block1 && !isObserveStream(res)) res.setOption('Block1', block1)
    this.route(req, res)
      .catch((error: unknown) => {
        const known = error instanceof CoapError
        if (known) this.metrics.reject(error.reason)
        else this.log.error({ err: (error as Error).message }, 'CoAP request failed')
        const code = known ? error.code : '5.03'
        // the internal error's text stays in the log: the device gets a fixed diagnostic
        const message = known ? error.message : 'not recorded; try again'
        const payload = diagnostic(message, requestBytes, requestPacket(req).token.length)
        const retryAfter = known ? error.retryAfter : undefined
        // an error answer to an observe is no notification: sent without the stream's Observe (RFC 7641 §4.2)
        if (isObserveStream(res)) return endStreamWith(res, code, retryAfter === undefined ? [] : [{ name: 'Max-Age', value: uintValue(retryAfter) }], payload ?? Buffer.alloc(0))
        if (retryAfter !== undefined) res.setOption('Max-Age', retryAfter)
        res.code = code
        res.end(payload)
      })
      .finally(() => inbound?.finished(req))
  }

  private async route(req: IncomingMessage, res: OutgoingMessage | ObserveWriteStream): Promise<void> {
    const request = readCoapRequest(req)
    const [first, second, ...rest] = request.path
    if (first === 'mqtt' && second === 'connection' && rest.length === 0) return this.connection(req, request, res as OutgoingMessage)
    if (first === 'ps' && second !== undefined) {
      const topic = [second, ...rest].join('/')
      // POST is EMQX 5's publish; PUT publishes too, as the users (and EMQX 4's CoAP plugin) expect
      if (req.method === 'POST' || req.method === 'PUT') return this.publish(req, request, topic, res as OutgoingMessage)
      if (req.method === 'GET') return this.observe(req, request, topic, res)
      throw notAllowedOnPs(String(req.method))
    }
    throw noSuchResource(request.path)
  }

  /**
   * Whether a body sent block-wise is one the gateway takes; coap-block1.ts asks before it stores
   * a block. Only a publish has a body, so it is what `publish` checks of a whole request — the
   * resource, the connection's token, the topic, the QoS, the connection's rate (checked, not
   * charged: the whole body is charged once published) — so that a body no publish would take
   * holds no buffer while its blocks arrive. The body is its connection's, whatever address and
   * port its blocks come from: the bounds on half-received bodies are per connection.
   */
  private admitBody(packet: ParsedPacket): BodyAdmitted | BodyRefusal {
    const request = readPacketRequest(packet)
    const [first, second, ...rest] = request.path
    try {
      const onPs = first === 'ps' && second !== undefined
      const onConnection = first === 'mqtt' && second === 'connection' && rest.length === 0
      if (!onPs && !onConnection) throw noSuchResource(request.path)
      // RFC 7252 §5.4.1: Block1 is a critical option, which no other request than a publish takes
      if (!onPs || (packet.code !== POST && packet.code !== PUT)) throw new CoapError('4.02', 'Block1 is taken only by a publish (POST or PUT on /ps/{topic})', 'bad_coap_request')
      const connection = this.authorized(request.query)
      connection.lastHeard = Date.now()
      this.refuseOverRate(connection)
      this.brokerTopic(connection, [second, ...rest].join('/'), false)
      if (qosOf(request.query, packet.confirmable) === null) throw new CoapError('4.00', 'qos must be 0, 1 or 2', 'bad_coap_request')
      return { owner: connection.clientId }
    } catch (error) {
      if (error instanceof CoapError) return error
      throw error
    }
  }

  private async connection(req: IncomingMessage, request: CoapRequest, res: OutgoingMessage): Promise<void> {
    if (req.method === 'POST') {
      const token = await this.connect(req, request.query)
      res.code = '2.01'
      res.end(token)
      return
    }
    if (req.method !== 'PUT' && req.method !== 'DELETE') throw new CoapError('4.05', `${String(req.method)} is not allowed on /mqtt/connection`, 'bad_coap_request')
    const connection = this.authorized(request.query)
    if (req.method === 'PUT') {
      connection.lastHeard = Date.now()
      res.code = '2.04'
      res.end()
      return
    }
    await this.end(connection, 'client_disconnect')
    res.code = '2.02'
    res.end()
  }

  /**
   * Holds a connection's requests on /ps (publishes, observes and their cancels) to the rate an
   * MQTT connection is held to. UDP cannot be left unread as a TCP socket can: a request over it
   * is answered 4.29 Too Many Requests, with the seconds to wait as its Max-Age (RFC 8516), and
   * changes nothing.
   */
  private withinRate(connection: CoapConnection, bytes: number): void {
    this.refuseOverRate(connection)
    if (this.limits) charge(connection, bytes)
  }

  /** Throws the 4.29 of a connection over its rate; charges nothing. */
  private refuseOverRate(connection: CoapConnection): void {
    const limits = this.limits
    if (!limits) return
    const now = currentSecond()
    if (admits(connection, limits, now)) return
    const wait = freeFrom(connection, limits) - now
    const limit = heldBy(connection, limits) === 'messages' ? `${limits.messagesPerSecond} requests` : `${limits.bytesPerSecond} bytes`
    throw new CoapError('4.29', `over ${limit} a second: ask again in ${wait} s`, 'rate_limited', wait)
  }

  /** Admits a device (admission-policy.ts) and records its session; resolves with the connection's token. */
  private async connect(req: IncomingMessage, query: Map<string, string>): Promise<string> {
    const clientId = query.get('clientid') ?? ''
    const admission = await this.admission.admit(
      { protocol: 'coap', clientId, username: query.get('username') || undefined, password: query.get('password'), peer: req.rsinfo.address },
      { canWait: true, canReclaim: true }
    )
    if (!admission.ok) {
      // a wait (the login throttle, flapping) is said as the answer's Max-Age, as RFC 8516 asks of a 4.29
      const retryAfter = admission.retryAfterMs === undefined ? undefined : Math.ceil(admission.retryAfterMs / 1000)
      throw new CoapError(COAP_CODE_OF_REFUSAL[admission.reason] ?? '4.01', admission.message, admission.reason, retryAfter)
    }
    try {
      return await this.connectAdmitted(req, query, clientId, admission.reclaim)
    } finally {
      admission.release()
    }
  }

  private async connectAdmitted(req: IncomingMessage, query: Map<string, string>, clientId: string, reclaim: boolean): Promise<string> {
    if (reclaim) await this.takeBack(clientId)
    const connection: CoapConnection = {
      clientId,
      deviceId: clientId,
      token: randomBytes(8).toString('hex'),
      incarnation: newIncarnation(this.config.node),
      lastHeard: Date.now(),
      observers: new Map(),
      observesPending: 0,
      ...freshUse(currentSecond())
    }
    const result = await this.registry.apply(
      connectedEvent(
        {
          clientId,
          incarnation: connection.incarnation,
          protocol: 'coap',
          deviceId: clientId,
          username: query.get('username') || null,
          mountpoint: deviceMountpoint(clientId),
          node: this.config.node
        },
        // CoAP has no session to keep: each connect starts clean, and ends with its connection
        { peerHost: req.rsinfo.address, peerPort: req.rsinfo.port, sockPort: this.port ?? null, keepalive: this.config.coapHeartbeat, protoVer: 1, cleanStart: true, expiryInterval: 0 }
      )
    )
    if (!result.applied) throw new Error(`connect not recorded: ${result.why}`)
    // a connection of this client id it replaced (MQTT or CoAP) was stepped down by the carrier
    this.connections.set(clientId, connection)
    return connection.token
  }

  private async publish(req: IncomingMessage, request: CoapRequest, topic: string, res: OutgoingMessage): Promise<void> {
    const connection = this.authorized(request.query)
    connection.lastHeard = Date.now()
    this.withinRate(connection, req.payload.length + Buffer.byteLength(topic))
    const brokerTopic = this.brokerTopic(connection, topic, false)
    const qos = qosOf(request.query, requestPacket(req).confirmable)
    if (qos === null) throw new CoapError('4.00', 'qos must be 0, 1 or 2', 'bad_coap_request')
    if (req.payload.length > this.config.maxPacketSize) throw new CoapError('4.13', `payload larger than ${this.config.maxPacketSize} bytes`, 'packet_too_large')
    // the sender, so its retained messages count against its device's limit
    const message = { topic: brokerTopic, payload: req.payload, qos, retain: request.query.get('retain') === 'true', clientId: connection.clientId }
    const route = () => this.broker.publish(message)
    if (this.upstream.handles(topic)) {
      try {
        // its device deleted meanwhile: routed as any publish, nothing stored
        if (!(await this.upstream.receive(connection.deviceId, topic, brokerTopic, req.payload, route))) await route()
      } catch (error) {
        if (error instanceof PayloadError) throw new CoapError('4.00', error.message, 'bad_payload')
        throw error
      }
    } else {
      await route()
    }
    res.code = '2.04'
    res.end()
  }

  private async observe(req: IncomingMessage, request: CoapRequest, topic: string, res: OutgoingMessage | ObserveWriteStream): Promise<void> {
    const connection = this.authorized(request.query)
    connection.lastHeard = Date.now()
    this.withinRate(connection, Buffer.byteLength(topic))
    const brokerTopic = this.brokerTopic(connection, topic, true)
    const observe = req.headers.Observe
    const block = requestedBlock(req)
    // A later block of a notification (RFC 7959 §2.6): a GET with Block2 and without Observe; or
    // with Observe 0 and NUM > 0, as node-coap's client asks — a block is never observed (§2.6:
    // "the Block2 Option does not provide a way to observe a single block"), so neither
    // subscribes. A GET with Observe 0 and Block2 NUM 0 is an observe asking for a block size.
    if (block && (observe === undefined || (observe === 0 && block.num > 0))) {
      return this.sendBlock(connection, brokerTopic, req, block, res)
    }
    if (observe === 1 || observe === undefined) {
      if (observe === undefined) throw new CoapError('4.00', 'GET /ps needs Observe: 0 subscribes, 1 unsubscribes', 'bad_coap_request')
      await this.unsubscribe(connection, brokerTopic)
      const reply = res as OutgoingMessage
      reply.code = '2.05'
      reply.end()
      return
    }
    if (!isObserveStream(res)) throw new CoapError('4.00', 'Observe must be 0 or 1', 'bad_coap_request')
    const qos = qosOf(request.query, requestPacket(req).confirmable)
    if (qos === null) throw new CoapError('4.00', 'qos must be 0, 1 or 2', 'bad_coap_request')
    // a repeated subscribe replaces the observation it repeats
    const old = connection.observers.get(brokerTopic)
    // RFC 7252 4.03: the request is understood but not allowed, and asking again will not help
    // until the device cancels an observation (RFC 8516's 4.29 is for a rate, not a quota)
    const max = this.config.maxSubscriptionsPerSession
    if (!old && connection.observers.size + connection.observesPending >= max) {
      throw new CoapError('4.03', `at most ${max} observations per connection: cancel one first`, 'too_many_subscriptions')
    }
    if (old) this.stopObserver(connection, brokerTopic, old)
    connection.observesPending++
    const result = await this.registry
      .apply({ kind: 'subscribed', clientId: connection.clientId, incarnation: connection.incarnation, at: Date.now(), subscriptions: [{ topic: brokerTopic, qos }] })
      .finally(() => connection.observesPending--)
    if (!result.applied) throw new CoapError('4.01', 'the connection was replaced or closed', 'not_authorized')
    const stream = res
    const observer: Observer = {
      stream,
      token: requestPacket(req).token,
      // RFC 7959 §2.6: the block size an observe asks for applies to all its notifications
      blockSize: Math.min(block?.size ?? MAX_BLOCK_SIZE, MAX_BLOCK_SIZE),
      deliver: (packet: AedesPublishPacket, done: () => void) => {
        const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
        if (payload.length > MAX_NOTIFICATION_BYTES) {
          this.notificationsDropped.inc({ reason: 'too_large' })
          this.log.warn({ clientId: connection.clientId, topic: packet.topic, bytes: payload.length, max: MAX_NOTIFICATION_BYTES }, 'message too large for a CoAP notification, not sent')
          return done()
        }
        if ((this.unacknowledged?.pendingOf(observer) ?? 0) >= MAX_UNACKNOWLEDGED_NOTIFICATIONS) {
          this.notificationsDropped.inc({ reason: 'backlog' })
          this.log.debug({ clientId: connection.clientId, topic: packet.topic }, 'CoAP observer has not acknowledged its last notifications: message not notified')
          return done()
        }
        this.notify(observer, payload)
        done()
      }
    }
    const deliver = observer.deliver
    connection.observers.set(brokerTopic, observer)
    this.watchAcknowledgements(connection, brokerTopic, observer, peerOf(req.rsinfo))
    // the observer stopped answering (RST, or confirmable notifications never acknowledged)
    stream.once('close', () => {
      if (connection.observers.get(brokerTopic) !== observer) return
      void this.unsubscribe(connection, brokerTopic).catch((error: Error) => this.log.warn({ err: error.message }, 'CoAP observer not removed'))
    })
    await new Promise<void>((resolve) => this.broker.aedes.subscribe(brokerTopic, deliver, () => resolve()))
    stream.write('') // 2.05 with Observe: the subscription is in place
  }

  /**
   * Follows the observer's confirmable notifications: one that is neither acknowledged nor reset
   * within MAX_TRANSMIT_WAIT ends the observation and deletes its subscription entity (RFC 7641
   * §4.5). The connection itself stays: its heartbeats decide that.
   */
  private watchAcknowledgements(connection: CoapConnection, brokerTopic: string, observer: Observer, peer: string): void {
    const unacknowledged = this.unacknowledged
    if (!unacknowledged) return
    // the message id of a notification is drawn as node-coap sends it
    watchStreamSends(observer.stream, (sent) => {
      if (!sent.confirmable || sent.ack || sent.messageId === undefined) return
      unacknowledged.sent(peer, sent.messageId, observer, () => {
        if (connection.observers.get(brokerTopic) !== observer) return
        this.log.info({ clientId: connection.clientId, topic: brokerTopic }, 'CoAP observer did not acknowledge a notification: observation ended')
        this.unsubscribe(connection, brokerTopic).catch((error: Error) => this.log.warn({ err: error.message }, 'CoAP observer not removed'))
      })
    })
  }

  /**
   * Sends one message to an observer: whole when it fits its block size (as before blocks
   * existed: no block options), else its first block with Block2 (M set), Size2 and a new ETag.
   */
  private notify(observer: Observer, payload: Buffer): void {
    const stream = observer.stream
    // notifications are confirmable, so a silent observer is noticed (RFC 7252 retransmission)
    nextNotificationConfirmable(stream)
    const representation: Representation = { payload, etag: this.nextEtag(), observe: 0 }
    if (payload.length <= observer.blockSize) {
      // the stream's packet keeps its options from one message to the next
      replaceStreamOptions(stream, BLOCK_OPTIONS)
      stream.write(payload)
    } else {
      replaceStreamOptions(stream, BLOCK_OPTIONS, [
        { name: 'ETag', value: representation.etag },
        { name: 'Block2', value: blockValue(0, true, observer.blockSize) },
        { name: 'Size2', value: uintValue(payload.length) }
      ])
      stream.write(payload.subarray(0, observer.blockSize))
    }
    representation.observe = lastObserveNumber(stream) // the number write() just gave the notification
    observer.latest = representation
  }

  /**
   * Answers a GET for a block of the latest notification on a topic the connection observes. A
   * client that asks after a newer notification replaced the one it is reading gets the newer
   * one's block, with its ETag, by which it learns (RFC 7959 §2.6). A block never subscribes.
   */
  private sendBlock(connection: CoapConnection, brokerTopic: string, req: IncomingMessage, block: BlockRequest, res: OutgoingMessage | ObserveWriteStream): void {
    const observer = connection.observers.get(brokerTopic)
    const representation = observer?.latest
    if (!observer || !representation) throw new CoapError('4.04', 'no notification on this topic to read blocks of: observe it first', 'bad_coap_request')
    const slice = sliceBlock(representation.payload, block)
    if (!slice) {
      throw new CoapError('4.02', `block ${block.num} of ${block.size} bytes starts past the end of the ${representation.payload.length}-byte notification`, 'bad_coap_request')
    }
    const options: NamedOption[] = [
      { name: 'ETag', value: representation.etag },
      { name: 'Block2', value: blockValue(block.num, slice.more, block.size) },
      { name: 'Size2', value: uintValue(representation.payload.length) }
    ]
    // node-coap's client fetches the later blocks by sending its observe again, token and all,
    // with Block2, and hands the reassembled payload on only if the last answer carries an
    // Observe number newer than the last notification's. For such a repeat (RFC 7641 §4.1: the
    // observation stays as it is) the answer bears the number of the notification it completes.
    const token = requestPacket(req).token
    if (req.headers.Observe === 0 && token.length > 0 && token.equals(observer.token)) {
      options.push({ name: 'Observe', value: uintValue(representation.observe) })
    }
    sendAsIs(res, '2.05', options, slice.block)
  }

  /** Each notification's representation gets its own ETag (4 bytes of a counter: unique until it wraps). */
  private nextEtag(): Buffer {
    this.lastEtag = (this.lastEtag + 1) % 2 ** 32
    const etag = Buffer.alloc(4)
    etag.writeUInt32BE(this.lastEtag)
    return etag
  }

  private async unsubscribe(connection: CoapConnection, brokerTopic: string): Promise<void> {
    const observer = connection.observers.get(brokerTopic)
    if (observer) this.stopObserver(connection, brokerTopic, observer)
    if (this.connections.get(connection.clientId) !== connection) return
    await this.registry.apply({ kind: 'unsubscribed', clientId: connection.clientId, incarnation: connection.incarnation, at: Date.now(), topics: [brokerTopic] })
  }

  private stopObserver(connection: CoapConnection, brokerTopic: string, observer: Observer): void {
    connection.observers.delete(brokerTopic)
    this.unacknowledged?.forget(observer)
    this.broker.aedes.unsubscribe(brokerTopic, observer.deliver, () => undefined)
    // ends the stream without a message: the client learns it when notifications stop, or
    // when its next request finds the connection gone (EMQX tells it nothing either)
    if (!observer.stream.writableEnded) observer.stream.end()
  }

  private dropObservers(connection: CoapConnection): void {
    for (const [topic, observer] of connection.observers) this.stopObserver(connection, topic, observer)
  }

  /**
   * Ends the CoAP connection of `clientId` as an operator's kick (EMQX's `DELETE /clients/{id}`
   * kicks gateway clients too); false when no CoAP connection holds it. Resolves once stored.
   */
  /** Ends the client's connection (`kicked` by the API, or `taken_over` by its device); false when there is none. */
  async kick(clientId: string, reason: 'kicked' | 'taken_over' = 'kicked'): Promise<boolean> {
    const connection = this.connections.get(clientId)
    if (!connection) return false
    await this.end(connection, reason)
    return true
  }

  /**
   * The registry handed this session to a newer connection (a takeover, see StepDown): its
   * CoAP connection, if it is that one, is forgotten — its token stops working (4.01), its
   * observations stop. The registry has deleted their subscription entities already.
   */
  stepDown(session: SessionRecord): void {
    const connection = this.connections.get(session.clientId)
    if (!connection || connection.incarnation !== session.incarnation) return
    this.connections.delete(session.clientId)
    this.dropObservers(connection)
  }

  private async end(connection: CoapConnection, reason: DisconnectReason): Promise<void> {
    if (this.connections.get(connection.clientId) === connection) this.connections.delete(connection.clientId)
    this.dropObservers(connection)
    await this.registry.apply({ kind: 'disconnected', clientId: connection.clientId, incarnation: connection.incarnation, at: Date.now(), reason })
  }

  /**
   * A CoAP connection whose session the registry ended without the gateway (its expiry, the
   * end of a session listed but not held) is forgotten as a stepped-down one is. (A session
   * handed to a newer connection comes as a step-down, from the carrier.)
   */
  private sessionChanged(before: SessionRecord | undefined, after: SessionRecord | null): void {
    if (before?.protocol !== 'coap') return
    const connection = this.connections.get(before.clientId)
    if (!connection || connection.incarnation !== before.incarnation || after !== null) return
    this.connections.delete(before.clientId)
    this.dropObservers(connection)
  }

  /** No heartbeat (nor any request) for 1.5 × the interval: the session ends, as EMQX ends it. */
  private endSilentConnections(): void {
    const deadline = Date.now() - this.config.coapHeartbeat * 1500
    for (const connection of this.connections.values()) {
      if (connection.lastHeard >= deadline) continue
      this.end(connection, 'keepalive_timeout').catch((error: Error) => this.log.error({ err: error.message, clientId: connection.clientId }, 'CoAP timeout not recorded'))
    }
  }

  /** The connection the query's clientid and token name. */
  private authorized(query: Map<string, string>): CoapConnection {
    const clientId = query.get('clientid')
    const token = query.get('token')
    if (!clientId || !token) throw new CoapError('4.01', 'clientid and token are required (from POST /mqtt/connection)', 'not_authorized')
    const connection = this.connections.get(clientId)
    if (!connection || connection.token !== token) throw new CoapError('4.01', 'no connection with this clientid and token', 'not_authorized')
    return connection
  }

  /** The broker topic of a device's topic: inside its namespace, within the topic limits. */
  private brokerTopic(connection: CoapConnection, topic: string, wildcardsAllowed: boolean): string {
    const problem = checkTopic(topic, this.config)
    if (problem) throw new CoapError('4.00', problem.message, problem.reason)
    if (topic.startsWith('$')) throw new CoapError('4.03', 'topics beginning with $ are outside the device namespace', 'outside_namespace')
    if (!wildcardsAllowed && /[+#]/.test(topic)) throw new CoapError('4.00', 'a publish topic cannot hold + or #', 'bad_topic')
    return mountTopic(deviceMountpoint(connection.deviceId), topic)
  }
}

function isObserveStream(res: OutgoingMessage | ObserveWriteStream): res is ObserveWriteStream {
  return res instanceof coap.ObserveWriteStream
}

/**
 * Whether node-coap has acknowledged a confirmable request with an empty ACK, its piggyback delay
 * past (it then makes the answer a confirmable message of its own: ack cleared). An observe
 * stream's first message is always the ACK.
 */
function emptyAckSent(req: IncomingMessage, res: OutgoingMessage | ObserveWriteStream): boolean {
  if (isObserveStream(res) || !requestPacket(req).confirmable) return false
  return piggybackTimedOut(res)
}

/** The block a request's Block2 option asks for, if it has one. */
function requestedBlock(req: IncomingMessage): BlockRequest | undefined {
  const option = requestPacket(req).options.find((o) => o.name === 'Block2')
  if (!option) return undefined
  try {
    return readBlock(Buffer.isBuffer(option.value) ? option.value : Buffer.from(option.value), 'Block2')
  } catch (error) {
    if (error instanceof BlockOptionError) throw new CoapError(error.code, error.message, 'bad_coap_request')
    throw error
  }
}

/**
 * Sends `res` as one message with exactly these options and payload. node-coap's own ways would
 * change it: its server's OutMessage.end cuts the payload again by the request's Block2 option
 * (taking the block for the whole representation) and sets an ETag of its own, and an observe
 * stream's write adds the stream's next Observe number.
 */
function sendAsIs(res: OutgoingMessage | ObserveWriteStream, code: string, options: NamedOption[], payload: Buffer): void {
  if (isObserveStream(res)) {
    endStreamWith(res, code, options, payload)
    return
  }
  res.code = code
  for (const o of options) res.setOption(o.name, o.value)
  endUnaltered(res, payload)
}

/** The CoAP answer to each refusal of a login; any other is 4.01 Unauthorized. */
const COAP_CODE_OF_REFUSAL: Partial<Record<Refusal['reason'], string>> = {
  bad_client_id: '4.00',
  login_throttled: '4.29',
  flapping: '4.29',
  too_many_sessions: '4.03'
}
