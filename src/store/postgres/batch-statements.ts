/**
 * One batch of mutations as a few multi-row statements: all of a batch's device puts in one
 * `INSERT … SELECT FROM unnest(…) ON CONFLICT … DO UPDATE`, all its retained deletes in one
 * `DELETE … = ANY(…)`, and so on. A batch then costs a handful of round trips whatever its size,
 * where a statement per mutation would make the network the bottleneck of group commit.
 *
 * Grouping must not change what a batch means: its mutations apply in order, so a put then a
 * delete of one row leaves no row, and a delete then a put leaves the put. So the batch is first
 * reduced to one *outcome* per row key — the last put or delete of the key wins — and outcomes
 * of distinct keys can run in any order. The clears (`topic.clear`, `subscription.clear`,
 * `outgoing.clear`, `incoming.clear`) remove every row of a session or client, rows the batch
 * never names included. They run before the per-key statements of their table, and each turns
 * the puts before it in its scope into deletes: a put before a clear is undone (even when its row
 * was stored under another session before the batch — why it becomes a delete rather than being
 * dropped), while a put after the clear survives and is written after it.
 * `session.version` after a put of the same session folds into that put; after a delete it does
 * nothing, as an UPDATE of a missing row would.
 *
 * Each statement lists its rows in key order and the tables come in a fixed order, so two hubs
 * writing the same rows at once take their row locks in the same order instead of deadlocking.
 *
 * The statements that add or remove rows of `sessions`, `topics`, `devices` and `subscriptions`
 * say so (`counts`), and what they did is tallied from their results (`FleetCountChange`: the rows
 * a delete removed, the rows an upsert inserted rather than updated), which the batch's log append
 * adds to the stored totals (schema.ts, versions 5 and 7). Counted from the results, not the
 * mutations: a put may find its row or not, a delete may find nothing, a clear removes rows the
 * batch never names. Sessions' statements also answer whether each row they removed or replaced
 * was connected, and on which protocol and node, and what each row they wrote is: the connected
 * totals move by the difference.
 */
import type { QueryConfig, QueryResult } from 'pg'
import { expiresAt, type SessionRecord } from '../../domain/session.js'
import type { Mutation } from '../store.js'
import { propertyValueText } from '../property-json.js'
import type { QualifiedTables } from './schema.js'

/** What one column of a row is sent as (pg turns arrays of these into PostgreSQL arrays). */
type Value = string | number | boolean | Uint8Array | null

/** What a batch leaves behind for one row key. `version` is the sessions' partial update. */
type Outcome<Row> = { kind: 'put'; row: Row; scope: string | null } | { kind: 'delete' } | { kind: 'version'; version: number }

/** One table's share of a batch, reduced to the outcome per row key. */
class TableChanges<Row> {
  private readonly outcomes = new Map<string, { key: Value[]; outcome: Outcome<Row> }>()
  /** Keys put under each scope (a session or a client), to undo should that scope be cleared. */
  private readonly putsByScope = new Map<string, string[]>()
  readonly clearedScopes = new Set<string>()

  outcomeOf(key: Value[]): Outcome<Row> | undefined {
    return this.outcomes.get(keyText(key))?.outcome
  }

  put(key: Value[], row: Row, scope: string | null = null): void {
    const text = this.set(key, { kind: 'put', row, scope })
    if (scope === null) return
    const keys = this.putsByScope.get(scope)
    if (keys) keys.push(text)
    else this.putsByScope.set(scope, [text])
  }

  delete(key: Value[]): void {
    this.set(key, { kind: 'delete' })
  }

  version(key: Value[], version: number): void {
    this.set(key, { kind: 'version', version })
  }

  clear(scope: string): void {
    this.clearedScopes.add(scope)
    for (const text of this.putsByScope.get(scope) ?? []) {
      const entry = this.outcomes.get(text)!
      // that key may have been put again since, possibly under another scope: then it stays
      if (entry.outcome.kind === 'put' && entry.outcome.scope === scope) entry.outcome = { kind: 'delete' }
    }
    this.putsByScope.delete(scope)
  }

  /** The outcomes in key order, by kind, with each put row as its columns' values. */
  sorted(columnsOf: (row: Row) => Value[]): { puts: Value[][]; deletes: Value[][]; versions: Value[][] } {
    const puts: Value[][] = []
    const deletes: Value[][] = []
    const versions: Value[][] = []
    const ordered = [...this.outcomes].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    for (const [, { key, outcome }] of ordered) {
      if (outcome.kind === 'put') puts.push(columnsOf(outcome.row))
      else if (outcome.kind === 'delete') deletes.push(key)
      else versions.push([...key, outcome.version])
    }
    return { puts, deletes, versions }
  }

  private set(key: Value[], outcome: Outcome<Row>): string {
    const text = keyText(key)
    this.outcomes.set(text, { key, outcome })
    return text
  }
}

/** A composite key as one map key; JSON keeps `['a', 'b/c']` and `['a/b', 'c']` apart. */
const keyText = (key: Value[]): string => JSON.stringify(key)

interface Column {
  name: string
  /** The PostgreSQL type of the column, which its parameter array is cast to. */
  type: 'text' | 'json' | 'bytea' | 'integer' | 'bigint' | 'boolean'
}

/** The stored totals (schema.ts, versions 5 and 7): how many rows these tables hold. */
export type FleetTotal = 'sessions' | 'topics' | 'devices' | 'subscriptions'

interface TableShape {
  columns: Column[]
  /** How many leading columns make the primary key. */
  keyColumns: number
  /** The column a clear deletes by. */
  scopeColumn?: string
  /** The total its row count is kept in. */
  total?: FleetTotal
  /** Its rows are sessions, which the connected totals count by protocol and node. */
  connected?: true
}

/** A statement of a batch, and which totals its rows move, if any. */
export interface PlannedStatement extends QueryConfig {
  counts?: { total: FleetTotal; by: 'deleted' | 'inserted'; connected?: true }
}

/**
 * A row a statement counted answers: `inserted` (upserts), and for sessions whether the row is
 * connected and where, and — upserts — whether the row it replaced was (null: there was none).
 */
interface CountedRow {
  inserted?: boolean
  connected?: boolean
  protocol?: string
  node?: string
  was_connected?: boolean | null
  was_protocol?: string | null
  was_node?: string | null
}

/** Connected sessions gained (or lost, negative) on one protocol and node. */
export interface ConnectedChange {
  protocol: string
  node: string
  sessions: number
}

/** How a batch's statements moved the stored totals, tallied from their results. */
export class FleetCountChange {
  sessions = 0
  topics = 0
  devices = 0
  subscriptions = 0
  private readonly connectedBy = new Map<string, ConnectedChange>()

  add(statement: PlannedStatement, result: Pick<QueryResult<CountedRow>, 'rowCount' | 'rows'>): void {
    const counts = statement.counts
    if (!counts) return
    if (counts.by === 'deleted') this[counts.total] -= result.rowCount ?? 0
    else for (const row of result.rows) if (row.inserted === true) this[counts.total]++
    if (!counts.connected) return
    for (const row of result.rows) {
      if (counts.by === 'inserted') {
        // the upsert read every row it replaces, locked, before writing: a row it replaced yet
        // did not read was inserted by a transaction that committed in between (two writers of
        // one new session without the client's lock) — what it was is unknown, so run it again
        if (row.inserted === false && (row.was_connected ?? null) === null) throw new SessionRaced()
        if (row.was_connected === true) this.moveConnected(row.was_protocol!, row.was_node!, -1)
        if (row.connected === true) this.moveConnected(row.protocol!, row.node!, 1)
      } else if (row.connected === true) this.moveConnected(row.protocol!, row.node!, -1)
    }
  }

  /** The connected totals' moves, in key order (the order their rows are locked in); none that cancelled out. */
  get connected(): ConnectedChange[] {
    return [...this.connectedBy.values()]
      .filter((c) => c.sessions !== 0)
      .sort((a, b) => (a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : a.node < b.node ? -1 : a.node > b.node ? 1 : 0))
  }

  get none(): boolean {
    return this.sessions === 0 && this.topics === 0 && this.devices === 0 && this.subscriptions === 0 && this.connected.length === 0
  }

  private moveConnected(protocol: string, node: string, by: number): void {
    // U+0000 cannot be in either (PostgreSQL text refuses it): the pair as one key
    const key = `${protocol}\u0000${node}`
    const change = this.connectedBy.get(key)
    if (change) change.sessions += by
    else this.connectedBy.set(key, { protocol, node, sessions: by })
  }
}

/**
 * A session row was inserted by another transaction while this batch's upsert ran: its totals
 * cannot be told exactly, so the batch is rolled back and runs again (the code of a
 * serialization failure, which the store's writer retries), finding the row then.
 */
export class SessionRaced extends Error {
  readonly code = '40001'
  constructor() {
    super('a session row was inserted by another transaction during this batch: running it again')
  }
}

const column = (name: string, type: Column['type']): Column => ({ name, type })

const SHAPES = {
  devices: {
    // what listings filter on (schema.ts, version 6), copied from the device
    columns: [column('id', 'text'), column('doc', 'json'), column('owner', 'text'), column('group_name', 'text'), column('name', 'text')],
    keyColumns: 1,
    total: 'devices'
  },
  sessions: {
    columns: [
      column('id', 'text'),
      column('doc', 'json'),
      column('version', 'bigint'),
      // what listings filter on (schema.ts, version 4), copied from the record
      column('device_id', 'text'),
      column('protocol', 'text'),
      column('connected', 'boolean'),
      column('node', 'text'),
      column('username', 'text'),
      column('peer_host', 'text'),
      column('clean_start', 'boolean'),
      column('proto_ver', 'integer'),
      column('created_at', 'bigint'),
      column('connected_at', 'bigint'),
      column('expires_at', 'bigint')
    ],
    keyColumns: 1,
    total: 'sessions',
    connected: true
  },
  device_properties: {
    columns: [column('device_id', 'text'), column('name', 'text'), column('value', 'json'), column('updated_at', 'bigint')],
    keyColumns: 2,
    // a device's delete clears its properties
    scopeColumn: 'device_id'
  },
  subscriptions: {
    columns: [column('id', 'text'), column('session_id', 'text'), column('doc', 'json'), column('device_id', 'text')],
    keyColumns: 1,
    scopeColumn: 'session_id',
    total: 'subscriptions'
  },
  topics: {
    columns: [
      column('session_id', 'text'),
      column('topic', 'text'),
      column('qos', 'integer'),
      column('rh', 'integer'),
      column('rap', 'boolean'),
      column('nl', 'boolean'),
      column('sub_id', 'integer'),
      column('persistent', 'boolean')
    ],
    keyColumns: 2,
    scopeColumn: 'session_id',
    total: 'topics'
  },
  retained: { columns: [column('topic', 'text'), column('packet', 'bytea')], keyColumns: 1 },
  outgoing: { columns: [column('client_id', 'text'), column('seq', 'bigint'), column('packet', 'bytea')], keyColumns: 2, scopeColumn: 'client_id' },
  incoming: { columns: [column('client_id', 'text'), column('message_id', 'integer'), column('packet', 'bytea')], keyColumns: 2, scopeColumn: 'client_id' },
  wills: { columns: [column('client_id', 'text'), column('packet', 'bytea')], keyColumns: 1 },
  publish_journal: { columns: [column('seq', 'bigint'), column('packet', 'bytea')], keyColumns: 1 },
  push_journal: {
    columns: [column('run', 'text'), column('seq', 'bigint'), column('topic', 'text'), column('payload', 'bytea'), column('qos', 'integer'), column('at', 'bigint')],
    keyColumns: 2
  },
  session_tombstones: { columns: [column('client_id', 'text'), column('incarnation', 'text'), column('ended_at', 'bigint')], keyColumns: 1 }
} satisfies Record<string, TableShape>

type WrittenTable = keyof typeof SHAPES

/** Every table's share of one batch. Sessions keep the record, so a later version can fold in. */
class BatchChanges {
  readonly sessions = new TableChanges<SessionRecord>()
  readonly rows = {
    devices: new TableChanges<Value[]>(),
    device_properties: new TableChanges<Value[]>(),
    subscriptions: new TableChanges<Value[]>(),
    topics: new TableChanges<Value[]>(),
    retained: new TableChanges<Value[]>(),
    outgoing: new TableChanges<Value[]>(),
    incoming: new TableChanges<Value[]>(),
    wills: new TableChanges<Value[]>(),
    publish_journal: new TableChanges<Value[]>(),
    push_journal: new TableChanges<Value[]>(),
    session_tombstones: new TableChanges<Value[]>()
  } satisfies Record<Exclude<WrittenTable, 'sessions'>, TableChanges<Value[]>>

  add(m: Mutation): void {
    const t = this.rows
    switch (m.op) {
      case 'device.put':
        return t.devices.put([m.device.id], [m.device.id, JSON.stringify(m.device), m.device.owner, m.device.group, m.device.name])
      case 'device.delete':
        t.device_properties.clear(m.id)
        return t.devices.delete([m.id])
      case 'session.put':
        return this.sessions.put([m.session.id], m.session)
      case 'session.version': {
        const before = this.sessions.outcomeOf([m.id])
        if (before?.kind === 'put') return this.sessions.put([m.id], { ...before.row, version: m.version })
        if (before?.kind === 'delete') return
        return this.sessions.version([m.id], m.version)
      }
      case 'session.delete':
        if (m.incarnation !== undefined) t.session_tombstones.put([m.id], [m.id, m.incarnation, Date.now()])
        return this.sessions.delete([m.id])
      case 'topic.put': {
        const s = m.subscription
        const row = [m.sessionId, s.topic, s.qos, s.rh ?? null, s.rap ?? null, s.nl ?? null, s.subscriptionIdentifier ?? null, Boolean(m.persistent)]
        return t.topics.put([m.sessionId, s.topic], row, m.sessionId)
      }
      case 'topic.delete':
        return t.topics.delete([m.sessionId, m.topic])
      case 'topic.clear':
        return t.topics.clear(m.sessionId)
      case 'subscription.put': {
        const s = m.subscription
        return t.subscriptions.put([s.id], [s.id, s.sessionId, JSON.stringify(s), s.deviceId], s.sessionId)
      }
      case 'subscription.delete':
        return t.subscriptions.delete([m.id])
      case 'subscription.clear':
        return t.subscriptions.clear(m.sessionId)
      case 'device.property':
        return t.device_properties.put([m.deviceId, m.name], [m.deviceId, m.name, propertyValueText(m), m.updatedAt], m.deviceId)
      case 'retained.put':
        return t.retained.put([m.topic], [m.topic, m.packet])
      case 'retained.delete':
        return t.retained.delete([m.topic])
      case 'outgoing.put':
        return t.outgoing.put([m.clientId, m.seq], [m.clientId, m.seq, m.packet], m.clientId)
      case 'outgoing.delete':
        return t.outgoing.delete([m.clientId, m.seq])
      case 'outgoing.clear':
        return t.outgoing.clear(m.clientId)
      case 'incoming.put':
        return t.incoming.put([m.clientId, m.messageId], [m.clientId, m.messageId, m.packet], m.clientId)
      case 'incoming.delete':
        return t.incoming.delete([m.clientId, m.messageId])
      case 'incoming.clear':
        return t.incoming.clear(m.clientId)
      case 'will.put':
        return t.wills.put([m.clientId], [m.clientId, m.packet])
      case 'will.delete':
        return t.wills.delete([m.clientId])
      case 'journal.put':
        return t.publish_journal.put([m.seq], [m.seq, m.packet])
      case 'journal.delete':
        for (let seq = m.seq; seq <= (m.through ?? m.seq); seq++) t.publish_journal.delete([seq])
        return
      case 'push.put': {
        const p = m.push
        return t.push_journal.put([p.run, p.seq], [p.run, p.seq, p.topic, p.payload, p.qos, p.at])
      }
      case 'push.delete':
        for (let seq = m.seq; seq <= (m.through ?? m.seq); seq++) t.push_journal.delete([m.run, seq])
        return
      default: {
        const unknown: never = m
        throw new Error(`unknown mutation op ${JSON.stringify((unknown as { op?: unknown }).op)}`)
      }
    }
  }
}

/** The SQL of one table's statements, built once per store (table names are schema-qualified). */
interface TableSql {
  upsert: string
  delete: string
  clear: string | null
}

function tableSql(table: string, shape: TableShape): TableSql {
  const names = shape.columns.map((c) => c.name)
  const keys = shape.columns.slice(0, shape.keyColumns)
  const arrays = (columns: Column[]): string => columns.map((c, i) => `$${i + 1}::${c.type}[]`).join(', ')
  const scope = shape.scopeColumn
  if (shape.connected) return sessionSql(table, shape)
  return {
    upsert:
      `INSERT INTO ${table} (${names.join(', ')}) SELECT * FROM unnest(${arrays(shape.columns)}) ` +
      `ON CONFLICT (${keys.map((c) => c.name).join(', ')}) DO UPDATE SET ` +
      names
        .slice(shape.keyColumns)
        .map((name) => `${name} = excluded.${name}`)
        .join(', ') +
      // a row this statement inserted has no xmax yet; one it updated carries this transaction's
      // (PostgreSQL marks the old version it replaced): how upserts tell inserts from updates
      (shape.total ? ' RETURNING (xmax = 0) AS inserted' : ''),
    delete:
      keys.length === 1
        ? `DELETE FROM ${table} WHERE ${keys[0]!.name} = ANY(${arrays(keys)})`
        : `DELETE FROM ${table} AS target USING unnest(${arrays(keys)}) AS gone(${keys.map((c) => c.name).join(', ')}) ` +
          `WHERE ${keys.map((c) => `target.${c.name} = gone.${c.name}`).join(' AND ')}`,
    clear: scope ? `DELETE FROM ${table} WHERE ${scope} = ANY($1::text[])` : null
  }
}

/**
 * Sessions' statements answer what the connected totals need. The upsert first reads and locks
 * the rows it will replace (in key order, as every statement locks; the one-time condition on
 * that read makes it run before the insert), so what it answers of each is what it replaced —
 * under READ COMMITTED, the newest committed version — and then writes.
 */
function sessionSql(table: string, shape: TableShape): TableSql {
  const names = shape.columns.map((c) => c.name)
  const arrays = shape.columns.map((c, i) => `$${i + 1}::${c.type}[]`).join(', ')
  const set = names
    .slice(1)
    .map((name) => `${name} = excluded.${name}`)
    .join(', ')
  return {
    upsert:
      `WITH replaced AS MATERIALIZED (SELECT id, connected, protocol, node FROM ${table} WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE), ` +
      `written AS (INSERT INTO ${table} (${names.join(', ')}) SELECT * FROM unnest(${arrays}) WHERE (SELECT count(*) FROM replaced) >= 0 ` +
      `ON CONFLICT (id) DO UPDATE SET ${set} RETURNING id, (xmax = 0) AS inserted, connected, protocol, node) ` +
      'SELECT w.inserted, w.connected, w.protocol, w.node, r.connected AS was_connected, r.protocol AS was_protocol, r.node AS was_node ' +
      'FROM written w LEFT JOIN replaced r ON r.id = w.id',
    delete: `DELETE FROM ${table} WHERE id = ANY($1::text[]) RETURNING connected, protocol, node`,
    clear: null
  }
}

/** Rows as column arrays: what `unnest($1::…[], $2::…[], …)` turns back into rows. */
function columnArrays(rows: Value[][], width: number): Value[][] {
  const columns: Value[][] = Array.from({ length: width }, () => new Array<Value>(rows.length))
  rows.forEach((row, r) => {
    for (let c = 0; c < width; c++) columns[c]![r] = row[c] ?? null
  })
  return columns
}

const sessionColumns = (s: SessionRecord): Value[] => [
  s.id,
  JSON.stringify(s),
  s.version,
  s.deviceId,
  s.protocol,
  s.connected,
  s.node,
  s.username,
  s.peerHost,
  s.cleanStart,
  s.protoVer,
  s.createdAt,
  s.connectedAt,
  expiresAt(s)
]

export class BatchStatements {
  private readonly sql: Record<WrittenTable, TableSql>
  private readonly updateSessionVersions: string

  constructor(tables: QualifiedTables) {
    this.sql = Object.fromEntries(
      (Object.keys(SHAPES) as WrittenTable[]).map((name) => [name, tableSql(tables[name], SHAPES[name])])
    ) as Record<WrittenTable, TableSql>
    this.updateSessionVersions =
      `UPDATE ${tables.sessions} AS target SET version = change.version ` +
      'FROM unnest($1::text[], $2::bigint[]) AS change(id, version) WHERE target.id = change.id'
  }

  /** The statements that leave the database as running the mutations one by one would. */
  plan(mutations: readonly Mutation[]): PlannedStatement[] {
    const changes = new BatchChanges()
    for (const m of mutations) changes.add(m)
    const statements: PlannedStatement[] = []
    for (const table of Object.keys(SHAPES) as WrittenTable[]) {
      const { puts, deletes, versions } =
        table === 'sessions' ? changes.sessions.sorted(sessionColumns) : changes.rows[table].sorted((row) => row)
      const cleared = table === 'sessions' ? [] : [...changes.rows[table].clearedScopes].sort()
      const shape: TableShape = SHAPES[table]
      const sql = this.sql[table]
      const connected = shape.connected ? { connected: true as const } : {}
      const deleted = shape.total ? { counts: { total: shape.total, by: 'deleted' as const, ...connected } } : {}
      const inserted = shape.total ? { counts: { total: shape.total, by: 'inserted' as const, ...connected } } : {}
      // Named, so each connection parses and plans each statement once.
      if (cleared.length > 0) statements.push({ name: `iothub_${table}_clear`, text: sql.clear!, values: [cleared], ...deleted })
      if (deletes.length > 0) statements.push({ name: `iothub_${table}_delete`, text: sql.delete, values: columnArrays(deletes, shape.keyColumns), ...deleted })
      if (puts.length > 0) statements.push({ name: `iothub_${table}_upsert`, text: sql.upsert, values: columnArrays(puts, shape.columns.length), ...inserted })
      if (versions.length > 0) statements.push({ name: 'iothub_sessions_version', text: this.updateSessionVersions, values: columnArrays(versions, 2) })
    }
    return statements
  }
}
