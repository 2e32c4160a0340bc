/**
 * The session entity: one per client session (one per clientId), created on connect, changed
 * on subscribe and unsubscribe, ended on disconnect (docs/ARCHITECTURE.md). Pure data — the
 * registry owns the live copies, the store persists them, the API renders them.
 */

export const PROTOCOLS = ['mqtt', 'coap'] as const
export type Protocol = (typeof PROTOCOLS)[number]

/**
 * Why a connection ended. AWS IoT lifecycle events and EMQX's disconnect reasons name the
 * same cases; ours are what a fleet operator asks "why did it drop?" about.
 */
export const DISCONNECT_REASONS = [
  'client_disconnect', // the client sent DISCONNECT (or closed a CoAP connection)
  'keepalive_timeout', // nothing heard within 1.5 × keepalive
  'taken_over', // a new connection with the same clientId replaced this one
  'socket_error', // the transport failed or closed without a DISCONNECT
  'server_shutdown', // the hub stopped (or crashed and restarted) while connected
  'kicked', // an operator disconnected it through the API
  'slow_consumer', // it could not take what was sent to it fast enough (its socket stayed full)
  'device_deleted' // its device was deleted through the API: the session ended, the connection closed
] as const
export type DisconnectReason = (typeof DISCONNECT_REASONS)[number]

export type QoS = 0 | 1 | 2

/** One subscription of a session; `rh`, `rap`, `nl` are kept so the broker can restore it. */
export interface TopicSubscription {
  topic: string
  qos: QoS
  rh?: number
  rap?: boolean
  nl?: boolean
  /** MQTT 5 subscription identifier, echoed on matching PUBLISHes after a session resumes. */
  subscriptionIdentifier?: number
}

/** Everything we know about a session except its topics, which the TopicBook keeps. */
export interface SessionRecord {
  id: string
  protocol: Protocol
  clientId: string
  deviceId: string
  username: string | null
  /**
   * Prefix of this session's topics on the broker: `{deviceId}/` for a device, '' for a
   * superuser (see namespace.ts). Its topics are stored as the broker routes them.
   */
  mountpoint: string
  node: string
  peerHost: string | null
  peerPort: number | null
  sockPort: number | null
  keepalive: number
  protoVer: number
  cleanStart: boolean
  /** Seconds a disconnected persistent session is kept; 0 for clean sessions. */
  expiryInterval: number
  connected: boolean
  /** Epoch milliseconds: when this session began (a resumed session keeps its first). */
  createdAt: number
  /** Epoch milliseconds: when its current (or last) connection was accepted. */
  connectedAt: number
  disconnectedAt: number | null
  disconnectReason: DisconnectReason | null
  /** Identifies one connection; later connections sort after earlier ones (see incarnation.ts). */
  incarnation: string
  /** Counts the lifecycle events applied to this session; lets consumers order what they see. */
  version: number
}

export interface Session extends SessionRecord {
  topics: TopicSubscription[]
}

/** A session id is the clientId: one broker, one clientId namespace (as EMQX's). */
export function sessionIdOf(clientId: string): string {
  return clientId
}

export function expiresAt(session: SessionRecord): number | null {
  if (session.connected || session.cleanStart || session.disconnectedAt === null) return null
  return session.disconnectedAt + session.expiryInterval * 1000
}
