/**
 * The MQTT side of the embedded broker: turns what Aedes does into lifecycle events for the
 * registry, and holds Aedes at the points where the hub's answer must be durable first. One
 * handler per packet or event, as Aedes' own `lib/handlers` are, over one per-client state
 * (client-state.ts, mqtt-context.ts); this file only hands Aedes' hooks and events to them:
 *
 * - connect.ts — CONNECT: admission, the client id's lock, `connected` stored before the CONNACK;
 * - subscribe.ts — SUBSCRIBE: one `subscribed` event per packet, stored before the SUBACK;
 * - unsubscribe.ts — UNSUBSCRIBE: `unsubscribed`, incarnation-checked;
 * - publish.ts — PUBLISH: namespaces, topic limits, upstream data, wills;
 * - deliver.ts — a PUBLISH on its way out: the mountpoint taken off;
 * - close.ts — the socket closing: `disconnected` with its reason, and errors counted.
 */
import type { Socket } from 'node:net'
import type { Aedes, AedesOptions, Client, PublishPacket } from 'aedes'
import type { DisconnectReason, SessionRecord } from '../../domain/session.js'
import type { SubscriptionWriter } from '../aedes-persistence.js'
import type { MqttLifecycle, StoredWill } from '../embedded-broker.js'
import { CloseHandler } from './close.js'
import { ConnectHandler } from './connect.js'
import { deliver } from './deliver.js'
import { MqttContext, type MqttDeps } from './mqtt-context.js'
import { PublishHandler } from './publish.js'
import { SubscribeHandler } from './subscribe.js'
import { UnsubscribeHandler } from './unsubscribe.js'

export class MqttSource implements MqttLifecycle {
  private readonly ctx: MqttContext
  private readonly close: CloseHandler
  private readonly connect: ConnectHandler
  private readonly publish: PublishHandler
  private readonly subscribe: SubscribeHandler
  private readonly unsubscribe: UnsubscribeHandler

  constructor(deps: MqttDeps) {
    this.ctx = new MqttContext(deps)
    this.close = new CloseHandler(this.ctx)
    this.connect = new ConnectHandler(this.ctx, this.close)
    this.publish = new PublishHandler(this.ctx)
    this.subscribe = new SubscribeHandler(this.ctx)
    this.unsubscribe = new UnsubscribeHandler(this.ctx, this.subscribe)
  }

  hooks(): Pick<AedesOptions, 'preConnect' | 'authenticate' | 'authorizeSubscribe' | 'authorizePublish' | 'authorizeForward'> {
    return {
      preConnect: (client, packet, done) => this.connect.preConnect(client, packet, done),
      authenticate: (client, username, password, done) => this.connect.authenticate(client, username, password, done),
      authorizeSubscribe: (client, sub, done) => this.subscribe.authorize(client, sub, done),
      authorizePublish: (client, packet, done) => this.publish.authorize(client, packet, done),
      authorizeForward: (client, packet) => deliver(this.ctx, client, packet)
    }
  }

  attach(aedes: Aedes): void {
    this.ctx.attach(aedes)
    aedes.on('connackSent', (_packet, client) => {
      const state = this.ctx.clients.get(client)
      const release = state?.release
      if (!release) return
      // let go once, and forgotten: kept, it would hold the lock's promise and the admission
      // for as long as the connection lives (heap per connected session)
      state.release = undefined
      release()
    })
    aedes.on('subscribe', (subscriptions, client) => this.subscribe.added(subscriptions, client))
    aedes.on('unsubscribe', (topics, client) => this.unsubscribe.removed(topics, client))
    this.close.listen(aedes)
  }

  adopt(client: Client): void {
    this.connect.adopt(client)
  }

  /** A socket the broker handed over (`adopt`) closed. */
  socketClosed(socket: Socket): void {
    this.connect.socketClosed(socket)
  }

  aedesMustNotRoute(packet: PublishPacket): boolean {
    return this.ctx.notForAedes.has(packet)
  }

  publishWillOfPreviousRun(will: StoredWill): Promise<'published' | 'refused' | 'kept'> {
    return this.publish.publishWillOfPreviousRun(will)
  }

  /** The Aedes persistence's subscription writes, routed through the registry (see unsubscribe.ts). */
  subscriptionWriter(): SubscriptionWriter {
    return this.unsubscribe.writer()
  }

  /** The carrier's step-down of a session a newer connection took over: its client, if still here, is closed. */
  stepDown(session: SessionRecord): void {
    this.connect.stepDown(session)
  }

  endsBecause(client: Client, reason: DisconnectReason): void {
    this.ctx.endsBecause(client, reason)
  }

  whenEnded(client: Client): Promise<void> {
    return this.close.whenEnded(client)
  }

  stop(): void {
    this.ctx.stopping = true
  }

  idle(): Promise<void> {
    return this.ctx.idle()
  }
}
