/**
 * A client's CONNECT, from its bytes to its CONNACK:
 *
 * 1. as it is parsed (`adopt`), the admission policy says who it claims to be, which names the
 *    namespace its topics are mounted under;
 * 2. `preConnect` takes what the connection tells of itself;
 * 3. `authenticate` checks the packet's own rules (client id, UTF-8, the will's topic), then asks
 *    the admission policy (credentials, throttle, client id, session limit);
 * 4. under the client id's lock — connects of one id are serialized from authentication to
 *    CONNACK, as EMQX's connection manager locks a client id, so the connection Aedes keeps
 *    after a takeover is always the newest — the session is admitted again, the id taken back
 *    from another's session if it is the device's own, and `connected` recorded; the CONNACK
 *    leaves only once that is stored.
 */
import type { Socket } from 'node:net'
import type { Client, ConnectPacket } from 'aedes'
import type { Identity } from '../../admission/admission-policy.js'
import { newIncarnation } from '../../domain/incarnation.js'
import type { SessionRecord } from '../../domain/session.js'
import { connectedEvent } from '../../domain/lifecycle-event.js'
import { NO_MOUNTPOINT } from '../../domain/namespace.js'
import type { RejectReason } from '../../observability/metrics.js'
import { KeyedQueue } from '../../registry/keyed-queue.js'
import { connectedClient } from '../aedes-internals.js'
import { patchConnackSessionPresent } from '../connack-session-present.js'
import type { WillPacket } from '../embedded-broker.js'
import { liftRate } from '../inbound-guard.js'
import { mountClientTopics, type Mounter } from '../mountpoint.js'
import { SlowConsumerGuard } from '../slow-consumer-guard.js'
import { localPortOf } from '../socket-ports.js'
import type { ClientState, Namespace } from './client-state.js'
import type { CloseHandler } from './close.js'
import type { MqttContext } from './mqtt-context.js'
import { willRefusal } from './publish.js'

const CONNACK_IDENTIFIER_REJECTED = 2
const CONNACK_SERVER_UNAVAILABLE = 3
const CONNACK_BAD_USERNAME_OR_PASSWORD = 4
const CONNACK_NOT_AUTHORIZED = 5

/** The CONNACK code of each refusal of a login; any other is 5, not authorized. */
const CONNACK_CODE_OF_REFUSAL: Partial<Record<RejectReason, number>> = {
  bad_client_id: CONNACK_IDENTIFIER_REJECTED,
  bad_username: CONNACK_BAD_USERNAME_OR_PASSWORD
}

type Done = (error: (Error & { returnCode: number }) | null, success: boolean | null) => void

function refusedWith(returnCode: number, message: string): Error & { returnCode: number } {
  return Object.assign(new Error(message), { returnCode })
}

/**
 * An adopted socket's Aedes client, for what every connection shares (its close, its slow
 * consumer guard): kept on the socket rather than in a closure per connection.
 */
const CLIENT = Symbol('iothub client')

type AdoptedSocket = Socket & { [CLIENT]?: Client }

export class ConnectHandler implements Mounter {
  private readonly locks = new KeyedQueue()
  private readonly slowConsumers: SlowConsumerGuard

  constructor(
    private readonly ctx: MqttContext,
    private readonly close: CloseHandler
  ) {
    const { maxInflightBytes } = ctx.deps.config
    this.slowConsumers = new SlowConsumerGuard(maxInflightBytes, (socket, buffered) => {
      const client = (socket as AdoptedSocket)[CLIENT]!
      ctx.endsBecause(client, 'slow_consumer')
      ctx.reject('slow_consumer', client, `${buffered} bytes waiting to be written, more than ${maxInflightBytes}`)
      client.close()
    })
  }

  /**
   * The registry handed this session to a newer connection (a takeover, see StepDown): the
   * client, if it is that connection, is closed — before the newer one's CONNACK, so Aedes
   * finds no live client of the id left to take over.
   */
  stepDown(session: SessionRecord): void {
    const client = connectedClient(this.ctx.aedes, session.clientId)
    if (!client || this.ctx.clients.get(client)?.incarnation !== session.incarnation) return
    this.ctx.endsBecause(client, 'taken_over')
    client.close()
  }

  /** Takes a new Aedes client before it reads its first packet: its topics get its mountpoint. */
  adopt(client: Client): void {
    const { ctx } = this
    const socket = client.conn as AdoptedSocket
    socket[CLIENT] = client
    this.slowConsumers.guard(socket)
    // kept only until the CONNACK is written
    patchConnackSessionPresent(socket, () => ctx.clients.get(client)?.sessionPresent === true)
    mountClientTopics(client, this)
  }

  /** Mounter: the namespace its CONNECT names, kept for `preConnect`, which Aedes calls next. */
  mountpointOf(client: Client, connect: ConnectPacket): string {
    const namespace = this.namespaceOf(connect, (client.conn as Socket).remoteAddress)
    this.ctx.namespaces.set(client, namespace)
    return namespace.mountpoint
  }

  /**
   * The socket closed (the broker's one close listener tells): the end of its connection is
   * recorded, if its connect was. A listener of our own would cost every connection more than
   * the call: a third `close` listener grows the socket's listener array to 19 slots.
   */
  socketClosed(socket: Socket): void {
    const client = (socket as AdoptedSocket)[CLIENT]
    if (client) this.close.closed(client)
  }

  /** Aedes' `preConnect`: what the connection tells of itself, kept until it closes. */
  preConnect(client: Client, packet: ConnectPacket, done: (error: Error | null, success: boolean) => void): void {
    const { ctx } = this
    const socket = client.conn as Socket
    const namespace = ctx.namespaces.get(client) ?? this.namespaceOf(packet, socket.remoteAddress)
    ctx.namespaces.delete(client) // the state holds it from here on
    const state: ClientState = {
      namespace,
      clientIdGiven: packet.clientId.length > 0,
      keepalive: packet.keepalive ?? 0,
      protoVer: packet.protocolVersion ?? 4,
      peerHost: socket.remoteAddress ?? null,
      peerPort: socket.remotePort ?? null,
      sockPort: localPortOf(socket),
      ...(packet.will ? { willTopic: packet.will.topic } : {})
    }
    ctx.clients.set(client, state)
    // the will keeps its publisher's namespace, so a will published after a crash is checked
    // against it as a live client's is (see PublishHandler.willOfPreviousRunRefusal)
    if (packet.will) (packet.will as WillPacket).mountpoint = state.namespace.mountpoint
    done(null, true)
  }

  /** Aedes' `authenticate`. */
  authenticate(client: Client, username: string | undefined, password: Buffer | undefined, done: Done): void {
    const { ctx } = this
    const state = ctx.clients.get(client)!
    const refuse = (returnCode: number, reason: RejectReason, message: string) => {
      ctx.reject(reason, client, message)
      done(refusedWith(returnCode, message), false)
    }
    const { config } = ctx.deps
    // the packet's own rules, before anything is looked up
    if (!state.clientIdGiven && !client.clean) return refuse(CONNACK_IDENTIFIER_REJECTED, 'bad_client_id', 'empty client id needs clean session')
    if (client.id.length > config.maxClientIdLength) return refuse(CONNACK_IDENTIFIER_REJECTED, 'bad_client_id', 'client id too long')
    if (!isWellFormedMqttString(client.id)) return refuse(CONNACK_IDENTIFIER_REJECTED, 'bad_client_id', 'client id is not well-formed UTF-8')
    if (username !== undefined && !isWellFormedMqttString(username)) {
      return refuse(CONNACK_BAD_USERNAME_OR_PASSWORD, 'bad_username', 'username is not well-formed UTF-8')
    }
    const { identity } = state.namespace
    if (!identity.ok) return refuse(CONNACK_CODE_OF_REFUSAL[identity.reason] ?? CONNACK_NOT_AUTHORIZED, identity.reason, identity.message)
    // A will is published in the device's name as any publish is: inside its namespace only.
    if (state.willTopic !== undefined) {
      const refused = willRefusal(config, state.namespace.mountpoint, state.willTopic)
      if (refused) return refuse(CONNACK_NOT_AUTHORIZED, refused.reason, `will: ${refused.message}`)
    }
    const login = { protocol: 'mqtt' as const, clientId: client.id, username, password, peer: state.peerHost }
    ctx.deps.admission
      .admitIdentified(login, identity, { canWait: true, canReclaim: true, abandoned: () => client.closed })
      .then(
        (admission) => {
          if (client.closed) {
            // gave up while its login was held
            if (admission.ok) admission.release()
            return
          }
          if (!admission.ok) return refuse(CONNACK_CODE_OF_REFUSAL[admission.reason] ?? CONNACK_NOT_AUTHORIZED, admission.reason, admission.message)
          // checked here to refuse early, and again under the client id's lock (see connect)
          admission.release()
          // an operator's tool may have to send more than any one device (README, "Limits")
          if (identity.superuser) liftRate(client.conn as Socket)
          void this.locks.run(client.id, () => this.connect(client, state, identity, username ?? null, done))
        },
        (error: Error) => {
          ctx.deps.log.error({ clientId: client.id, err: error.message }, 'login not checked')
          done(refusedWith(CONNACK_SERVER_UNAVAILABLE, 'server unavailable'), false)
        }
      )
  }

  /** Who the CONNECT claims to be (the admission policy's rules 1 and 2), which names its namespace. */
  private namespaceOf(connect: ConnectPacket, peerHost: string | undefined): Namespace {
    const { username, password, clientId } = connect
    const identity = this.ctx.deps.admission.identify({ protocol: 'mqtt', clientId, username, password, peer: peerHost })
    // one that cannot log in as anyone mounts nothing: `authenticate` refuses it
    return { identity, mountpoint: identity.ok ? identity.mountpoint : NO_MOUNTPOINT }
  }

  /** Under the client id's lock: admits the session again, takes the id back if it must, records `connected`. */
  private connect(client: Client, state: ClientState, identity: Identity & { ok: true }, username: string | null, done: Done): Promise<void> {
    const { ctx } = this
    return new Promise<void>((releaseLock) => {
      if (client.closed) return releaseLock() // gave up while an earlier connect held the lock
      // checked again under the lock: a connect of another device may have taken the id meanwhile
      const admission = ctx.deps.admission.admitSession(client.id, identity, { canReclaim: true })
      if (!admission.ok) {
        ctx.reject(admission.reason, client, admission.message)
        done(refusedWith(CONNACK_NOT_AUTHORIZED, admission.message), false)
        return releaseLock()
      }
      const release = () => {
        admission.release()
        releaseLock()
      }
      if (!admission.reclaim) return this.record(client, state, admission.deviceId, username, done, release)
      // the device takes its own id back: whoever held it is closed and its session discarded
      ctx.deps.takeBack(client.id).then(
        () => this.record(client, state, admission.deviceId, username, done, release),
        (error: Error) => {
          ctx.deps.metrics.reject('store_unavailable')
          ctx.deps.log.error({ clientId: client.id, err: error.message }, 'connect refused: the session held under this id could not be discarded')
          done(refusedWith(CONNACK_SERVER_UNAVAILABLE, 'server unavailable'), false)
          release()
        }
      )
    })
  }

  /** Records the `connected` event of an admitted connect, and answers Aedes. */
  private record(client: Client, state: ClientState, deviceId: string, username: string | null, done: Done, release: () => void): void {
    if (client.closed) return release()
    const { ctx } = this
    const { registry, config, metrics, log } = ctx.deps
    const kept = registry.record(client.id)
    state.sessionPresent = !client.clean && kept !== undefined && !kept.cleanStart && kept.deviceId === deviceId
    state.release = release
    const incarnation = newIncarnation(config.node)
    state.incarnation = incarnation
    const refuse = (error: Error): void => {
      state.incarnation = undefined
      metrics.reject('store_unavailable')
      log.error({ clientId: client.id, err: error.message }, 'connect refused: session not recorded')
      done(refusedWith(CONNACK_SERVER_UNAVAILABLE, 'server unavailable'), false)
      release()
    }
    const event = connectedEvent(
      { clientId: client.id, incarnation, protocol: 'mqtt', deviceId, username, mountpoint: state.namespace.mountpoint, node: config.node },
      {
        peerHost: state.peerHost,
        peerPort: state.peerPort,
        sockPort: state.sockPort,
        keepalive: state.keepalive,
        protoVer: state.protoVer,
        cleanStart: client.clean,
        expiryInterval: config.sessionExpiry
      }
    )
    ctx.track(registry.apply(event)).then(
      (result) => {
        // a connection of this client id it replaced (MQTT or CoAP) was stepped down by the carrier
        if (!result.applied) return refuse(new Error(`connect not applied: ${result.why}`))
        done(null, true)
      },
      // two-armed, not .catch: a throw from Aedes' own continuation must not answer twice
      refuse
    )
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
