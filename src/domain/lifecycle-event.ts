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
  /**
   * The topics the broker holds for this connection already (EMQX's listing, when a reconcile
   * records a connection the hub missed): a connection that does not resume its session holds
   * these from its connect on, in the connect's own change, rather than none until a subscribe
   * after it. A resumed session keeps its own (transitions.ts).
   */
  subscriptions?: TopicSubscription[]
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

/** Who connected, as the transport's admission named them. */
export interface ConnectingSession {
  clientId: string
  protocol: SessionRecord['protocol']
  /** '' for a superuser, who has no device. */
  deviceId: string
  username: string | null
  mountpoint: string
  /** The broker node the connection is on. */
  node: string
  /** When it connected (epoch ms); now when the transport does not say. */
  at?: number
}

/**
 * What a connection tells of itself. A transport that does not know a field leaves it out and
 * gets MQTT's default: no peer, keepalive 0, MQTT 3.1.1 (4), a clean start.
 */
export interface ConnectionSeen {
  peerHost?: string | null
  peerPort?: number | null
  sockPort?: number | null
  keepalive?: number
  protoVer?: number
  cleanStart?: boolean
  expiryInterval: number
}

/**
 * The one way a `connected` event is made, by every transport: the facts of the session, before
 * its incarnation is known (EMQX's ordering decides it after).
 */
export function connectionFacts(who: ConnectingSession, seen: ConnectionSeen): Omit<ConnectedEvent, 'incarnation'> {
  return {
    kind: 'connected',
    clientId: who.clientId,
    at: who.at ?? Date.now(),
    protocol: who.protocol,
    deviceId: who.deviceId,
    username: who.username,
    mountpoint: who.mountpoint,
    node: who.node,
    peerHost: seen.peerHost ?? null,
    peerPort: seen.peerPort ?? null,
    sockPort: seen.sockPort ?? null,
    keepalive: seen.keepalive ?? 0,
    protoVer: seen.protoVer ?? 4,
    cleanStart: seen.cleanStart ?? true,
    expiryInterval: seen.expiryInterval
  }
}

/** A `connected` event of a connection whose incarnation is known. */
export function connectedEvent(who: ConnectingSession & { incarnation: string }, seen: ConnectionSeen): ConnectedEvent {
  // the facts' own object, not a spread copy of it: one is made per connect
  const event = connectionFacts(who, seen) as ConnectedEvent
  event.incarnation = who.incarnation
  return event
}
