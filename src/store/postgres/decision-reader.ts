/**
 * Reads what a batch's decisions read, inside the batch's transaction, after locking it: one
 * transaction-scoped advisory lock per client id (for its session) and per device (for its
 * registration and properties), taken in one sorted order by every replica so two batches that
 * share keys wait for each other instead of deadlocking. The locks are taken before the rows are
 * read, so the read (a statement of its own, with a fresh snapshot at READ COMMITTED) sees every
 * change committed by the batch that held them before.
 */
import type pg from 'pg'
import type { Device } from '../../domain/device.js'
import type { SessionRecord } from '../../domain/session.js'
import type { SubscriptionEntity } from '../../domain/subscription.js'
import type { DecisionReads, StoredTopicEntry } from '../decision.js'
import { StoredState } from '../stored-state.js'
import { TOMBSTONE_MS } from '../../domain/transitions.js'
import type { QualifiedTables } from './schema.js'
import { subscriptionOfColumns, type TopicColumns } from './topic-columns.js'

interface SessionRow {
  id: string
  doc: SessionRecord | null
  version: string | null
  topics: (TopicColumns & { persistent: boolean })[]
  entities: SubscriptionEntity[]
  last_incarnation: string | null
  last_ended_at: string | null
}

export class DecisionReader {
  private readonly lockSql: string
  private readonly sessionsSql: string
  private readonly devicesSql: string
  private readonly propertiesSql: string
  private readonly deviceSessionsSql: string

  constructor(
    t: QualifiedTables,
    /** Lock keys are namespaced by schema: hubs on other schemas of the database never wait on them. */
    private readonly schema: string
  ) {
    // the ORDER BY in the subquery makes every batch take its locks in the same order
    this.lockSql =
      'SELECT count(pg_advisory_xact_lock(k)) FROM ' +
      '(SELECT DISTINCT hashtextextended(key, 0) AS k FROM unnest($1::text[]) AS key ORDER BY k) AS sorted'
    this.sessionsSql =
      `SELECT k.id, s.doc, s.version, tb.incarnation AS last_incarnation, tb.ended_at AS last_ended_at,
         (SELECT coalesce(json_agg(json_build_object('topic', t.topic, 'qos', t.qos, 'rh', t.rh, 'rap', t.rap, 'nl', t.nl,
                                                     'sub_id', t.sub_id, 'persistent', t.persistent)), '[]')
            FROM ${t.topics} t WHERE t.session_id = k.id) AS topics,
         (SELECT coalesce(json_agg(e.doc), '[]') FROM ${t.subscriptions} e WHERE e.session_id = k.id) AS entities
       FROM unnest($1::text[]) AS k(id)
       LEFT JOIN ${t.sessions} s ON s.id = k.id
       LEFT JOIN LATERAL (SELECT incarnation, ended_at FROM ${t.session_tombstones}
                           WHERE client_id = k.id AND ended_at > $2 LIMIT 1) tb ON true`
    this.devicesSql = `SELECT id, doc FROM ${t.devices} WHERE id = ANY($1::text[])`
    this.propertiesSql =
      `SELECT p.device_id, p.name, p.value, p.updated_at FROM ${t.device_properties} p ` +
      'JOIN unnest($1::text[], $2::text[]) AS k(device_id, name) ON p.device_id = k.device_id AND p.name = k.name'
    this.deviceSessionsSql = `SELECT doc, version FROM ${t.sessions} WHERE device_id = ANY($1::text[])`
  }

  async lockAndRead(client: pg.PoolClient, allReads: readonly DecisionReads[]): Promise<StoredState> {
    const sessions = new Set<string>()
    const devices = new Set<string>()
    const properties = new Map<string, [string, string]>()
    const deviceSessions = new Set<string>()
    for (const reads of allReads) {
      for (const id of reads.sessions ?? []) sessions.add(id)
      for (const id of reads.devices ?? []) devices.add(id)
      for (const id of reads.deviceSessions ?? []) deviceSessions.add(id)
      for (const [deviceId, name] of reads.properties ?? []) properties.set(JSON.stringify([deviceId, name]), [deviceId, name])
    }
    const state = new StoredState()
    const keys = [
      ...[...sessions].map((id) => JSON.stringify([this.schema, 'session', id])),
      ...[...devices].map((id) => JSON.stringify([this.schema, 'device', id])),
      ...[...properties.values()].map(([id]) => JSON.stringify([this.schema, 'device', id])),
      ...[...deviceSessions].map((id) => JSON.stringify([this.schema, 'device', id]))
    ]
    if (keys.length === 0) return state
    await client.query({ name: 'iothub_decision_locks', text: this.lockSql, values: [keys] })
    if (sessions.size > 0) {
      // Not a named (prepared) statement: PostgreSQL would plan it once for good, and a plan made
      // while session_tombstones was nearly empty (a new store, the first minute of hook calls)
      // scans every tombstone for every client of the batch as the table grows — measured: 776 ms
      // for a batch of 256 against 15,000 tombstones, until an autoanalyze replans it. Planned on
      // each run (~0.5 ms), its tombstone lookup (LATERAL … LIMIT 1, which is not joined as a set)
      // is one probe of the primary key per client once there are many: 4 ms for the same batch.
      const { rows } = await client.query<SessionRow>({
        text: this.sessionsSql,
        values: [[...sessions], Date.now() - TOMBSTONE_MS]
      })
      for (const r of rows) {
        const session = r.doc === null ? undefined : { ...r.doc, version: Number(r.version) }
        const topics = new Map<string, StoredTopicEntry>()
        for (const t of r.topics) topics.set(t.topic, { subscription: subscriptionOfColumns(t), persistent: t.persistent })
        const entities = new Map<string, SubscriptionEntity>()
        for (const e of r.entities) entities.set(e.brokerTopic, e)
        state.putSession(r.id, {
          session,
          topics,
          entities,
          lastIncarnation: r.last_incarnation ?? undefined,
          ...(r.last_ended_at !== null ? { lastEndedAt: Number(r.last_ended_at) } : {})
        })
      }
    }
    if (devices.size > 0) {
      const { rows } = await client.query<{ id: string; doc: Device }>({ name: 'iothub_decision_devices', text: this.devicesSql, values: [[...devices]] })
      for (const id of devices) state.putDevice(id, undefined)
      for (const r of rows) state.putDevice(r.id, r.doc)
    }
    if (properties.size > 0) {
      const wanted = [...properties.values()]
      const { rows } = await client.query<{ device_id: string; name: string; value: unknown; updated_at: string }>({
        name: 'iothub_decision_properties',
        text: this.propertiesSql,
        values: [wanted.map(([d]) => d), wanted.map(([, n]) => n)]
      })
      for (const [deviceId, name] of wanted) state.putProperty(deviceId, name, undefined)
      for (const r of rows) state.putProperty(r.device_id, r.name, { value: r.value, updatedAt: Number(r.updated_at) })
    }
    if (deviceSessions.size > 0) {
      const { rows } = await client.query<{ doc: SessionRecord; version: string }>({
        name: 'iothub_decision_device_sessions',
        text: this.deviceSessionsSql,
        values: [[...deviceSessions]]
      })
      const byDevice = new Map<string, SessionRecord[]>([...deviceSessions].map((id) => [id, []]))
      for (const r of rows) byDevice.get(r.doc.deviceId)?.push({ ...r.doc, version: Number(r.version) })
      for (const [deviceId, ofDevice] of byDevice) state.putDeviceSessions(deviceId, ofDevice)
    }
    return state
  }
}
