/**
 * A client's PUBLISH, before Aedes routes it: it must stay inside the device's namespace and
 * within the topic limits; upstream data (a device's attribute/telemetry change topics)
 * changes the device entity first, then is routed, all before the PUBACK. Wills are checked by
 * the same rules, in their publisher's name.
 */
import type { Client, PublishPacket } from 'aedes'
import { checkTopic, reservedTopic, type TopicLimits } from '../../admission/topic-rules.js'
import { PayloadError } from '../../domain/device-properties.js'
import { deviceOfMountpoint, insideNamespace, NO_MOUNTPOINT, unmountTopic } from '../../domain/namespace.js'
import type { RejectReason } from '../../observability/metrics.js'
import { heldIncomingPacket } from '../aedes-internals.js'
import type { StoredWill, WillPacket } from '../embedded-broker.js'
import { isEmptyOnceUnmounted, type MqttContext } from './mqtt-context.js'

type Done = (error: Error | null) => void

export class PublishHandler {
  constructor(private readonly ctx: MqttContext) {}

  /** Aedes' `authorizePublish`: refuses (closing), drops (acknowledged, not routed), or lets Aedes route it. */
  authorize(client: Client | null, packet: PublishPacket, done: Done): void {
    const { ctx } = this
    const { config, upstream, devices } = ctx.deps
    const namespace = client && ctx.clients.get(client)?.namespace
    if (namespace && isEmptyOnceUnmounted(namespace.mountpoint, packet.topic)) {
      ctx.reject('bad_topic', client, 'empty topic')
      // a protocol error [MQTT-4.7.3-1]: the connection closes (worded so clientError does not count it again)
      return done(new Error('topic is empty once the device prefix is taken off'))
    }
    if (namespace && !insideNamespace(namespace.mountpoint, packet.topic)) {
      // dropped, not disconnected: a device learns nothing of what lies outside its namespace
      ctx.reject('outside_namespace', client, `publish to ${packet.topic} is outside the device's namespace`)
      ctx.notForAedes.add(packet)
      return done(null)
    }
    const reserved = reservedTopic(packet.topic)
    if (reserved) {
      ctx.reject('bad_topic', client, `${reserved} topics are reserved`)
      return done(new Error(`${reserved} topic is reserved`))
    }
    const refusal = checkTopic(packet.topic, config)
    if (refusal) {
      ctx.reject(refusal.reason, client, refusal.message)
      return done(new Error(refusal.message))
    }
    if (!client || !namespace) return done(null) // a will published at start, or a server publish
    // lets delivery recognize the sender (see deliver.ts)
    ;(packet as PublishPacket & { clientId?: string }).clientId = client.id
    const deviceId = namespace.identity.ok ? namespace.identity.deviceId : undefined
    const deviceTopic = unmountTopic(namespace.mountpoint, packet.topic)
    if (namespace.mountpoint === NO_MOUNTPOINT || deviceId === undefined || !upstream.handles(deviceTopic) || !devices.get(deviceId)) {
      return done(null)
    }
    // an empty retained publish clears the retained message: nothing for the device entity
    if (packet.retain && packet.payload.length === 0) return done(null)
    // Upstream data: the device entity changes, then the message is routed, both in the
    // device's queue of changes (so watchers see its changes in the order they were stored),
    // and all before the PUBACK — which makes the publish journal needless for it.
    const kind = upstreamKind(deviceTopic)
    const receive = () => this.receiveUpstream(client, packet, deviceId, deviceTopic, kind, done)
    if (packet.qos !== 2) return receive()
    // Aedes asks this hook before it looks for a QoS 2 re-send (same message id, DUP): one it
    // already holds was applied and routed the first time
    heldIncomingPacket(ctx.aedes, client, packet).then(() => {
      ctx.notForAedes.add(packet)
      done(null)
    }, receive)
  }

  /**
   * Publishes a will the previous run stored for a client it lost (a crash, a kill -9), as the
   * will of a connection lost while the hub runs is published: only inside the namespace stored
   * with it, and on one of the device's property topics through its device entity first — the
   * entity changes, then the message is routed. 'kept': the store refused it (its change, or the
   * routing of a will that changes nothing), so the will stays stored and is published once the
   * store answers again (EmbeddedBroker.publishKeptWills), or at the next start.
   */
  async publishWillOfPreviousRun(will: StoredWill): Promise<'published' | 'refused' | 'kept'> {
    const { upstream, devices, metrics, log } = this.ctx.deps
    const { mountpoint, ...packet } = will
    const refusal = this.willOfPreviousRunRefusal(will)
    if (refusal) {
      metrics.reject(refusal.reason)
      log.warn({ clientId: will.clientId, topic: will.topic, reason: refusal.reason, detail: refusal.message }, 'will of a client the previous run lost not published')
      return 'refused'
    }
    const route = () => new Promise<void>((resolve, reject) => this.ctx.aedes.publish(packet, (error) => (error ? reject(error) : resolve())))
    const deviceId = mountpoint === undefined ? undefined : deviceOfMountpoint(mountpoint)
    const deviceTopic = deviceId === undefined ? undefined : unmountTopic(mountpoint!, will.topic)
    const upstreamData = deviceId !== undefined && deviceTopic !== undefined && upstream.handles(deviceTopic) && devices.get(deviceId) !== undefined
    const kept = (error: unknown): 'kept' => {
      metrics.reject('store_unavailable')
      log.error({ clientId: will.clientId, topic: will.topic, err: (error as Error).message }, 'will of a client the previous run lost not published; kept, and published once the store answers again')
      return 'kept'
    }
    // an empty retained will clears the retained message: nothing for the device entity
    if (!upstreamData || (will.retain && will.payload.length === 0)) return route().then(() => 'published' as const, kept)
    const kind = upstreamKind(deviceTopic)
    // once its change is stored the will is done with, even if routing it fails (as a live
    // device's upstream publish): kept, it would change the entity twice
    let routingFailed: Error | undefined
    const routeAfterChange = () =>
      route().catch((error: Error) => {
        routingFailed = error
      })
    let changed: boolean
    try {
      changed = await upstream.receive(deviceId, deviceTopic, will.topic, will.payload as Buffer, routeAfterChange)
    } catch (error) {
      if (!(error instanceof PayloadError)) return kept(error)
      metrics.upstreamTotal.inc({ property: kind, outcome: 'refused' })
      this.ctx.reject('bad_payload', null, `will of ${will.clientId} on ${deviceTopic} of device ${deviceId}: ${error.message}`)
      return 'refused'
    }
    metrics.upstreamTotal.inc({ property: kind, outcome: changed ? 'applied' : 'no_device' })
    // its device was deleted meanwhile: routed as any will, nothing stored
    if (!changed) return route().then(() => 'published' as const, kept)
    if (routingFailed) log.error({ clientId: will.clientId, deviceId, topic: deviceTopic, err: routingFailed.message }, 'will of a client the previous run lost: its change is stored, routing it failed')
    return 'published'
  }

  /**
   * Why a will the previous run stored for a client it lost (a crash) may not be published now,
   * or null. Its client is gone, so the namespace is the one stored with the will.
   */
  private willOfPreviousRunRefusal(will: WillPacket): { reason: RejectReason; message: string } | null {
    const { config } = this.ctx.deps
    if (will.mountpoint !== undefined) return willRefusal(config, will.mountpoint, will.topic)
    // stored before wills carried their namespace: no device's topic begins with `$`
    if (will.topic.startsWith('$')) return { reason: 'outside_namespace', message: `${will.topic} is the broker's own topic` }
    return checkTopic(will.topic, config)
  }

  private receiveUpstream(client: Client, packet: PublishPacket, deviceId: string, deviceTopic: string, kind: string, done: Done): void {
    const { ctx } = this
    const { upstream, metrics, log } = ctx.deps
    let routingFailed: Error | undefined
    const route = () =>
      this.route(client, packet).catch((error: Error) => {
        routingFailed = error
      })
    upstream.receive(deviceId, deviceTopic, packet.topic, packet.payload as Buffer, route).then(
      (changed) => {
        if (!changed) {
          // its device was deleted meanwhile: routed as any publish, nothing stored
          metrics.upstreamTotal.inc({ property: kind, outcome: 'no_device' })
          return done(null)
        }
        metrics.upstreamTotal.inc({ property: kind, outcome: 'applied' })
        if (routingFailed) {
          // stored, not routed: Aedes gets the packet back and routes it (or journals it) itself
          log.warn({ clientId: client.id, deviceId, topic: deviceTopic, err: routingFailed.message }, 'upstream data stored; routing it again')
        } else {
          ctx.notForAedes.add(packet)
        }
        done(null)
      },
      (error: Error) => {
        if (error instanceof PayloadError) {
          metrics.upstreamTotal.inc({ property: kind, outcome: 'refused' })
          ctx.reject('bad_payload', client, `${deviceTopic} from device ${deviceId}: ${error.message}`)
          ctx.notForAedes.add(packet)
          return done(null)
        }
        metrics.reject('store_unavailable')
        log.error({ clientId: client.id, deviceId, topic: deviceTopic, err: error.message }, 'upstream data not stored')
        done(error) // closes the connection; a QoS 1 sender sends it again when it reconnects
      }
    )
  }

  /** Routes a client's publish now, as Aedes would (with its sender, for delivery). */
  private route(client: Client, packet: PublishPacket): Promise<void> {
    const { topic, payload, qos, retain } = packet
    const copy = { cmd: 'publish', topic, payload, qos, retain, dup: false, clientId: client.id } as PublishPacket
    return new Promise((resolve, reject) => this.ctx.aedes.publish(copy, (error) => (error ? reject(error) : resolve())))
  }
}

/** The property label of an upstream topic, for `iothub_upstream_total` (`v1/devices/me/command/response` → `command_response`). */
function upstreamKind(deviceTopic: string): string {
  return deviceTopic.slice(deviceTopic.lastIndexOf('me/') + 3).replace('/', '_')
}

/** Why a will on `topic` may not be published by a client of `mountpoint`, or null. */
export function willRefusal(limits: TopicLimits, mountpoint: string, topic: string): { reason: RejectReason; message: string } | null {
  if (isEmptyOnceUnmounted(mountpoint, topic)) return { reason: 'bad_topic', message: 'empty topic' }
  if (!insideNamespace(mountpoint, topic)) return { reason: 'outside_namespace', message: `${topic} is outside the device's namespace` }
  const reserved = reservedTopic(topic)
  if (reserved) return { reason: 'bad_topic', message: `${reserved} topics are reserved` }
  return checkTopic(topic, limits)
}
