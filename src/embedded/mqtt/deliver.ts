/**
 * A PUBLISH on its way out to a client (Aedes' `authorizeForward`): the mountpoint comes off the
 * topic, a change a device sent on one of its change topics is not echoed back to the
 * connection that sent it, and the QoS is at most what the client was granted.
 */
import type { AedesPublishPacket, Client } from 'aedes'
import { changePropertyOfTopic } from '../../domain/change-topics.js'
import { NO_MOUNTPOINT, unmountTopic } from '../../domain/namespace.js'
import { topicMatches } from '../../domain/topic-match.js'
import { subscriptionsOf } from '../aedes-internals.js'
import type { MqttContext } from './mqtt-context.js'

type Qos = AedesPublishPacket['qos']
type Subscriptions = ReturnType<typeof subscriptionsOf>

export function deliver(ctx: MqttContext, client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
  const mountpoint = ctx.mountpointOf(client)
  if (mountpoint === NO_MOUNTPOINT) {
    const qos = deliveryQos(subscriptionsOf(client), packet)
    return qos === packet.qos ? packet : copyOf(packet, packet.topic, qos)
  }
  // a packet re-sent from the offline queue was stored as delivered: already unmounted, and at
  // the QoS it was queued with (its message id and QoS flow are under way)
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
  // unmounted topic is not found there, so the QoS is settled here with the mounted one.
  return copyOf(packet, topic, deliveryQos(subscriptionsOf(client), packet))
}

/**
 * The QoS `packet` goes out at: the lower of its own and the highest granted among the
 * client's subscriptions that match it (MQTT 3.1.1 §3.3.5 and §3.8.4, [MQTT-3.8.4-6]).
 *
 * Aedes lowers it only through a subscription to the exact topic: it delivers through a QoS 0
 * subscription at QoS 0 whatever the publish, but through a QoS 1 filter with wildcards a QoS 2
 * publish would go out at QoS 2. So the filters are looked through only where the exact lookup
 * cannot settle it — a QoS 2 publish with no exact subscription, or an exact subscription granting
 * less than the publish (a filter with wildcards may grant more) — at most the session's
 * subscriptions (IOTHUB_MAX_SUBSCRIPTIONS_PER_SESSION); the common deliveries (an exact
 * subscription granting the publish's QoS, or QoS 0 or 1 through a filter) cost one lookup as before.
 */
function deliveryQos(subscriptions: Subscriptions, packet: AedesPublishPacket): Qos {
  const exact = subscriptions[packet.topic]?.qos
  if (exact !== undefined && exact >= packet.qos) return packet.qos
  if (exact === undefined && packet.qos < 2) return packet.qos
  const granted = highestGranted(subscriptions, packet.topic)
  return granted !== undefined && granted < packet.qos ? granted : packet.qos
}

/** The highest QoS granted to a filter of `subscriptions` that matches `topic`; undefined when none does. */
function highestGranted(subscriptions: Subscriptions, topic: string): Qos | undefined {
  // a filter that begins with a wildcard does not match a topic that begins with '$' (MQTT 3.1.1 §4.7.2)
  const dollar = topic.startsWith('$')
  let highest: Qos | undefined
  for (const filter in subscriptions) {
    const qos = subscriptions[filter]?.qos
    if (qos === undefined || (highest !== undefined && qos <= highest)) continue
    if (dollar && (filter.startsWith('+') || filter.startsWith('#'))) continue
    if (topicMatches(filter, topic)) highest = qos as Qos
  }
  return highest
}

function copyOf(packet: AedesPublishPacket, topic: string, qos: Qos): AedesPublishPacket {
  return Object.assign(Object.create(Object.getPrototypeOf(packet) as object) as AedesPublishPacket, packet, { topic, qos })
}
