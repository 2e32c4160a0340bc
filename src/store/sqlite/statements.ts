/**
 * The SQL behind each store mutation and each load query.
 *
 * A mutation crosses to the writer thread as its statement's parameters (`encodeMutation`):
 * flat arrays of strings, numbers and bytes copy between threads at a fraction of the cost of
 * the objects they came from. (The batch's change-log entries cross beside them as one string,
 * log-rows.ts: a row made from its entry on the writer would need that entry's JSON on its own,
 * and the log no longer makes one per change.)
 */
import type Database from 'better-sqlite3'
import { IN_ORDER_PUSHES } from '../in-order-pushes.js'
import type { Mutation } from '../store.js'
import { propertyValueText } from '../property-json.js'
import { SESSION_COLUMNS, SESSION_JSON, sessionRow } from './session-columns.js'
import { SUBSCRIPTION_COLUMNS, SUBSCRIPTION_JSON, subscriptionRow } from './subscription-columns.js'

type Op = Mutation['op']
type Param = string | number | Uint8Array | null

/** One mutation, ready for its statement: the op, then the statement's parameters. */
export type EncodedMutation = [op: Op, params: Param[]]

const UPSERT = (table: string, columns: readonly string[], key: string[]): string =>
  `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')}) ` +
  `ON CONFLICT(${key.join(', ')}) DO UPDATE SET ${columns
    .filter((c) => !key.includes(c))
    .map((c) => `${c} = excluded.${c}`)
    .join(', ')}`

const MUTATION_SQL: Record<Op, string> = {
  'device.put': UPSERT('devices', ['id', 'doc'], ['id']),
  // its properties go with it (a trigger, schema.ts)
  'device.delete': 'DELETE FROM devices WHERE id = ?',
  'session.put': UPSERT('sessions', SESSION_COLUMNS, ['id']),
  // one field rather than the whole row: subscriptions change often
  'session.version': 'UPDATE sessions SET version = ? WHERE id = ?',
  'session.delete': 'DELETE FROM sessions WHERE id = ?',
  'topic.put': UPSERT('topics', ['session_id', 'topic', 'qos', 'rh', 'rap', 'nl', 'sub_id', 'persistent'], ['session_id', 'topic']),
  'topic.delete': 'DELETE FROM topics WHERE session_id = ? AND topic = ?',
  'topic.clear': 'DELETE FROM topics WHERE session_id = ?',
  'subscription.put': UPSERT('subscriptions', SUBSCRIPTION_COLUMNS, ['id']),
  'subscription.delete': 'DELETE FROM subscriptions WHERE id = ?',
  'subscription.clear': 'DELETE FROM subscriptions WHERE session_id = ?',
  'device.property': UPSERT('device_properties', ['device_id', 'name', 'value', 'updated_at'], ['device_id', 'name']),
  'retained.put': UPSERT('retained', ['topic', 'packet'], ['topic']),
  'retained.delete': 'DELETE FROM retained WHERE topic = ?',
  'outgoing.put': UPSERT('outgoing', ['client_id', 'seq', 'packet'], ['client_id', 'seq']),
  'outgoing.delete': 'DELETE FROM outgoing WHERE client_id = ? AND seq = ?',
  'outgoing.clear': 'DELETE FROM outgoing WHERE client_id = ?',
  'incoming.put': UPSERT('incoming', ['client_id', 'message_id', 'packet'], ['client_id', 'message_id']),
  'incoming.delete': 'DELETE FROM incoming WHERE client_id = ? AND message_id = ?',
  'incoming.clear': 'DELETE FROM incoming WHERE client_id = ?',
  'will.put': UPSERT('wills', ['client_id', 'packet'], ['client_id']),
  'will.delete': 'DELETE FROM wills WHERE client_id = ?',
  'journal.put': UPSERT('publish_journal', ['seq', 'packet'], ['seq']),
  'journal.delete': 'DELETE FROM publish_journal WHERE seq BETWEEN ? AND ?',
  'push.put': UPSERT('push_journal', ['run', 'seq', 'topic', 'payload', 'qos', 'at'], ['run', 'seq']),
  'push.delete': 'DELETE FROM push_journal WHERE run = ? AND seq BETWEEN ? AND ?'
}

const flag = (value: boolean | undefined): number | null => (value === undefined ? null : value ? 1 : 0)

export function encodeMutation(m: Mutation): EncodedMutation {
  switch (m.op) {
    case 'device.put':
      return [m.op, [m.device.id, JSON.stringify(m.device)]]
    case 'device.delete':
      return [m.op, [m.id]]
    case 'session.put':
      return [m.op, sessionRow(m.session)]
    case 'session.version':
      return [m.op, [m.version, m.id]]
    case 'session.delete':
      return [m.op, [m.id]]
    case 'topic.put': {
      const s = m.subscription
      return [m.op, [m.sessionId, s.topic, s.qos, s.rh ?? null, flag(s.rap), flag(s.nl), s.subscriptionIdentifier ?? null, m.persistent ? 1 : 0]]
    }
    case 'topic.delete':
      return [m.op, [m.sessionId, m.topic]]
    case 'topic.clear':
      return [m.op, [m.sessionId]]
    case 'subscription.put':
      return [m.op, subscriptionRow(m.subscription)]
    case 'subscription.delete':
      return [m.op, [m.id]]
    case 'subscription.clear':
      return [m.op, [m.sessionId]]
    case 'device.property':
      return [m.op, [m.deviceId, m.name, propertyValueText(m), m.updatedAt]]
    case 'retained.put':
      return [m.op, [m.topic, m.packet]]
    case 'retained.delete':
      return [m.op, [m.topic]]
    case 'outgoing.put':
      return [m.op, [m.clientId, m.seq, m.packet]]
    case 'outgoing.delete':
      return [m.op, [m.clientId, m.seq]]
    case 'outgoing.clear':
      return [m.op, [m.clientId]]
    case 'incoming.put':
      return [m.op, [m.clientId, m.messageId, m.packet]]
    case 'incoming.delete':
      return [m.op, [m.clientId, m.messageId]]
    case 'incoming.clear':
      return [m.op, [m.clientId]]
    case 'will.put':
      return [m.op, [m.clientId, m.packet]]
    case 'will.delete':
      return [m.op, [m.clientId]]
    case 'journal.put':
      return [m.op, [m.seq, m.packet]]
    case 'journal.delete':
      return [m.op, [m.seq, m.through ?? m.seq]]
    case 'push.put': {
      const p = m.push
      return [m.op, [p.run, p.seq, p.topic, p.payload, p.qos, p.at]]
    }
    case 'push.delete':
      return [m.op, [m.run, m.seq, m.through ?? m.seq]]
  }
}

/** The write statements of one connection, by op. */
export function prepareWrites(db: Database.Database): Record<Op, Database.Statement> {
  const statements = {} as Record<Op, Database.Statement>
  for (const op of Object.keys(MUTATION_SQL) as Op[]) statements[op] = db.prepare(MUTATION_SQL[op])
  return statements
}

/**
 * The fleet's tables as the start reads them: each row as one JSON text, made by SQLite, which
 * the fleet reader thread (fleet-read-worker.ts) joins into arrays of rows and the main thread
 * parses whole (fleet-rows.ts decodes them). A value crossing from SQLite into JavaScript costs
 * far more than SQLite's making the text does, so each row crosses as one value, not one per column.
 */
export const FLEET_QUERIES = {
  devices: 'SELECT doc FROM devices',
  // the value is a JSON text already
  deviceProperties: "SELECT '[' || json_quote(device_id) || ',' || json_quote(name) || ',' || value || ',' || updated_at || ']' FROM device_properties",
  subscriptions: `SELECT ${SUBSCRIPTION_JSON} FROM subscriptions`,
  sessions: `SELECT ${SESSION_JSON} FROM sessions`,
  topics: 'SELECT json_array(session_id, topic, qos, rh, rap, nl, sub_id, persistent) FROM topics'
} as const

export type FleetTable = keyof typeof FLEET_QUERIES

export function prepareLoads(db: Database.Database) {
  return {
    retained: db.prepare('SELECT topic, packet FROM retained'),
    outgoing: db.prepare('SELECT client_id, seq, packet FROM outgoing ORDER BY client_id, seq'),
    incoming: db.prepare('SELECT client_id, message_id, packet FROM incoming'),
    wills: db.prepare('SELECT client_id, packet FROM wills'),
    journal: db.prepare('SELECT seq, packet FROM publish_journal ORDER BY seq'),
    pushRuns: db.prepare('SELECT run FROM push_journal GROUP BY run ORDER BY min(at), run').pluck(),
    pushCount: db.prepare('SELECT count(*) FROM push_journal').pluck(),
    pushes: db.prepare('SELECT run, seq, topic, payload, qos, at FROM push_journal WHERE run = ? AND seq > ? ORDER BY seq LIMIT ?'),
    earliestPushElsewhere: db.prepare(`SELECT at FROM push_journal WHERE topic = ? AND ${IN_ORDER_PUSHES} AND run <> ? AND (at < ? OR (at = ? AND run < ?)) ORDER BY at LIMIT 1`).pluck(),
    logHead: db.prepare('SELECT seq FROM log_head').pluck(),
    log: db.prepare('SELECT seq, at, change FROM change_log WHERE seq > ? ORDER BY seq LIMIT ?'),
    device: db.prepare('SELECT doc FROM devices WHERE id = ?'),
    session: db.prepare(`SELECT ${SESSION_COLUMNS.join(', ')} FROM sessions WHERE id = ?`).raw(),
    properties: db.prepare('SELECT device_id, name, value, updated_at FROM device_properties WHERE device_id = ?')
  }
}
