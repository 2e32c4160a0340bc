/**
 * A PUBLISH on its way out to a client (Aedes' `authorizeForward`): the mountpoint comes off the
 * topic, and a change a device sent on one of its change topics is not echoed back to the
 * connection that sent it.
 */
import type { AedesPublishPacket, Client } from 'aedes'
import { changePropertyOfTopic } from '../../domain/change-topics.js'
import { NO_MOUNTPOINT, unmountTopic } from '../../domain/namespace.js'
import { subscriptionsOf } from '../aedes-internals.js'
import type { MqttContext } from './mqtt-context.js'

export function deliver(ctx: MqttContext, client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
  const mountpoint = ctx.mountpointOf(client)
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
  const granted = subscriptionsOf(client)[packet.topic]?.qos
  const qos = granted !== undefined && granted < packet.qos ? (granted as 0 | 1 | 2) : packet.qos
  return Object.assign(Object.create(Object.getPrototypeOf(packet) as object) as AedesPublishPacket, packet, { topic, qos })
}
