/**
 * The one normalized language every source speaks (the embedded MQTT and CoAP sources, and
 * EMQX's ExHook and WebHook through EmqxSource).
 * A source turns what its broker tells it into these; the registry knows nothing else.
 */
import type { DisconnectReason, SessionRecord, TopicSubscription } from './session.js'

interface EventBase {
  clientId: string
  /** The connection this event belongs to; see incarnation.ts. */
  incarnation: string
  /** Epoch milliseconds at the source. */
  at: number
}

/** What a connection tells about itself; the session entity takes these fields as they are. */
type ConnectionFacts = Pick<
  SessionRecord,
  'protocol' | 'deviceId' | 'username' | 'mountpoint' | 'node' | 'peerHost' | 'peerPort' | 'sockPort' | 'keepalive' | 'protoVer' | 'cleanStart' | 'expiryInterval'
>

export interface ConnectedEvent extends EventBase, ConnectionFacts {
  kind: 'connected'
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
