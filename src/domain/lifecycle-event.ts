/**
 * The one normalized language every source speaks (Aedes today; CoAP and EMQX hooks later).
 * A source turns what its broker tells it into these; the registry knows nothing else.
 */
import type { DisconnectReason, Protocol, TopicSubscription } from './session.js'

interface EventBase {
  clientId: string
  /** The connection this event belongs to; see incarnation.ts. */
  incarnation: string
  /** Epoch milliseconds at the source. */
  at: number
}

export interface ConnectedEvent extends EventBase {
  kind: 'connected'
  protocol: Protocol
  deviceId: string
  username: string | null
  node: string
  peerHost: string | null
  peerPort: number | null
  sockPort: number | null
  keepalive: number
  protoVer: number
  cleanStart: boolean
  expiryInterval: number
}

export interface SubscribedEvent extends EventBase {
  kind: 'subscribed'
  subscriptions: TopicSubscription[]
}

export interface UnsubscribedEvent extends EventBase {
  kind: 'unsubscribed'
  topics: string[]
}

export interface DisconnectedEvent extends EventBase {
  kind: 'disconnected'
  reason: DisconnectReason
}

export type LifecycleEvent = ConnectedEvent | SubscribedEvent | UnsubscribedEvent | DisconnectedEvent
export type LifecycleEventKind = LifecycleEvent['kind'] | 'sessionExpired' | 'sessionDiscarded'
