/**
 * The embedded MQTT broker: Aedes on a TCP listener (and, with a certificate, a TLS listener
 * beside it), its persistence on our store, its lifecycle reported by an `MqttLifecycle` (mqtt/). This is
 * what `npm start` runs.
 */
import type { EventEmitter } from 'node:events'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls'
import { Aedes, type AedesOptions, type Client, type PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import type { HubConfig } from '../config.js'
import type { DisconnectReason } from '../domain/session.js'
import type { HubMetrics } from '../observability/metrics.js'
import { connectedClient, routerWith, skipRouting } from './aedes-internals.js'
import { FirstLevelMatcher } from './first-level-matcher.js'
import { ConnectionGate, fitConnectionLimit, openFileLimit } from './connection-gate.js'
import type { StoreAedesPersistence } from './aedes-persistence.js'
import { InboundGuard } from './inbound-guard.js'
import { inboundLimits } from './inbound-rate.js'
import { localPortOf, stampLocalPort } from './socket-ports.js'
import type { PublishJournal } from './publish-journal.js'
import { portInUse } from '../port-in-use.js'
import type { BrokerMessage, BrokerPublisher } from '../devices/dispatcher.js'
import type { PassOutcome } from '../devices/left-pushes.js'
import type { TlsCredentials } from '../tls/tls-credentials.js'

/** A will as the CONNECT carried it, tagged with its publisher's mountpoint. */
export interface WillPacket {
  topic: string
  mountpoint?: string
}

/** A will stored for a client, as the persistence holds it (its client id set by `putWill`). */
export type StoredWill = PublishPacket & WillPacket & { clientId: string }

/** What the broker needs of whoever reports its clients' lifecycle (mqtt/mqtt-source.ts). */
export interface MqttLifecycle {
  /** Aedes' hooks: each client's CONNECT, SUBSCRIBE, PUBLISH and deliveries go through them. */
  hooks(): Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizeSubscribe' | 'authorizePublish' | 'authorizeForward'>
  /** Listens to the broker's events, once it is made. */
  attach(aedes: Aedes): void
  /** Takes a new client before it reads its first packet. */
  adopt(client: Client): void
  /**
   * A socket closed (any the broker accepted, adopted or not): told by the broker's one close
   * listener, which runs before Aedes' own.
   */
  socketClosed(socket: Socket): void
  /** Publishes Aedes must acknowledge but not route: refused ones, and upstream data already routed. */
  aedesMustNotRoute(packet: PublishPacket): boolean
  /**
   * Publishes a will the previous run stored for a client it lost, by the rules a live client's
   * will follows: refused, published, or kept (the store refused it) to be published again once
   * the store answers (`publishKeptWills`) or at the next start.
   */
  publishWillOfPreviousRun(will: StoredWill): Promise<'published' | 'refused' | 'kept'>
  /** Marks why a live connection is about to end. */
  endsBecause(client: Client, reason: DisconnectReason): void
  /** Resolves once the end of the client's connection is recorded. */
  whenEnded(client: Client): Promise<void>
  /** From now on, connections that close do so because the hub stops. */
  stop(): void
  /** Resolves once every lifecycle event handed to the registry is applied. */
  idle(): Promise<void>
}

/** What a watched socket keeps for its close listener (see EmbeddedBroker.track). */
const WATCHER = Symbol('iothub broker watching')
const AWAITED_PEER = Symbol('iothub awaited peer')

type WatchedSocket = Socket & { [WATCHER]: EmbeddedBroker; [AWAITED_PEER]?: string }

export class EmbeddedBroker implements BrokerPublisher {
  readonly aedes: Aedes
  private readonly server: Server
  /** MQTT over TLS; only with a configured certificate. */
  private readonly tlsServer: TlsServer | undefined
  private readonly sockets = new Set<Socket>()
  private readonly gate: ConnectionGate
  /** Admitted connections whose CONNECT has not arrived yet: their address, by peer (see admit). */
  private readonly awaitingConnect = new Map<string, string>()
  private readonly inboundGuard: InboundGuard
  /** Whether `publishKeptWills` is under way (the store may come back again meanwhile). */
  private publishingKeptWills = false
  /** Set once stop() begins: the hub pushes nothing more (publishPush). */
  private stopping = false
  /** The listeners' ports, noted once each listens (a listener on port 0 is given one); 0 before. */
  private readonly ports = { mqtt: 0, mqtts: 0 }

  constructor(
    private readonly config: HubConfig,
    private readonly persistence: StoreAedesPersistence,
    private readonly journal: PublishJournal,
    private readonly source: MqttLifecycle,
    private readonly metrics: HubMetrics,
    private readonly log: Logger,
    tls?: TlsCredentials
  ) {
    const hooks = source.hooks()
    this.inboundGuard = new InboundGuard(
      config.maxPacketSize,
      inboundLimits(config.maxMessageRate, config.maxByteRate),
      (socket, error) => {
        this.metrics.reject(error.name === 'PacketTooLargeError' ? 'packet_too_large' : 'malformed_packet')
        this.log.info({ peer: `${socket.remoteAddress}:${socket.remotePort}`, err: error.message }, 'connection refused')
      },
      (socket, by, first) => {
        this.metrics.readsHeld.inc({ limit: by })
        // once per connection: one sending too fast is held many times a second
        if (first) this.log.info({ peer: `${socket.remoteAddress}:${socket.remotePort}`, limit: by }, 'connection sends faster than its rate: its reading waits')
      }
    )
    const fileLimit = openFileLimit()
    const maxConnections = fitConnectionLimit(config.maxConnections, fileLimit)
    if (maxConnections < config.maxConnections) {
      // said once at start, not a fault: the default fits machines with a raised limit
      log.info({ configured: config.maxConnections, openFileLimit: fileLimit, maxConnections }, 'MQTT connections limited to fit the open-file limit (raise it with ulimit -n for more)')
    }
    this.gate = new ConnectionGate(maxConnections, config.maxConnectRate, config.maxPendingConnectionsPerAddress)
    this.aedes = new Aedes({
      id: `${config.node}#${Date.now().toString(36)}`,
      persistence,
      // routes by each filter's first level, where a device's mountpoint is (first-level-matcher.ts)
      mq: routerWith(new FirstLevelMatcher()),
      // our own, smaller limits are checked in the hooks and answer with SUBACK 0x80;
      // Aedes' hard ceiling only guards its matcher
      maxTopicLevels: 100,
      maxClientsIdLength: config.maxClientIdLength,
      connectTimeout: config.connectTimeout,
      // a socket that stays full this long is a slow consumer (see also slow-consumer-guard.ts)
      drainTimeout: config.slowConsumerTimeout,
      ...hooks,
      preConnect: (client, packet, done) => {
        this.connectArrived(peerOf(client.conn as Socket))
        hooks.preConnect!(client, packet, done)
      },
      // a client's QoS 1 PUBLISH is journaled before Aedes sends its PUBACK (publish-journal.ts)
      authorizePublish: (client, packet, done) =>
        hooks.authorizePublish!(client, packet, (error) => {
          if (error || client === null || packet.qos !== 1 || source.aedesMustNotRoute(packet)) return done(error)
          journal.accept(packet).then(() => done(null), done)
        }),
      published: (packet, _client, done) => {
        journal.settle(packet)
        done()
      }
    })
    source.attach(this.aedes)
    // A publish the source takes out of Aedes' hands — refused (MQTT 3.1.1 cannot refuse one
    // without closing the connection), or upstream data it routed itself — is acknowledged to
    // its sender but not routed (again) by Aedes.
    skipRouting(this.aedes, (packet) => source.aedesMustNotRoute(packet))
    ;(this.aedes as EventEmitter).on('error', (error: Error) => this.log.error({ err: error.message }, 'broker error'))
    this.server = createServer((socket) => {
      if (this.admit(socket, this.ports.mqtt)) this.accept(socket, this.ports.mqtt)
    })
    if (tls) {
      this.tlsServer = createTlsServer({ ...tls.options, handshakeTimeout: config.tlsHandshakeTimeout }, (socket) => {
        this.track(socket)
        this.accept(socket, this.ports.mqtts)
      })
      // gated as it connects, before its handshake costs anything: a client still in its handshake
      // holds a descriptor too (and stop must end it)
      this.tlsServer.on('connection', (socket: Socket) => void this.admit(socket, this.ports.mqtts))
      tls.serve(this.tlsServer, 'mqtts')
    }
  }

  /**
   * Watches a socket until it closes. What its one close listener needs is kept on the socket
   * (this broker, and the peer it is awaited by when it counts against the gate), so that the
   * listener is one function for every connection: a closure, or a `once` wrapper, per
   * connection is heap each of them keeps for its whole life.
   */
  private track(socket: Socket, awaitedPeer?: string): void {
    this.sockets.add(socket)
    const watched = socket as WatchedSocket
    watched[WATCHER] = this
    if (awaitedPeer !== undefined) watched[AWAITED_PEER] = awaitedPeer
    // eslint-disable-next-line @typescript-eslint/unbound-method -- a listener: called on the socket
    socket.on('close', EmbeddedBroker.socketClosed)
  }

  private static readonly socketClosed = function (this: WatchedSocket): void {
    const broker = this[WATCHER]
    const peer = this[AWAITED_PEER]
    if (peer !== undefined) {
      broker.connectArrived(peer)
      broker.gate.closed()
    }
    broker.sockets.delete(this)
    broker.source.socketClosed(this)
  }

  /**
   * Counts a new TCP connection against the gate, or closes it (false) when it is over a limit.
   * It is awaited by its peer (`address:port`, the same for a TLS socket as for the TCP one
   * under it) until its CONNECT arrives.
   */
  private admit(socket: Socket, port: number): boolean {
    if (port !== 0) stampLocalPort(socket, port)
    const address = socket.remoteAddress ?? ''
    const refusal = this.gate.admit(address)
    if (refusal) {
      this.metrics.reject(refusal)
      socket.destroy()
      return false
    }
    const peer = peerOf(socket)
    this.awaitingConnect.set(peer, address)
    this.track(socket, peer)
    return true
  }

  /** An admitted connection, plain or (once its handshake is done) TLS: both reach Aedes alike. */
  private accept(socket: Socket, port: number): void {
    if (port !== 0) stampLocalPort(socket, port)
    this.inboundGuard.guard(socket)
    this.source.adopt(this.aedes.handle(socket))
  }

  /** The CONNECT of `peer` arrived (or it closed first): it no longer counts against its address. */
  private connectArrived(peer: string): void {
    const address = this.awaitingConnect.get(peer)
    if (address === undefined) return
    this.awaitingConnect.delete(peer)
    this.gate.identified(address)
  }

  /**
   * Opens the listeners; `mqtts` only with a certificate. Before: what the previous run left is
   * published — the publish journal's messages, then `publishLeftPushes` (the hub's pushes a
   * crash left stored and unrouted), then the wills of clients it lost.
   */
  async start(publishLeftPushes?: () => Promise<PassOutcome>): Promise<{ mqtt: AddressInfo; mqtts?: AddressInfo }> {
    await this.aedes.listen()
    await this.journal.replay((packet) => this.route(packet))
    // a refusal here is the store's (queueing for offline sessions): what is left stays for the next start
    const pushes = await publishLeftPushes?.().catch((error: Error): PassOutcome => ({ published: 0, refused: error, refusedDevices: new Set(), complete: false }))
    if (pushes?.published) this.log.info({ pushes: pushes.published }, 'published pushes stored before a crash and not routed')
    if (pushes?.refused) this.log.error({ err: pushes.refused.message }, 'pushes stored before a crash not all published; the rest at the next start')
    await this.publishWillsOfPreviousRun()
    await listen(this.server, this.config.mqttHost, this.config.mqttPort, 'MQTT', 'IOTHUB_MQTT_PORT / --mqtt-port')
    const mqtt = this.address()!
    this.ports.mqtt = mqtt.port
    if (!this.tlsServer) return { mqtt }
    await listen(this.tlsServer, this.config.mqttsHost, this.config.mqttsPort, 'MQTT over TLS', 'IOTHUB_MQTTS_PORT / --mqtts-port')
    const mqtts = this.tlsServer.address() as AddressInfo
    this.ports.mqtts = mqtts.port
    return { mqtt, mqtts }
  }

  /** Publishes as the hub itself (the EMQX publish API, events to superusers); resolves once routed. */
  publish(message: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean; clientId?: string }): Promise<void> {
    return this.route({ cmd: 'publish', dup: false, ...message })
  }

  /**
   * Publishes a downstream push, kept in the push journal until routed: refused once the broker
   * stops, since Aedes closing would queue it for offline sessions and then fail, and the push
   * kept for the next start would reach them twice.
   */
  publishPush(message: BrokerMessage): Promise<void> {
    if (this.stopping) return Promise.reject(new Error('the broker is stopping'))
    return this.publish(message)
  }

  private route(packet: PublishPacket): Promise<void> {
    return new Promise<void>((resolve, reject) => this.aedes.publish(packet, (error) => (error ? reject(error) : resolve())))
  }

  /**
   * Clients still connected when the previous run ended without closing them (a crash, a
   * kill -9) lost their connection without a DISCONNECT: their wills are due. Aedes would
   * publish them only after four heartbeat intervals (4 minutes); a device's last will should
   * not wait for that.
   */
  private async publishWillsOfPreviousRun(): Promise<void> {
    const wills: StoredWill[] = []
    for await (const will of this.persistence.streamWill({ [this.aedes.id]: Date.now() })) wills.push(will as StoredWill)
    const outcomes = await this.publishWills(wills)
    if (outcomes.published + outcomes.refused + outcomes.kept > 0) this.log.info(outcomes, 'published the wills of clients the previous run lost')
  }

  /**
   * Publishes again the wills of a previous run whose change the store refused (`kept`): called
   * once the store answers again. Until then they are held back from Aedes' own publishing of
   * lost clients' wills, which knows nothing of device entities.
   */
  async publishKeptWills(): Promise<void> {
    if (this.publishingKeptWills) return
    this.publishingKeptWills = true
    try {
      const outcomes = await this.publishWills(this.persistence.heldWillPackets() as unknown as StoredWill[])
      if (outcomes.published + outcomes.refused > 0) this.log.info(outcomes, 'published the wills kept while the store was failing')
    } catch (error) {
      // still held: the store's next return tries again
      this.log.error({ err: (error as Error).message }, 'wills kept while the store was failing not published yet')
    } finally {
      this.publishingKeptWills = false
    }
  }

  /** Each will by the source's rules; a will kept stays stored and is held back from Aedes. */
  private async publishWills(wills: readonly StoredWill[]): Promise<{ published: number; refused: number; kept: number }> {
    const outcomes = { published: 0, refused: 0, kept: 0 }
    for (const will of wills) {
      const outcome = await this.source.publishWillOfPreviousRun(will)
      outcomes[outcome]++
      if (outcome === 'kept') this.persistence.holdWill(will.clientId)
      else await this.persistence.delWill({ id: will.clientId })
    }
    return outcomes
  }

  address(): AddressInfo | null {
    return this.server.address() as AddressInfo | null
  }

  get listening(): boolean {
    return this.server.listening
  }

  /** The connection limit when it is reached (a new connection would be closed as it is accepted), else null. */
  get fullAt(): number | null {
    return this.gate.connections >= this.gate.maxConnections ? this.gate.maxConnections : null
  }

  /** Whether a client of this id is connected to the broker now. */
  holds(clientId: string): boolean {
    return connectedClient(this.aedes, clientId) !== undefined
  }

  /** Undefined when there is no TLS listener. */
  get tlsListening(): boolean | undefined {
    return this.tlsServer?.listening
  }

  /**
   * Disconnects a connected client (`kicked` by the API, or `taken_over` by its device), resolving
   * once that is recorded; false when it is not connected here.
   */
  async kick(clientId: string, reason: 'kicked' | 'taken_over' = 'kicked'): Promise<boolean> {
    const client = connectedClient(this.aedes, clientId)
    if (!client) return false
    this.source.endsBecause(client, reason)
    client.close()
    await this.source.whenEnded(client)
    return true
  }

  /**
   * Stops accepting, closes every client, and resolves once their ends (`server_shutdown`) are
   * recorded — the store must not close under them.
   */
  async stop(): Promise<void> {
    this.stopping = true
    this.source.stop()
    const servers = this.tlsServer ? [this.server, this.tlsServer] : [this.server]
    const closed = Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()))
    for (const socket of this.sockets) socket.destroy()
    await closed // every socket has closed, so every connection's end has been handed over
    await this.source.idle()
  }
}

function listen(server: Server, host: string, port: number, what: string, setting: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const failed = (error: NodeJS.ErrnoException) => reject(error.code === 'EADDRINUSE' ? portInUse(what, host, port, setting) : error)
    server.once('error', failed)
    server.listen(port, host, () => {
      server.off('error', failed)
      resolve()
    })
  })
}

/** A connection's peer on one listener: the TLS socket and the TCP socket under it share it. */
function peerOf(socket: Socket): string {
  return `${localPortOf(socket)}|${socket.remoteAddress}:${socket.remotePort}`
}
