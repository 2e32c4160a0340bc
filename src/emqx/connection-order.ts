/**
 * Which of two EMQX connections of one clientId is the newer (docs/emqx-mode.md, "Which
 * connection an event belongs to").
 *
 * Two clocks could order connects: EMQX's (`connected_at`, carried by WebHook bodies and the
 * REST listing, not by ExHook) and the hub's (when a call arrived). Mixed in one ordering they
 * break as soon as the clocks differ — a connect stamped by a clock that runs behind would lose
 * to every older connection stamped by the other. So an incarnation is always minted on the
 * hub's monotonic clock (a later arrival sorts later) and carries EMQX's `connected_at` beside
 * it, when known, for comparing two connections EMQX itself stamped:
 *
 *     <hub ms>.<counter>.~<connected_at, base 36, or empty>~<node/host:port>
 *
 * A connect is older — stale — only when it and the session's newest connection both carry
 * `connected_at` and its own is the earlier. Otherwise it is applied in arrival order; when it
 * replaces a live connection and nothing but arrival orders the two (ExHook; equal seconds in
 * EMQX 4), the order is *unproven* and the source asks EMQX which connection it holds.
 */
import { newIncarnation, observeIncarnation } from '../domain/incarnation.js'
import type { SessionRecord } from '../domain/session.js'
import { connectionName, isLiveConnection, type EmqxClient } from './emqx-client.js'

export type ConnectOrder =
  /** A newer connection: apply it with this incarnation. */
  | { verdict: 'newer'; incarnation: string; unproven: boolean }
  /** The connection the session holds (or last held), told again. */
  | { verdict: 'same'; incarnation: string }
  /** An older connection than the session's newest, by EMQX's own `connected_at`. */
  | { verdict: 'older'; why: string }

/**
 * Orders `client`'s connect against the session's current connection (`current`) or, when
 * there is none, the last one that ended (`lastEnded`, an incarnation). `authoritative`: the
 * connect comes from EMQX's REST API, which says what EMQX holds *now* — it is newer than
 * anything the hub holds unless it is the very same connection.
 */
export function orderConnect(client: EmqxClient, current: SessionRecord | undefined, lastEnded: string | undefined, authoritative: boolean): ConnectOrder {
  const at = client.connectedAt
  if (current?.connected && isLiveConnection(current, client)) {
    const heldAt = brokerTimeOf(current.incarnation)
    // same node and peer, but EMQX stamped another connect time: a reconnect from that peer
    const reconnected = at !== undefined && heldAt !== undefined && at !== heldAt
    if (!reconnected) return { verdict: 'same', incarnation: current.incarnation }
  }
  const newest = current?.incarnation ?? lastEnded
  if (current === undefined && lastEnded !== undefined && !authoritative && at !== undefined) {
    // an ended connection's connect told again (a WebHook retry) must not bring it back
    if (brokerTimeOf(lastEnded) === at && connectionOf(lastEnded) === connectionName(client)) return { verdict: 'same', incarnation: lastEnded }
  }
  const newestAt = newest === undefined ? undefined : brokerTimeOf(newest)
  if (!authoritative && at !== undefined && newestAt !== undefined && at < newestAt) {
    return { verdict: 'older', why: `connect of ${connectionName(client)} at ${at} is older than the session's connection at ${newestAt}` }
  }
  if (newest !== undefined) observeIncarnation(newest)
  const unproven = !authoritative && current?.connected === true && (at === undefined || newestAt === undefined || at === newestAt)
  return { verdict: 'newer', incarnation: newIncarnation(tagOf(at, connectionName(client))), unproven }
}

/** EMQX's `connected_at` (epoch ms) carried by an incarnation minted here, if it was known. */
export function brokerTimeOf(incarnation: string): number | undefined {
  const tag = tagPart(incarnation)
  if (tag === undefined) return undefined
  const end = tag.indexOf('~', 1)
  if (end <= 1) return undefined
  const at = parseInt(tag.slice(1, end), 36)
  return Number.isFinite(at) ? at : undefined
}

/** The `node/host:port` an incarnation minted here names. */
function connectionOf(incarnation: string): string | undefined {
  const tag = tagPart(incarnation)
  const end = tag?.indexOf('~', 1) ?? -1
  return tag !== undefined && end > 0 ? tag.slice(end + 1) : undefined
}

function tagOf(at: number | undefined, connection: string): string {
  return `~${at === undefined ? '' : Math.max(0, Math.trunc(at)).toString(36)}~${connection}`
}

/** What follows `<ms>.<counter>.`; undefined for incarnations minted elsewhere (or before this format). */
function tagPart(incarnation: string): string | undefined {
  const first = incarnation.indexOf('.')
  const second = first < 0 ? -1 : incarnation.indexOf('.', first + 1)
  const tag = second < 0 ? undefined : incarnation.slice(second + 1)
  return tag?.startsWith('~') ? tag : undefined
}
