/**
 * What is read of the whole fleet: session listings and their topics (the native API and EMQX
 * v4's), subscription entities (listings, and the receivers of a push), totals for the gauges,
 * and the walks the expiry sweep and the reconcile make over stored sessions.
 *
 * With PostgreSQL these are indexed queries: no replica holds the fleet in memory, so a
 * replica's memory does not grow with the number of stored devices and sessions, and any page
 * costs the same (keyset paging on the id). Where one process is the store's only writer
 * (SQLite, embedded) its caches hold the fleet and answer. Both answer alike: every
 * implementation passes test/store/fleet-reads-contract.ts.
 *
 * Ids sort in byte order of their UTF-8 (PostgreSQL's "C" collation); `after` is exclusive.
 */
import type { ChangeProperty } from '../domain/change-topics.js'
import type { Protocol, QoS, Session, SessionRecord } from '../domain/session.js'
import type { SubscriptionEntity } from '../domain/subscription.js'

/** Every field given must match; absent fields do not filter. */
export interface SessionFilter {
  deviceId?: string
  clientId?: string
  protocol?: Protocol
  connected?: boolean
  node?: string
  username?: string
  peerHost?: string
  cleanStart?: boolean
  protoVer?: number
  /** The client id contains this (EMQX's `_like_clientid`). */
  clientIdLike?: string
  /** The username contains this (EMQX's `_like_username`). */
  usernameLike?: string
  /** Epoch ms, inclusive. */
  createdAtFrom?: number
  createdAtTo?: number
  connectedAtFrom?: number
  connectedAtTo?: number
}

/**
 * A page: after an id (keyset: what the native API's cursors carry), or from an offset (what
 * EMQX v4's `_page` asks for). `more` in the answer says whether anything follows.
 */
export interface PageRequest {
  after?: string
  offset?: number
  limit: number
}

/** A topic of a session as EMQX v4's `/subscriptions` lists it. */
export interface TopicRow {
  clientId: string
  node: string
  topic: string
  qos: QoS
}

export interface TopicFilter {
  clientId?: string
  node?: string
  /** The topic exactly. */
  topic?: string
  qos?: QoS
  /** Shared subscriptions of this group (`$share/{group}/…`). */
  share?: string
  /** Topics this filter matches (EMQX's `_match_topic`). */
  matchTopic?: string
}

export interface SubscriptionQuery {
  deviceId?: string
  sessionId?: string
  /** Return entities whose id sorts after this one. */
  after?: string
  limit: number
}

export interface FleetTotals {
  sessions: number
  connectedByProtocol: Partial<Record<Protocol, number>>
  subscriptions: number
}

export interface FleetReads {
  /** A session with its topics. */
  session(id: string): Promise<Session | undefined>
  /** The sessions of these ids that exist, with their topics (the reconcile compares a listed page with them). */
  sessionsOf(ids: readonly string[]): Promise<Map<string, Session>>
  /** Sessions matching `filter`, ordered by id. */
  sessions(filter: SessionFilter, page: PageRequest): Promise<{ sessions: Session[]; more: boolean }>
  /** How many sessions match `filter`. */
  countSessions(filter: SessionFilter): Promise<number>
  /** Topics of the sessions matching `filter`, ordered by client id, then topic. */
  topics(filter: TopicFilter, page: PageRequest): Promise<{ topics: TopicRow[]; more: boolean }>
  countTopics(filter: TopicFilter): Promise<number>
  subscription(id: string): Promise<SubscriptionEntity | undefined>
  /** Subscription entities, ordered by id. */
  subscriptions(query: SubscriptionQuery): Promise<{ subscriptions: SubscriptionEntity[]; more: boolean }>
  /** The subscription entities of `deviceId` that receive changes of `property` (whom a push reaches). */
  receiving(deviceId: string, property: ChangeProperty): Promise<SubscriptionEntity[]>
  /**
   * Offline persistent sessions whose expiry is due at `now` (disconnectedAt + expiryInterval
   * seconds ≤ now), ordered by id, after `after`, at most `limit`: the expiry sweep's walk.
   */
  dueToExpire(now: number, after: string | undefined, limit: number): Promise<SessionRecord[]>
  totals(): Promise<FleetTotals>
}
