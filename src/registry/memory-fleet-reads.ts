/**
 * FleetReads answered from the caches: where one process is the store's only writer (SQLite,
 * embedded) the SessionRegistry's records, the TopicBook and the SubscriptionBook hold the whole
 * fleet, kept by the change log, so listings are walks over them. The filters' meaning is
 * written here once (the PostgreSQL queries, store/postgres/fleet-queries.ts, say the same in
 * SQL; test/store/fleet-reads-contract.ts holds both to it).
 *
 * A page is the smallest ids after the cursor (or past the offset) among the matching sessions:
 * collected in one pass, keeping only as many as the page needs, so a page of 100 out of a
 * million costs one walk, not a sort of the million.
 */
import type { ChangeProperty } from '../domain/change-topics.js'
import type { Device } from '../domain/device.js'
import { expiresAt, type Session, type SessionRecord, type TopicSubscription } from '../domain/session.js'
import type { SubscriptionEntity } from '../domain/subscription.js'
import { topicMatches } from '../domain/topic-match.js'
import {
  compareIds,
  deviceMatches,
  sortsAfter,
  parseTopicCursor,
  type DeviceFilter,
  type FleetReads,
  type FleetTotals,
  type PageRequest,
  type SessionFilter,
  type SessionState,
  type SubscriptionQuery,
  type TopicFilter,
  type TopicRow
} from '../store/fleet-reads.js'
import type { SubscriptionBook } from './subscription-book.js'
import type { TopicBook } from './topic-book.js'

/** The cached sessions (the SessionRegistry). */
export interface SessionRecords {
  record(id: string): SessionRecord | undefined
  records(): Iterable<SessionRecord>
  /** How many there are, where known without a walk (the unfiltered count). */
  readonly size?: number
}

/** Whether `filter` gives no field a value (a field set to undefined is absent): every session passes it. */
function filtersNothing(filter: SessionFilter): boolean {
  for (const value of Object.values(filter)) if (value !== undefined) return false
  return true
}

/** Whether a session passes every filter given (absent fields do not filter). */
export function sessionMatches(s: SessionRecord, f: SessionFilter): boolean {
  if (f.deviceId !== undefined && s.deviceId !== f.deviceId) return false
  if (f.clientId !== undefined && s.clientId !== f.clientId) return false
  if (f.protocol !== undefined && s.protocol !== f.protocol) return false
  if (f.connected !== undefined && s.connected !== f.connected) return false
  if (f.node !== undefined && s.node !== f.node) return false
  if (f.username !== undefined && s.username !== f.username) return false
  if (f.peerHost !== undefined && s.peerHost !== f.peerHost) return false
  if (f.cleanStart !== undefined && s.cleanStart !== f.cleanStart) return false
  if (f.protoVer !== undefined && s.protoVer !== f.protoVer) return false
  if (f.clientIdLike !== undefined && !s.clientId.includes(f.clientIdLike)) return false
  // a session without a username holds '' for this search, which '' (and only '') is in
  if (f.usernameLike !== undefined && !(s.username ?? '').includes(f.usernameLike)) return false
  if (f.createdAtFrom !== undefined && s.createdAt < f.createdAtFrom) return false
  if (f.createdAtTo !== undefined && s.createdAt > f.createdAtTo) return false
  if (f.connectedAtFrom !== undefined && s.connectedAt < f.connectedAtFrom) return false
  if (f.connectedAtTo !== undefined && s.connectedAt > f.connectedAtTo) return false
  return true
}

/** Whether a topic row passes every filter given. */
export function topicRowMatches(row: TopicRow, f: TopicFilter): boolean {
  if (f.clientId !== undefined && row.clientId !== f.clientId) return false
  if (f.node !== undefined && row.node !== f.node) return false
  if (f.topic !== undefined && row.topic !== f.topic) return false
  if (f.qos !== undefined && row.qos !== f.qos) return false
  if (f.share !== undefined && !row.topic.startsWith(`$share/${f.share}/`)) return false
  // the row's topic is a filter; `matchTopic` a topic name it would receive
  if (f.matchTopic !== undefined && !topicMatches(row.topic, f.matchTopic)) return false
  return true
}

/** Above this many rows kept for a page, collecting them all and sorting once is cheaper. */
const SORTED_INSERT_LIMIT = 10_000

/**
 * The `keep` smallest items (by `compare`) of those offered, in order. Items offered in order
 * (Maps filled from a store read by id) mostly cost one comparison each.
 */
class Smallest<T> {
  private readonly items: T[] = []
  private readonly bounded: boolean

  constructor(
    private readonly keep: number,
    private readonly compare: (a: T, b: T) => number
  ) {
    this.bounded = keep <= SORTED_INSERT_LIMIT
  }

  offer(item: T): void {
    const items = this.items
    if (!this.bounded) {
      items.push(item)
      return
    }
    if (items.length === this.keep) {
      if (this.keep === 0 || this.compare(item, items[items.length - 1]!) >= 0) return
      items.pop()
    }
    let lo = 0
    let hi = items.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.compare(items[mid]!, item) <= 0) lo = mid + 1
      else hi = mid
    }
    items.splice(lo, 0, item)
  }

  /** The largest item kept once as many as wanted are (anything after it is not wanted). */
  get last(): T | undefined {
    return this.bounded && this.items.length === this.keep ? this.items[this.items.length - 1] : undefined
  }

  sorted(): T[] {
    return this.bounded ? this.items : this.items.sort(this.compare).slice(0, this.keep)
  }
}

const byId = (a: { id: string }, b: { id: string }): number => compareIds(a.id, b.id)
const byTopic = (a: { topic: string }, b: { topic: string }): number => compareIds(a.topic, b.topic)
const byClientThenTopic = (a: TopicRow, b: TopicRow): number => compareIds(a.clientId, b.clientId) || compareIds(a.topic, b.topic)

/** The rows a page keeps of those after its cursor: the skipped ones, the page, and one to tell `more`. */
function pageSpan(page: PageRequest): { skip: number; keep: number } {
  const skip = Math.max(0, page.offset ?? 0)
  return { skip, keep: skip + page.limit + 1 }
}

function cut<T>(sorted: T[], page: PageRequest): { rows: T[]; more: boolean } {
  const { skip } = pageSpan(page)
  return { rows: sorted.slice(skip, skip + page.limit), more: sorted.length > skip + page.limit }
}

/** The cached devices (the DeviceDirectory, which holds them all where the caches hold the fleet). */
export interface DeviceRecords {
  values(): Iterable<Device>
  /** The devices with an id after `after` (all when undefined), in id order, a page costing its length. */
  inIdOrder(after?: string): Iterable<Device>
  /** How many there are (the device directory knows without a walk). */
  readonly size: number
}

const NO_DEVICES: DeviceRecords = { values: () => [], inIdOrder: () => [], size: 0 }

export class MemoryFleetReads implements FleetReads {
  constructor(
    private readonly sessionRecords: SessionRecords,
    private readonly topicBook: TopicBook,
    private readonly subscriptionBook: SubscriptionBook,
    private readonly deviceRecords: DeviceRecords = NO_DEVICES
  ) {}

  async devices(filter: DeviceFilter, page: PageRequest): Promise<{ devices: Device[]; more: boolean }> {
    let connected: Set<string> | undefined
    if (filter.connected !== undefined) {
      connected = new Set<string>()
      for (const s of this.sessionRecords.records()) if (s.connected) connected.add(s.deviceId)
    }
    // in id order from the cursor on: the walk stops once the page and one more are found
    const found: Device[] = []
    for (const d of this.deviceRecords.inIdOrder(page.after)) {
      if (connected && connected.has(d.id) !== filter.connected) continue
      if (!deviceMatches(d, filter)) continue
      found.push(d)
      if (found.length > page.limit) break
    }
    return { devices: found.slice(0, page.limit), more: found.length > page.limit }
  }

  async session(id: string): Promise<Session | undefined> {
    const record = this.sessionRecords.record(id)
    return record ? this.withTopics(record) : undefined
  }

  async sessionsOf(ids: readonly string[]): Promise<Map<string, Session>> {
    const found = new Map<string, Session>()
    for (const id of ids) {
      const record = this.sessionRecords.record(id)
      if (record) found.set(id, this.withTopics(record))
    }
    return found
  }

  async sessions(filter: SessionFilter, page: PageRequest): Promise<{ sessions: Session[]; more: boolean }> {
    const smallest = new Smallest<SessionRecord>(pageSpan(page).keep, byId)
    const isAfter = sortsAfter(page.after)
    const all = filtersNothing(filter)
    for (const s of this.candidates(filter)) {
      if (!isAfter(s.id)) continue
      if (all || sessionMatches(s, filter)) smallest.offer(s)
    }
    const { rows, more } = cut(smallest.sorted(), page)
    return { sessions: rows.map((r) => this.withTopics(r)), more }
  }

  async countSessions(filter: SessionFilter): Promise<number> {
    const size = this.sessionRecords.size
    if (size !== undefined && filtersNothing(filter)) return size
    let n = 0
    for (const s of this.candidates(filter)) if (sessionMatches(s, filter)) n++
    return n
  }

  async topics(filter: TopicFilter, page: PageRequest): Promise<{ topics: TopicRow[]; more: boolean }> {
    const smallest = new Smallest<TopicRow>(pageSpan(page).keep, byClientThenTopic)
    const after = page.after === undefined ? undefined : parseTopicCursor(page.after)
    // a session whose client id sorts after the last row kept has no row wanted: its topics are not read
    const wanted = (clientId: string): boolean => {
      const last = smallest.last
      return (after === undefined || compareIds(clientId, after.clientId) >= 0) && (last === undefined || compareIds(clientId, last.clientId) <= 0)
    }
    for (const row of this.topicRows(filter, wanted)) {
      if (after !== undefined && byClientThenTopic(row, { ...row, ...after }) <= 0) continue
      smallest.offer(row)
    }
    const { rows, more } = cut(smallest.sorted(), page)
    return { topics: rows, more }
  }

  async countTopics(filter: TopicFilter): Promise<number> {
    let n = 0
    for (const _row of this.topicRows(filter)) n++
    return n
  }

  async subscription(id: string): Promise<SubscriptionEntity | undefined> {
    return this.subscriptionBook.get(id)
  }

  // entity ids are ASCII (`sub-` and base64url), so the book's own ordering is byte order
  async subscriptions(query: SubscriptionQuery): Promise<{ subscriptions: SubscriptionEntity[]; more: boolean }> {
    return this.subscriptionBook.list(query)
  }

  async receiving(deviceId: string, property: ChangeProperty): Promise<SubscriptionEntity[]> {
    return this.subscriptionBook.receiving(deviceId, property).sort(byId)
  }

  async sessionStates(connectedOnly: boolean, after: string | undefined, limit: number): Promise<{ states: SessionState[]; more: boolean }> {
    const smallest = new Smallest<SessionRecord>(limit + 1, byId)
    const isAfter = sortsAfter(after)
    for (const s of this.sessionRecords.records()) {
      if (!isAfter(s.id)) continue
      if (!connectedOnly || s.connected) smallest.offer(s)
    }
    const rows = smallest.sorted()
    return { states: rows.slice(0, limit).map((s) => ({ id: s.id, connected: s.connected })), more: rows.length > limit }
  }

  async dueToExpire(now: number, after: string | undefined, limit: number): Promise<SessionRecord[]> {
    const smallest = new Smallest<SessionRecord>(limit, byId)
    const isAfter = sortsAfter(after)
    for (const s of this.sessionRecords.records()) {
      if (!isAfter(s.id)) continue
      const deadline = expiresAt(s)
      if (deadline !== null && deadline <= now) smallest.offer(s)
    }
    return smallest.sorted()
  }

  async totals(): Promise<FleetTotals> {
    let sessions = 0
    const connectedByProtocol: FleetTotals['connectedByProtocol'] = {}
    const connectedByNode: FleetTotals['connectedByNode'] = {}
    for (const s of this.sessionRecords.records()) {
      sessions++
      if (!s.connected) continue
      connectedByProtocol[s.protocol] = (connectedByProtocol[s.protocol] ?? 0) + 1
      connectedByNode[s.node] = (connectedByNode[s.node] ?? 0) + 1
    }
    return { sessions, connectedByProtocol, connectedByNode, subscriptions: this.subscriptionBook.size, devices: this.deviceRecords.size }
  }

  /** The sessions a filter could match: the one of its client id (the session id), or all. */
  private candidates(filter: SessionFilter): Iterable<SessionRecord> {
    if (filter.clientId === undefined) return this.sessionRecords.records()
    const one = this.sessionRecords.record(filter.clientId)
    return one ? [one] : []
  }

  private *topicRows(filter: TopicFilter, wanted: (clientId: string) => boolean = () => true): Generator<TopicRow> {
    for (const s of this.candidates({ clientId: filter.clientId, node: filter.node })) {
      if (filter.node !== undefined && s.node !== filter.node) continue
      if (!wanted(s.clientId)) continue
      for (const t of this.topicBook.topicsOf(s.id)) {
        const row: TopicRow = { clientId: s.clientId, node: s.node, topic: t.topic, qos: t.qos }
        if (topicRowMatches(row, filter)) yield row
      }
    }
  }

  /** A session with its topics, ordered by topic (as the PostgreSQL store lists them). */
  private withTopics(record: SessionRecord): Session {
    const topics: TopicSubscription[] = this.topicBook.topicsOf(record.id).sort(byTopic)
    return { ...record, topics }
  }
}

