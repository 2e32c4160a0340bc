/**
 * The CoAP gateway of embedded mode, on UDP IOTHUB_COAP_PORT, speaking EMQX 5's CoAP gateway
 * *connection mode* so devices and docs written for EMQX work (README, "CoAP devices"):
 *
 * - `POST /mqtt/connection?clientid=&username=&password=` → 2.01, the connection's token as payload;
 * - `PUT /mqtt/connection?clientid=&token=` heartbeat → 2.04; `DELETE …` closes → 2.02;
 * - `POST /ps/{topic}?clientid=&token=` publishes → 2.04;
 * - `GET /ps/{topic}?clientid=&token=` with Observe 0 subscribes (each message a notification),
 *   with Observe 1 unsubscribes.
 *
 * A CoAP connection is a session entity (protocol `coap`, a clean session) of the device named
 * by the clientid, whose password is the device token; its topics live in the device's
 * namespace on the same broker as MQTT's, and observes make subscription entities as MQTT
 * subscriptions do. Each answer leaves once its effect is stored.
 */
import { randomBytes } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import * as coap from 'coap'
import type { IncomingMessage, ObserveWriteStream, OutgoingMessage } from 'coap'
import { parse as parseCoapPacket } from 'coap-packet'
import type { Logger } from 'pino'
import type { AedesPublishPacket } from 'aedes'
import type { EmbeddedBroker } from '../../brokers/embedded/embedded-broker.js'
import type { HubConfig } from '../../config.js'
import { PayloadError } from '../../domain/device-properties.js'
import { isValidDeviceId } from '../../domain/device.js'
import { newIncarnation } from '../../domain/incarnation.js'
import { deviceMountpoint, mountTopic } from '../../domain/namespace.js'
import type { DisconnectReason } from '../../domain/session.js'
import type { Upstream } from '../../devices/upstream.js'
import type { HubMetrics, RejectReason } from '../../observability/metrics.js'
import type { DeviceDirectory } from '../../registry/device-directory.js'
import type { SessionRegistry } from '../../registry/registry.js'
import { portInUse } from '../../port-in-use.js'
import { checkTopic } from '../topic-rules.js'
import { qosOf, readCoapRequest, type CoapRequest } from './coap-request.js'

/** One live observation: a broker subscription feeding a CoAP observe stream. */
interface Observer {
  stream: ObserveWriteStream
  deliver: (packet: AedesPublishPacket, done: () => void) => void
}

interface CoapConnection {
  clientId: string
  deviceId: string
  token: string
  incarnation: string
  lastHeard: number
  /** By broker topic. */
  observers: Map<string, Observer>
}

/** A notification larger than this does not fit one CoAP message (node-coap sends no Block2 on observe). */
const MAX_NOTIFICATION_BYTES = 1024

class CoapError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly reason: RejectReason
  ) {
    super(message)
  }
}

export class CoapGateway {
  private server: ReturnType<typeof coap.createServer> | undefined
  private readonly connections = new Map<string, CoapConnection>()
  private sweepTimer: NodeJS.Timeout | undefined
  private port: number | undefined

  constructor(
    private readonly registry: SessionRegistry,
    private readonly devices: DeviceDirectory,
    private readonly upstream: Upstream,
    private readonly broker: EmbeddedBroker,
    private readonly config: HubConfig,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {}

  get listening(): boolean {
    return this.port !== undefined
  }

  async listen(): Promise<AddressInfo> {
    // RFC 7252's transmission parameters from ACK_TIMEOUT (node-coap keeps them process-wide);
    // MAX_LATENCY scaled with it, so a shorter timeout also drops a silent observer sooner
    const ackTimeout = this.config.coapAckTimeout / 1000
    coap.updateTiming({ ackTimeout, ackRandomFactor: 1.5, maxRetransmit: 4, maxLatency: ackTimeout * 50 })
    // node-coap sizes its caches with exchangeLifetime × 1000 and needs a whole number of ms
    coap.parameters.exchangeLifetime = Math.ceil(coap.parameters.exchangeLifetime)
    const server = coap.createServer({ reuseAddr: false }, (req, res) => this.handle(req, res))
    this.server = server
    const host = this.config.coapHost
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        reject(error.code === 'EADDRINUSE' ? portInUse('CoAP', host, this.config.coapPort, 'IOTHUB_COAP_PORT / --coap-port') : error)
      )
      server.listen(this.config.coapPort, host, () => resolve())
    })
    const socket = server._sock as import('node:dgram').Socket
    // node-coap answers a datagram it cannot parse itself, without calling the handler: counted here
    socket.prependListener('message', (message: Buffer) => {
      try {
        parseCoapPacket(message)
      } catch {
        this.metrics.reject('malformed_packet')
      }
    })
    this.port = socket.address().port
    this.sweepTimer = setInterval(() => this.endSilentConnections(), Math.min(1000, (this.config.coapHeartbeat * 1000) / 4))
    this.sweepTimer.unref()
    return { address: host, family: host.includes(':') ? 'IPv6' : 'IPv4', port: this.port }
  }

  /** Ends every CoAP session (`server_shutdown`), then closes the socket. */
  async stop(): Promise<void> {
    clearInterval(this.sweepTimer)
    await Promise.all([...this.connections.values()].map((c) => this.end(c, 'server_shutdown')))
    const server = this.server
    this.server = undefined
    this.port = undefined
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  private handle(req: IncomingMessage, res: OutgoingMessage | ObserveWriteStream): void {
    res.on('error', (error: Error) => this.log.warn({ err: error.message }, 'CoAP response failed'))
    if ((req as IncomingMessage & { _packet: { reset?: boolean } })._packet.reset) return
    this.route(req, res).catch((error: unknown) => {
      const known = error instanceof CoapError
      if (known) this.metrics.reject(error.reason)
      else this.log.error({ err: (error as Error).message }, 'CoAP request failed')
      const code = known ? error.code : '5.03'
      const message = known ? error.message : 'not recorded (see the hub log); try again'
      if (isObserveStream(res)) res.statusCode = code
      else (res).code = code
      res.end(message)
    })
  }

  private async route(req: IncomingMessage, res: OutgoingMessage | ObserveWriteStream): Promise<void> {
    const request = readCoapRequest(req)
    const [first, second, ...rest] = request.path
    if (first === 'mqtt' && second === 'connection' && rest.length === 0) return this.connection(req, request, res as OutgoingMessage)
    if (first === 'ps' && second !== undefined) {
      const topic = [second, ...rest].join('/')
      if (req.method === 'POST') return this.publish(req, request, topic, res as OutgoingMessage)
      if (req.method === 'GET') return this.observe(req, request, topic, res)
      throw new CoapError('4.05', `${String(req.method)} is not allowed on /ps: POST publishes, GET with Observe subscribes`, 'bad_coap_request')
    }
    throw new CoapError('4.04', `no resource /${request.path.join('/')}: use /mqtt/connection or /ps/{topic}`, 'bad_coap_request')
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

  /** Authenticates a device and records its session; resolves with the connection's token. */
  private async connect(req: IncomingMessage, query: Map<string, string>): Promise<string> {
    const clientId = query.get('clientid') ?? ''
    if (clientId === '') throw new CoapError('4.00', 'clientid is required', 'bad_client_id')
    if (clientId.length > this.config.maxClientIdLength || !isValidDeviceId(clientId)) {
      throw new CoapError('4.00', 'clientid must name a device (letters, digits and . _ : @ - only)', 'bad_client_id')
    }
    // the device id is the clientid: CoAP usernames were too short to carry it
    if (this.config.auth === 'token' && !this.devices.authenticate(clientId, query.get('password'))) {
      throw new CoapError('4.01', 'not authorized: the password must be the device token', 'not_authorized')
    }
    const holder = this.registry.record(clientId)
    if (holder && holder.deviceId !== clientId) throw new CoapError('4.01', "client id is held by another device's session", 'not_authorized')
    const previous = this.connections.get(clientId)
    if (previous) this.dropObservers(previous) // the new connection takes the session over
    const connection: CoapConnection = {
      clientId,
      deviceId: clientId,
      token: randomBytes(8).toString('hex'),
      incarnation: newIncarnation(this.config.node),
      lastHeard: Date.now(),
      observers: new Map()
    }
    const result = await this.registry.apply({
      kind: 'connected',
      clientId,
      incarnation: connection.incarnation,
      at: Date.now(),
      protocol: 'coap',
      deviceId: clientId,
      username: query.get('username') || null,
      mountpoint: deviceMountpoint(clientId),
      node: this.config.node,
      peerHost: req.rsinfo.address,
      peerPort: req.rsinfo.port,
      sockPort: this.port ?? null,
      keepalive: this.config.coapHeartbeat,
      protoVer: 1,
      cleanStart: true,
      expiryInterval: 0
    })
    if (!result.applied) throw new Error(`connect not recorded: ${result.why}`)
    this.connections.set(clientId, connection)
    return connection.token
  }

  private async publish(req: IncomingMessage, request: CoapRequest, topic: string, res: OutgoingMessage): Promise<void> {
    const connection = this.authorized(request.query)
    connection.lastHeard = Date.now()
    const brokerTopic = this.brokerTopic(connection, topic, false)
    const qos = qosOf(request.query, req._packet.confirmable === true)
    if (qos === null) throw new CoapError('4.00', 'qos must be 0, 1 or 2', 'bad_coap_request')
    if (req.payload.length > this.config.maxPacketSize) throw new CoapError('4.13', `payload larger than ${this.config.maxPacketSize} bytes`, 'packet_too_large')
    const message = { topic: brokerTopic, payload: req.payload, qos, retain: request.query.get('retain') === 'true' }
    const route = () => this.broker.publish(message)
    if (this.upstream.handles(topic)) {
      try {
        await this.upstream.receive(connection.deviceId, topic, brokerTopic, req.payload, route)
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
    const brokerTopic = this.brokerTopic(connection, topic, true)
    const observe = req.headers.Observe
    if (observe === 1 || observe === undefined) {
      if (observe === undefined) throw new CoapError('4.00', 'GET /ps needs Observe: 0 subscribes, 1 unsubscribes', 'bad_coap_request')
      await this.unsubscribe(connection, brokerTopic)
      const reply = res as OutgoingMessage
      reply.code = '2.05'
      reply.end()
      return
    }
    if (!isObserveStream(res)) throw new CoapError('4.00', 'Observe must be 0 or 1', 'bad_coap_request')
    const qos = qosOf(request.query, req._packet.confirmable === true)
    if (qos === null) throw new CoapError('4.00', 'qos must be 0, 1 or 2', 'bad_coap_request')
    // a repeated subscribe replaces the observation it repeats
    const old = connection.observers.get(brokerTopic)
    if (old) this.stopObserver(connection, brokerTopic, old)
    const result = await this.registry.apply({ kind: 'subscribed', clientId: connection.clientId, incarnation: connection.incarnation, at: Date.now(), subscriptions: [{ topic: brokerTopic, qos }] })
    if (!result.applied) throw new CoapError('4.01', 'the connection was replaced or closed', 'not_authorized')
    const stream = res
    const deliver = (packet: AedesPublishPacket, done: () => void) => {
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
      if (payload.length > MAX_NOTIFICATION_BYTES) {
        this.log.warn({ clientId: connection.clientId, topic: packet.topic, bytes: payload.length }, 'message too large for a CoAP notification, not sent')
        return done()
      }
      // notifications are confirmable, so a silent observer is noticed (RFC 7252 retransmission)
      const outgoing = (stream as unknown as { _packet: { confirmable: boolean; ack: boolean } })._packet
      outgoing.confirmable = true
      outgoing.ack = false
      stream.write(payload)
      done()
    }
    const observer: Observer = { stream, deliver }
    connection.observers.set(brokerTopic, observer)
    // the observer stopped answering (RST, or confirmable notifications never acknowledged)
    stream.once('close', () => {
      if (connection.observers.get(brokerTopic) !== observer) return
      void this.unsubscribe(connection, brokerTopic).catch((error: Error) => this.log.warn({ err: error.message }, 'CoAP observer not removed'))
    })
    await new Promise<void>((resolve) => this.broker.aedes.subscribe(brokerTopic, deliver, () => resolve()))
    stream.write('') // 2.05 with Observe: the subscription is in place
  }

  private async unsubscribe(connection: CoapConnection, brokerTopic: string): Promise<void> {
    const observer = connection.observers.get(brokerTopic)
    if (observer) this.stopObserver(connection, brokerTopic, observer)
    if (this.connections.get(connection.clientId) !== connection) return
    await this.registry.apply({ kind: 'unsubscribed', clientId: connection.clientId, incarnation: connection.incarnation, at: Date.now(), topics: [brokerTopic] })
  }

  private stopObserver(connection: CoapConnection, brokerTopic: string, observer: Observer): void {
    connection.observers.delete(brokerTopic)
    this.broker.aedes.unsubscribe(brokerTopic, observer.deliver, () => undefined)
    // ends the stream without a message: the client learns it when notifications stop, or
    // when its next request finds the connection gone (EMQX tells it nothing either)
    if (!observer.stream.writableEnded) observer.stream.end()
  }

  private dropObservers(connection: CoapConnection): void {
    for (const [topic, observer] of connection.observers) this.stopObserver(connection, topic, observer)
  }

  private async end(connection: CoapConnection, reason: DisconnectReason): Promise<void> {
    if (this.connections.get(connection.clientId) === connection) this.connections.delete(connection.clientId)
    this.dropObservers(connection)
    await this.registry.apply({ kind: 'disconnected', clientId: connection.clientId, incarnation: connection.incarnation, at: Date.now(), reason })
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
