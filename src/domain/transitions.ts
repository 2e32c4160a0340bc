/**
 * Pure state transitions of a session entity: given what the registry holds for a clientId and
 * one lifecycle event, what the session becomes. No I/O, no clocks but the event's own — so
 * every race the registry can meet is a plain unit test of this file.
 */
import { compareIncarnations } from './incarnation.js'
import type { ConnectedEvent, LifecycleEvent } from './lifecycle-event.js'
import type { DisconnectReason, SessionRecord, TopicSubscription } from './session.js'
import { expiresAt, sessionIdOf } from './session.js'

/**
 * How long the incarnation of an ended session is remembered, to refuse late events of it (and of
 * older connections): long past any hook EMQX retries, short enough that a table of them stays small.
 */
export const TOMBSTONE_MS = 10 * 60_000

export type TopicChange =
  | { kind: 'keep' }
  | { kind: 'clear' }
  /** The session's topics cleared and these held instead, in one change (a new connection with its broker's topics). */
  | { kind: 'replace'; subscriptions: TopicSubscription[] }
  | { kind: 'add'; subscriptions: TopicSubscription[] }
  | { kind: 'remove'; topics: string[] }

/** Why a session entity ended: its connection's end (a clean session), its expiry, or an operator discarding it offline. */
export type SessionEndReason = DisconnectReason | 'expired' | 'discarded'

export interface Applied {
  outcome: 'applied'
  /** The session after the event; `null` when the session entity ends (is deleted). */
  session: SessionRecord | null
  /** Set when the session entity ends: why (the change log says it, for the event stream). */
  endedBy?: SessionEndReason
  topics: TopicChange
  /** Set when a still-connected older incarnation was replaced by this connect. */
  tookOver?: SessionRecord
  /** Set when nothing of the session changed but its version (and its topics). */
  versionOnly?: true
}

/** `stale`: nothing changes, the event belongs to a connection that is no longer the session's. */
export type Transition = Applied | { outcome: 'stale'; why: string }

/**
 * `lastIncarnation`: when there is no session, the incarnation of the last one that ended for
 * this clientId (if remembered), so a late connect of an even older connection is refused.
 */
export function transition(current: SessionRecord | undefined, event: LifecycleEvent, lastIncarnation?: string): Transition {
  switch (event.kind) {
    case 'connected':
      return connect(current, event, lastIncarnation)
    case 'subscribed':
    case 'unsubscribed': {
      const stale = notTheLiveConnection(current, event.incarnation)
      if (stale !== null || current === undefined) return { outcome: 'stale', why: stale ?? 'no session' }
      return {
        outcome: 'applied',
        session: { ...current, version: current.version + 1 },
        versionOnly: true,
        topics:
          event.kind === 'subscribed'
            ? { kind: 'add', subscriptions: event.subscriptions }
            : { kind: 'remove', topics: event.topics }
      }
    }
    case 'disconnected': {
      const stale = notTheLiveConnection(current, event.incarnation)
      if (stale !== null || current === undefined) return { outcome: 'stale', why: stale ?? 'no session' }
      return endConnection(current, event.at, event.reason)
    }
  }
}

function connect(current: SessionRecord | undefined, event: ConnectedEvent, lastIncarnation: string | undefined): Transition {
  const newest = current?.incarnation ?? lastIncarnation
  if (newest !== undefined && compareIncarnations(event.incarnation, newest) < 0) {
    return { outcome: 'stale', why: `connect of ${event.incarnation} arrived after newer ${newest}` }
  }
  // the same connection told twice (a hook call EMQX sent again): nothing new, and an ended
  // connection does not come back
  if (event.incarnation === newest && (current === undefined || current.connected)) {
    const expiryInterval = event.cleanStart ? 0 : event.expiryInterval
    if (current !== undefined && (current.cleanStart !== event.cleanStart || current.expiryInterval !== expiryInterval)) {
      // told again with the broker's truth about the session it asked for (EMQX's REST API,
      // where a hook could not say): corrected in place, the connection and topics unchanged
      return { outcome: 'applied', session: { ...current, cleanStart: event.cleanStart, expiryInterval, version: current.version + 1 }, topics: { kind: 'keep' } }
    }
    return { outcome: 'stale', why: `connect of ${event.incarnation} repeated` }
  }
  const resumes = resumesSession(current, event)
  const session: SessionRecord = {
    id: sessionIdOf(event.clientId),
    protocol: event.protocol,
    clientId: event.clientId,
    deviceId: event.deviceId,
    username: event.username,
    mountpoint: event.mountpoint,
    node: event.node,
    peerHost: event.peerHost,
    peerPort: event.peerPort,
    sockPort: event.sockPort,
    keepalive: event.keepalive,
    protoVer: event.protoVer,
    cleanStart: event.cleanStart,
    expiryInterval: event.cleanStart ? 0 : event.expiryInterval,
    connected: true,
    createdAt: resumes && current ? current.createdAt : event.at,
    connectedAt: event.at,
    disconnectedAt: null,
    disconnectReason: null,
    incarnation: event.incarnation,
    version: (current?.version ?? 0) + 1
  }
  return {
    outcome: 'applied',
    session,
    topics: resumes ? { kind: 'keep' } : newConnectionTopics(event),
    ...(current?.connected ? { tookOver: current } : {})
  }
}

/**
 * MQTT: a persistent session resumes only when both the old and the new connection asked for
 * one; a clean start (or a clean predecessor) discards the old session state.
 */
export function resumesSession(current: SessionRecord | undefined, event: Pick<ConnectedEvent, 'cleanStart'>): boolean {
  return current !== undefined && !current.cleanStart && !event.cleanStart
}

/** A connection that does not resume: no topics, or those its broker holds for it already. */
function newConnectionTopics(event: ConnectedEvent): TopicChange {
  return event.subscriptions === undefined || event.subscriptions.length === 0 ? { kind: 'clear' } : { kind: 'replace', subscriptions: event.subscriptions }
}

/** A connection's end: a clean session ends with it (entity deleted); a persistent one goes offline. */
export function endConnection(current: SessionRecord, at: number, reason: DisconnectReason): Applied {
  if (current.cleanStart) return { outcome: 'applied', session: null, topics: { kind: 'clear' }, endedBy: reason }
  return {
    outcome: 'applied',
    session: { ...current, connected: false, disconnectedAt: at, disconnectReason: reason, version: current.version + 1 },
    topics: { kind: 'keep' }
  }
}

/** A persistent session offline past its expiry interval ends, with its topics. */
export function expire(current: SessionRecord, now: number): Applied | null {
  const deadline = expiresAt(current)
  if (deadline === null || deadline > now) return null
  return { outcome: 'applied', session: null, topics: { kind: 'clear' }, endedBy: 'expired' }
}

function notTheLiveConnection(current: SessionRecord | undefined, incarnation: string): string | null {
  if (current === undefined) return 'no session for this clientId'
  if (current.incarnation !== incarnation) return `event of ${incarnation}, session is ${current.incarnation}`
  if (!current.connected) return 'session is not connected'
  return null
}
