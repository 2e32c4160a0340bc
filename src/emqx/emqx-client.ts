/**
 * What EMQX tells the hub about one client connection, whichever interface it came through
 * (ExHook v1/v2/v3, WebHook v4/v5, the REST API): the transports turn their messages into
 * these, and EmqxSource turns these into lifecycle events. A field a version or an interface
 * does not carry is undefined — never guessed.
 *
 * Which connection an event belongs to (docs/emqx-mode.md): EMQX gives hooks no connection id.
 * A connection is named by its node and its peer address (host and port) — a reconnect, even
 * from the same host, comes from another port, and a takeover from another node — and ordered
 * by `connected_at` where the interface carries it (else by when the hub heard of it).
 */
import type { DisconnectReason, SessionRecord } from '../domain/session.js'

export interface EmqxClient {
  node: string
  clientId: string
  username: string | null
  /** `mqtt`, or a gateway's protocol (`coap`, `lwm2m`, …) as EMQX names it. */
  protocol: string | undefined
  peerHost: string | null
  peerPort: number | undefined
  sockPort: number | undefined
  /** The prefix EMQX put on this client's topics (`%u/` → `dev-1/`); '' or undefined: none. */
  mountpoint: string | undefined
  protoVer: number | undefined
  keepalive: number | undefined
  cleanStart: boolean | undefined
  /** Seconds (MQTT 5 session expiry, or EMQX's session expiry for MQTT 3). */
  expiryInterval: number | undefined
  /** Epoch milliseconds. */
  connectedAt: number | undefined
}

/** A disconnect that is not the client going offline: another connection took its session. */
export const REPLACED = 'replaced'

/**
 * EMQX's disconnect reasons (emqx_channel / emqx_connection: `normal`, `kicked`, `takenover`,
 * `discarded`, `keepalive_timeout`, `tcp_closed`, `sock_closed`, `ssl_closed`, `closed`,
 * `protocol_error`, …, and `{shutdown, Reason}` rendered as text) in the hub's terms.
 */
export function disconnectReasonOf(raw: string): DisconnectReason | typeof REPLACED {
  const reason = raw.trim().toLowerCase()
  if (reason === 'takenover' || reason === 'takeovered' || reason === 'discarded') return REPLACED
  if (reason === 'normal' || reason === 'client_disconnect') return 'client_disconnect'
  if (reason === 'keepalive_timeout') return 'keepalive_timeout'
  if (reason === 'kicked') return 'kicked'
  if (reason.includes('shutdown')) return 'server_shutdown'
  return 'socket_error'
}

/** How a connection is named in its incarnation and in logs: `node/host:port`. */
export function connectionName(client: Pick<EmqxClient, 'node' | 'peerHost' | 'peerPort'>): string {
  return `${client.node}/${client.peerHost ?? '?'}:${client.peerPort ?? '?'}`
}

/**
 * Whether `client` is the connection `session` holds now. What the event does not carry is
 * not compared (ExHook v1's ClientInfo has no peer port, for one): such an event is taken as
 * the live connection's when the rest matches.
 */
export function isLiveConnection(session: SessionRecord, client: EmqxClient): boolean {
  return session.connected && isConnectionOf(session, client)
}

/** Whether `client` names the session's latest connection, live or ended (same comparison). */
export function isConnectionOf(session: SessionRecord, client: Pick<EmqxClient, 'node' | 'peerHost' | 'peerPort'>): boolean {
  if (session.node !== client.node) return false
  if (client.peerHost !== null && session.peerHost !== null && client.peerHost !== session.peerHost) return false
  if (client.peerPort !== undefined && session.peerPort !== null && client.peerPort !== session.peerPort) return false
  return true
}
