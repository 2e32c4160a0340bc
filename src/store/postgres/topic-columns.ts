/**
 * A topic row's columns (`topics`: qos, and the options only some subscriptions carry, NULL
 * where absent) as the subscription the domain knows — the one mapping for every read of them.
 */
import type { QoS, TopicSubscription } from '../../domain/session.js'

export interface TopicColumns {
  topic: string
  qos: number
  rh: number | null
  rap: boolean | null
  nl: boolean | null
  sub_id: number | null
}

export function subscriptionOfColumns(c: TopicColumns): TopicSubscription {
  return {
    topic: c.topic,
    qos: c.qos as QoS,
    ...(c.rh !== null ? { rh: c.rh } : {}),
    ...(c.rap !== null ? { rap: c.rap } : {}),
    ...(c.nl !== null ? { nl: c.nl } : {}),
    ...(c.sub_id !== null ? { subscriptionIdentifier: c.sub_id } : {})
  }
}
