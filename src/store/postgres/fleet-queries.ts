/**
 * FleetReads as PostgreSQL queries (schema version 4's columns and indexes, version 5's totals,
 * schema.ts): what needs the whole fleet is asked of the database, one query per call, so no
 * replica holds the fleet in memory. The filters mean what src/registry/memory-fleet-reads.ts
 * says they mean; test/store/fleet-reads-contract.ts holds both to it.
 *
 * Paging: a keyset page is `id > $after ORDER BY id LIMIT limit + 1` (the extra row tells
 * `more`), a range of the primary key or of a filter's (column, id) index, so it costs the same
 * wherever it is in the fleet. EMQX v4's `_page` asks for an offset, which PostgreSQL can only
 * skip by walking: an offset walks keys alone (an index-only scan where unfiltered), from the
 * nearer end of the index where unfiltered (the stored total says where the end is), so a page
 * costs what lies between it and the nearer end — the middle of the fleet the most. The EMQX v4
 * routes spare most walks by continuing from a page they served (api/compat/page-positions.ts).
 *
 * Counts: unfiltered, the stored total (one row, kept by every batch); filtered, `count(*)`,
 * which costs what it scans — EMQX 4 itself answers -1 for a query with conditions
 * (emqx_mgmt_api `node_query`/`cluster_query`), and so do the hub's v4 routes.
 *
 * Measured before version 5 (2 cpus shared with other work, load average 10–14; PostgreSQL 15;
 * 1,000,000 sessions as bench/lib/scale-fleet.ts writes them, half connected, one topic each;
 * p50 of 10–25 calls, pages of 100):
 * - keyset pages, first/middle/last, unfiltered or by connected, node, device, username, peer
 *   address, protocol, time range: 0.5–14 ms;
 * - offset pages cost what they skip: page 1 4–6 ms, page 500 30 ms, page 5,000 0.55 s, the
 *   last (offset 999,900) 1.0–1.2 s (rows read whole then; keys alone since: see bench/README.md);
 * - an exact count of the fleet 0.3 s (connected only: 0.7 s); of one device's 0.5 ms;
 * - substring searches (clientIdLike, usernameLike) and matchTopic read every row: 0.4–1.3 s.
 */
import type { ChangeProperty } from '../../domain/change-topics.js'
import type { QoS, Session, SessionRecord, TopicSubscription } from '../../domain/session.js'
import type { SubscriptionEntity } from '../../domain/subscription.js'
import type { Device } from '../../domain/device.js'
import {
  parseTopicCursor,
  topicCursor,
  type DeviceFilter,
  type FleetReads,
  type FleetTotals,
  type PageRequest,
  type SessionFilter,
  type SessionState,
  type SubscriptionQuery,
  type TopicFilter,
  type TopicRow
} from '../fleet-reads.js'
import type { StoreReads } from './store-reads.js'
import { subscriptionOfColumns } from './topic-columns.js'
import type { QualifiedTables } from './schema.js'

interface SessionRow {
  doc: SessionRecord
  version: string
  /** [topic, qos, rh, rap, nl, sub_id] per topic, ordered by topic. */
  topics: [string, QoS, number | null, boolean | null, boolean | null, number | null][]
}

/** SQL conditions and their parameters, numbered as they are added. */
class Conditions {
  readonly where: string[] = []
  readonly values: unknown[] = []

  add(sql: (param: string) => string, value: unknown): void {
    this.values.push(value)
    this.where.push(sql(`$${this.values.length}`))
  }

  param(value: unknown): string {
    this.values.push(value)
    return `$${this.values.length}`
  }

  get sql(): string {
    return this.where.length === 0 ? 'true' : this.where.join(' AND ')
  }
}

/** The conditions of a session filter on `sessions s` (the session id is the client id). */
function sessionConditions(filter: SessionFilter): Conditions {
  const c = new Conditions()
  if (filter.deviceId !== undefined) c.add((p) => `s.device_id = ${p}`, filter.deviceId)
  if (filter.clientId !== undefined) c.add((p) => `s.id = ${p}`, filter.clientId)
  if (filter.protocol !== undefined) c.add((p) => `s.protocol = ${p}`, filter.protocol)
  if (filter.connected !== undefined) c.add((p) => `s.connected = ${p}`, filter.connected)
  if (filter.node !== undefined) c.add((p) => `s.node = ${p}`, filter.node)
  if (filter.username !== undefined) c.add((p) => `s.username = ${p}`, filter.username)
  if (filter.peerHost !== undefined) c.add((p) => `s.peer_host = ${p}`, filter.peerHost)
  if (filter.cleanStart !== undefined) c.add((p) => `s.clean_start = ${p}`, filter.cleanStart)
  if (filter.protoVer !== undefined) c.add((p) => `s.proto_ver = ${p}`, filter.protoVer)
  // substrings by strpos, not LIKE: `%` and `_` in what is searched for are themselves
  if (filter.clientIdLike !== undefined) c.add((p) => `strpos(s.id, ${p}) > 0`, filter.clientIdLike)
  if (filter.usernameLike !== undefined) c.add((p) => `strpos(coalesce(s.username, ''), ${p}) > 0`, filter.usernameLike)
  if (filter.createdAtFrom !== undefined) c.add((p) => `s.created_at >= ${p}`, filter.createdAtFrom)
  if (filter.createdAtTo !== undefined) c.add((p) => `s.created_at <= ${p}`, filter.createdAtTo)
  if (filter.connectedAtFrom !== undefined) c.add((p) => `s.connected_at >= ${p}`, filter.connectedAtFrom)
  if (filter.connectedAtTo !== undefined) c.add((p) => `s.connected_at <= ${p}`, filter.connectedAtTo)
  return c
}

/** The conditions of a topic filter on `topics t JOIN sessions s`. */
function topicConditions(filter: TopicFilter): Conditions {
  const c = new Conditions()
  if (filter.clientId !== undefined) c.add((p) => `t.session_id = ${p}`, filter.clientId)
  if (filter.node !== undefined) c.add((p) => `s.node = ${p}`, filter.node)
  if (filter.topic !== undefined) c.add((p) => `t.topic = ${p}`, filter.topic)
  if (filter.qos !== undefined) c.add((p) => `t.qos = ${p}`, filter.qos)
  if (filter.share !== undefined) c.add((p) => `starts_with(t.topic, ${p})`, `$share/${filter.share}/`)
  if (filter.matchTopic !== undefined) c.add((p) => `t.topic ~ ${p}`, filtersMatching(filter.matchTopic))
  return c
}

const REGEX_SPECIAL = /[\\^$.|?*+()[\]{}]/g

/**
 * A regular expression of the subscription filters that receive `topic` (as domain/topic-match.ts
 * decides): level by level, the level itself or `+`, or `#` for it and everything after —
 * `a/#` receives `a` too.
 */
export function filtersMatching(topic: string): string {
  const levels = topic.split('/')
  let rest = ''
  for (let i = levels.length - 1; i >= 0; i--) {
    const level = `(?:${levels[i]!.replace(REGEX_SPECIAL, '\\$&')}|\\+)`
    rest = i === levels.length - 1 ? `(?:#|${level}(?:/#)?)` : `(?:#|${level}/${rest})`
  }
  return `^${rest}$`
}

/** The keyset condition, LIMIT and OFFSET of a page, one row more than it shows. */
function pageClause(c: Conditions, page: PageRequest, keyset: (c: Conditions, after: string) => void): string {
  if (page.after !== undefined) keyset(c, page.after)
  const limit = c.param(page.limit + 1)
  const offset = page.offset ? ` OFFSET ${c.param(page.offset)}` : ''
  return ` LIMIT ${limit}${offset}`
}

function recordOf(row: { doc: SessionRecord; version: string }): SessionRecord {
  // the version column is the truth (schema.ts); assigning keeps the key where it was
  row.doc.version = Number(row.version)
  return row.doc
}

function sessionOf(row: SessionRow): Session {
  return { ...recordOf(row), topics: row.topics.map(topicOf) }
}

function topicOf([topic, qos, rh, rap, nl, sub_id]: SessionRow['topics'][number]): TopicSubscription {
  return subscriptionOfColumns({ topic, qos, rh, rap, nl, sub_id })
}

export class FleetQueries implements FleetReads {
  /** A session's columns with its topics, for rows of `sessions` named `s`. */
  private readonly sessionColumns: string

  constructor(
    private readonly pool: StoreReads,
    private readonly t: QualifiedTables
  ) {
    this.sessionColumns =
      's.doc, s.version, (SELECT coalesce(json_agg(json_build_array(t.topic, t.qos, t.rh, t.rap, t.nl, t.sub_id) ORDER BY t.topic), \'[]\') ' +
      `FROM ${t.topics} t WHERE t.session_id = s.id) AS topics`
  }

  async session(id: string): Promise<Session | undefined> {
    const { rows } = await this.pool.query<SessionRow>(`SELECT ${this.sessionColumns} FROM ${this.t.sessions} s WHERE s.id = $1`, [id])
    return rows[0] ? sessionOf(rows[0]) : undefined
  }

  async sessionsOf(ids: readonly string[]): Promise<Map<string, Session>> {
    const found = new Map<string, Session>()
    if (ids.length === 0) return found
    const { rows } = await this.pool.query<SessionRow>(`SELECT ${this.sessionColumns} FROM ${this.t.sessions} s WHERE s.id = ANY($1::text[])`, [ids])
    for (const row of rows) found.set(row.doc.id, sessionOf(row))
    return found
  }

  async sessions(filter: SessionFilter, page: PageRequest): Promise<{ sessions: Session[]; more: boolean }> {
    const c = sessionConditions(filter)
    const whole = c.where.length === 0 && page.after === undefined && page.offset
    const paging = whole ? '' : pageClause(c, page, (c, after) => c.add((p) => `s.id > ${p}`, after))
    // the page first, then the topics of its rows only; an offset walks ids alone (unfiltered,
    // an index-only scan of the primary key, from its nearer end: the rows it skips are not
    // read), and only the page's rows are read
    const ids = whole
      ? this.nearerEndWalk(c, `${this.t.sessions} s`, 's.id', ['s.id'], 'sessions', page.offset!, page.limit + 1)
      : `SELECT s.id FROM ${this.t.sessions} s WHERE ${c.sql} ORDER BY s.id${paging}`
    // each key looked up by itself (LATERAL … LIMIT 1): joined as a set, the planner may hash
    // the whole table for a page whose size it cannot foresee
    const pageRows = page.offset
      ? `SELECT p.id, s.doc, s.version FROM (${ids}) p CROSS JOIN LATERAL (SELECT s.doc, s.version FROM ${this.t.sessions} s WHERE s.id = p.id LIMIT 1) s`
      : `SELECT s.id, s.doc, s.version FROM ${this.t.sessions} s WHERE ${c.sql} ORDER BY s.id${paging}`
    const { rows } = await this.pool.query<SessionRow>(`SELECT ${this.sessionColumns} FROM (${pageRows}) s ORDER BY s.id`, c.values)
    return { sessions: rows.slice(0, page.limit).map(sessionOf), more: rows.length > page.limit }
  }

  /**
   * The keys of rows `offset` to `offset + rows − 1` of a whole table in key order, walked from
   * whichever end of its primary key is nearer: the stored total (schema.ts, version 5), read in
   * the statement's own snapshot — so exactly the rows that snapshot holds — says how far the
   * page is from the end. A page in the last half then costs what lies after it, not before it.
   */
  private nearerEndWalk(c: Conditions, from: string, keys: string, order: string[], total: 'sessions' | 'topics', offset: number, rows: number): string {
    const o = `${c.param(offset)}::bigint`
    const n = `${c.param(rows)}::bigint`
    const stored = `(SELECT ${total} FROM ${this.t.log_head})`
    const descending = order.map((k) => `${k.replace(/^\w+\./, '')} DESC`).join(', ')
    // from the end, `rows` rows (a page running past the end takes rows before it too, which the
    // outer LIMIT drops): a LIMIT the planner can read keeps its estimate — and the plan's cost,
    // which past jit_above_cost buys a JIT compilation dearer than the walk — at a page's size
    return (
      `(SELECT ${keys} FROM ${from} WHERE 2 * ${o} + ${n} <= ${stored} ORDER BY ${order.join(', ')} LIMIT ${n} OFFSET ${o}) UNION ALL ` +
      `(SELECT * FROM (SELECT ${keys} FROM ${from} WHERE 2 * ${o} + ${n} > ${stored} ORDER BY ${order.map((k) => `${k} DESC`).join(', ')} ` +
      `LIMIT ${n} OFFSET greatest(0, ${stored} - ${o} - ${n})) tail ORDER BY ${descending} LIMIT greatest(0, least(${n}, ${stored} - ${o})))`
    )
  }

  async countSessions(filter: SessionFilter): Promise<number> {
    const c = sessionConditions(filter)
    if (c.where.length === 0) return (await this.storedTotals()).sessions
    const { rows } = await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.t.sessions} s WHERE ${c.sql}`, c.values)
    return Number(rows[0]!.n)
  }

  /** The totals every batch keeps (schema.ts, version 5): one row, where count(*) reads them all. */
  private async storedTotals(): Promise<{ sessions: number; topics: number }> {
    const { rows } = await this.pool.query<{ sessions: string; topics: string }>(`SELECT sessions, topics FROM ${this.t.log_head}`)
    return { sessions: Number(rows[0]!.sessions), topics: Number(rows[0]!.topics) }
  }

  async topics(filter: TopicFilter, page: PageRequest): Promise<{ topics: TopicRow[]; more: boolean }> {
    const c = topicConditions(filter)
    const whole = c.where.length === 0 && page.after === undefined && page.offset
    const paging = whole
      ? ''
      : pageClause(c, page, (c, after) => {
          const { clientId, topic } = parseTopicCursor(after)
          c.where.push(`(t.session_id, t.topic) > (${c.param(clientId)}, ${c.param(topic)})`)
        })
    // the page of topic rows first (the primary key's order), then their sessions' nodes; an
    // offset walks the keys alone (unfiltered, an index-only scan of the primary key, from its
    // nearer end), and only the page's rows are read
    const keys = whole
      ? this.nearerEndWalk(c, `${this.t.topics} t`, 't.session_id, t.topic', ['t.session_id', 't.topic'], 'topics', page.offset!, page.limit + 1)
      : `SELECT t.session_id, t.topic FROM ${this.t.topics} t WHERE ${c.sql} ORDER BY t.session_id, t.topic${paging}`
    // each key of an offset page looked up by itself (LATERAL … LIMIT 1), as sessions() does
    const sql =
      filter.node !== undefined
        ? `SELECT t.session_id AS client_id, s.node, t.topic, t.qos FROM ${this.t.topics} t JOIN ${this.t.sessions} s ON s.id = t.session_id ` +
          `WHERE ${c.sql} ORDER BY t.session_id, t.topic${paging}`
        : page.offset
          ? `SELECT k.session_id AS client_id, s.node, k.topic, t.qos FROM (${keys}) k ` +
            `CROSS JOIN LATERAL (SELECT t.qos FROM ${this.t.topics} t WHERE t.session_id = k.session_id AND t.topic = k.topic LIMIT 1) t ` +
            `CROSS JOIN LATERAL (SELECT s.node FROM ${this.t.sessions} s WHERE s.id = k.session_id LIMIT 1) s ORDER BY k.session_id, k.topic`
          : `SELECT t.session_id AS client_id, s.node, t.topic, t.qos FROM (SELECT t.* FROM ${this.t.topics} t WHERE ${c.sql} ORDER BY t.session_id, t.topic${paging}) t ` +
            `JOIN ${this.t.sessions} s ON s.id = t.session_id ORDER BY t.session_id, t.topic`
    const { rows } = await this.pool.query<{ client_id: string; node: string; topic: string; qos: QoS }>(sql, c.values)
    return {
      topics: rows.slice(0, page.limit).map((r) => ({ clientId: r.client_id, node: r.node, topic: r.topic, qos: r.qos })),
      more: rows.length > page.limit
    }
  }

  async marks(listing: 'sessions' | 'topics', every: number): Promise<string[]> {
    // numbered along the primary key (an index-only scan), every `every`-th kept
    if (listing === 'sessions') {
      const { rows } = await this.pool.query<{ id: string }>(
        `SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM ${this.t.sessions}) s WHERE n % $1 = 0 ORDER BY n`,
        [every]
      )
      return rows.map((r) => r.id)
    }
    const { rows } = await this.pool.query<{ session_id: string; topic: string }>(
      `SELECT session_id, topic FROM (SELECT session_id, topic, row_number() OVER (ORDER BY session_id, topic) AS n FROM ${this.t.topics}) t ` +
        'WHERE n % $1 = 0 ORDER BY n',
      [every]
    )
    return rows.map((r) => topicCursor({ clientId: r.session_id, topic: r.topic }))
  }

  async countTopics(filter: TopicFilter): Promise<number> {
    const c = topicConditions(filter)
    if (c.where.length === 0) return (await this.storedTotals()).topics
    // every topic row has its session (they are written and cleared together): joined only for its node
    const from = filter.node === undefined ? `${this.t.topics} t` : `${this.t.topics} t JOIN ${this.t.sessions} s ON s.id = t.session_id`
    const { rows } = await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${from} WHERE ${c.sql}`, c.values)
    return Number(rows[0]!.n)
  }

  async subscription(id: string): Promise<SubscriptionEntity | undefined> {
    const { rows } = await this.pool.query<{ doc: SubscriptionEntity }>(`SELECT doc FROM ${this.t.subscriptions} WHERE id = $1`, [id])
    return rows[0]?.doc
  }

  async subscriptions(query: SubscriptionQuery): Promise<{ subscriptions: SubscriptionEntity[]; more: boolean }> {
    const c = new Conditions()
    if (query.deviceId !== undefined) c.add((p) => `device_id = ${p}`, query.deviceId)
    if (query.sessionId !== undefined) c.add((p) => `session_id = ${p}`, query.sessionId)
    if (query.after !== undefined) c.add((p) => `id > ${p}`, query.after)
    const { rows } = await this.pool.query<{ doc: SubscriptionEntity }>(
      `SELECT doc FROM ${this.t.subscriptions} WHERE ${c.sql} ORDER BY id LIMIT ${c.param(query.limit + 1)}`,
      c.values
    )
    return { subscriptions: rows.slice(0, query.limit).map((r) => r.doc), more: rows.length > query.limit }
  }

  async receiving(deviceId: string, property: ChangeProperty): Promise<SubscriptionEntity[]> {
    const { rows } = await this.pool.query<{ doc: SubscriptionEntity }>(
      `SELECT doc FROM ${this.t.subscriptions} WHERE device_id = $1 ` +
        `AND EXISTS (SELECT 1 FROM json_array_elements_text(doc->'properties') AS p(name) WHERE p.name = $2) ORDER BY id`,
      [deviceId, property]
    )
    return rows.map((r) => r.doc)
  }

  async sessionStates(connectedOnly: boolean, after: string | undefined, limit: number): Promise<{ states: SessionState[]; more: boolean }> {
    const c = new Conditions()
    if (connectedOnly) c.add((p) => `connected = ${p}`, true)
    if (after !== undefined) c.add((p) => `id > ${p}`, after)
    // two columns, not the document: a walk of a million sessions reads what it compares
    const { rows } = await this.pool.query<SessionState>(`SELECT id, connected FROM ${this.t.sessions} WHERE ${c.sql} ORDER BY id LIMIT ${c.param(limit + 1)}`, c.values)
    return { states: rows.slice(0, limit), more: rows.length > limit }
  }

  async dueToExpire(now: number, after: string | undefined, limit: number): Promise<SessionRecord[]> {
    const c = new Conditions()
    c.add((p) => `expires_at <= ${p}`, now)
    if (after !== undefined) c.add((p) => `id > ${p}`, after)
    const { rows } = await this.pool.query<{ doc: SessionRecord; version: string }>(
      `SELECT doc, version FROM ${this.t.sessions} WHERE ${c.sql} ORDER BY id LIMIT ${c.param(limit)}`,
      c.values
    )
    return rows.map(recordOf)
  }

  /**
   * The stored totals (schema.ts, versions 5 and 7), which every batch moves: a row and the few
   * of connected_totals, in one snapshot, where counting would read the fleet.
   */
  async totals(): Promise<FleetTotals> {
    const { rows } = await this.pool.query<{ sessions: string; subscriptions: string; devices: string; connected: { protocol: string; node: string; n: number }[] }>(
      `SELECT h.sessions, h.subscriptions, h.devices, ` +
        `(SELECT coalesce(json_agg(c), '[]') FROM (SELECT protocol, node, sessions AS n FROM ${this.t.connected_totals} WHERE sessions <> 0) c) AS connected ` +
        `FROM ${this.t.log_head} h`
    )
    const row = rows[0]!
    const connectedByProtocol: FleetTotals['connectedByProtocol'] = {}
    const connectedByNode: FleetTotals['connectedByNode'] = {}
    for (const { protocol, node, n } of row.connected) {
      const p = protocol as keyof FleetTotals['connectedByProtocol']
      connectedByProtocol[p] = (connectedByProtocol[p] ?? 0) + Number(n)
      connectedByNode[node] = (connectedByNode[node] ?? 0) + Number(n)
    }
    return { sessions: Number(row.sessions), connectedByProtocol, connectedByNode, subscriptions: Number(row.subscriptions), devices: Number(row.devices) }
  }

  /**
   * Walks the devices in id order (the primary key; by owner or group, their indexes, schema.ts
   * version 6), keyset-paged, so a page reads about as many rows as it lists. `connected` looks
   * for one connected session of each candidate device (sessions_by_device); the text search
   * (`q`) has no index and skips what does not match, as the sessions' substring filters do.
   */
  async devices(filter: DeviceFilter, page: PageRequest): Promise<{ devices: Device[]; more: boolean }> {
    const c = new Conditions()
    if (filter.owner !== undefined) c.add((p) => `d.owner = ${p}`, filter.owner)
    if (filter.group !== undefined) c.add((p) => `d.group_name = ${p}`, filter.group)
    if (filter.q !== undefined) {
      // lower() under the columns' "C" collation folds ASCII letters only, as searchFold does
      c.add((p) => `(strpos(lower(d.id), lower(${p} COLLATE "C")) > 0 OR strpos(lower(d.name), lower(${p} COLLATE "C")) > 0)`, filter.q)
    }
    if (filter.connected !== undefined) {
      c.where.push(`${filter.connected ? '' : 'NOT '}EXISTS (SELECT 1 FROM ${this.t.sessions} s WHERE s.device_id = d.id AND s.connected)`)
    }
    if (page.after !== undefined) c.add((p) => `d.id > ${p}`, page.after)
    const { rows } = await this.pool.query<{ doc: Device }>(
      `SELECT d.doc FROM ${this.t.devices} d WHERE ${c.sql} ORDER BY d.id LIMIT ${c.param(page.limit + 1)}`,
      c.values
    )
    return { devices: rows.slice(0, page.limit).map((r) => r.doc), more: rows.length > page.limit }
  }
}
