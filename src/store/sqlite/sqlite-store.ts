/**
 * The embedded-mode store: one SQLite file in WAL mode, written by group commit.
 *
 * With `synchronous = FULL` every committed batch is fsynced before its callers hear back, so
 * an acknowledged event survives `kill -9` and power loss alike; `normal` keeps it across a
 * process crash only, for those who trade that for speed.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { Device } from '../../domain/device.js'
import type { QoS, SessionRecord } from '../../domain/session.js'
import { GroupCommitter, type CommitObserver } from '../group-commit.js'
import type { Mutation, Snapshot, Store, StoreHealth } from '../store.js'
import { SCHEMA, SCHEMA_VERSION } from './schema.js'

export interface SqliteStoreOptions {
  /** Folder that holds `iothub.db`; created if missing. */
  dataDir: string
  synchronous?: 'full' | 'normal'
  /** How long a write waits for a lock held by another connection, in ms. */
  busyTimeoutMs?: number
  maxBatch?: number
  observer?: CommitObserver
}

type Statements = ReturnType<typeof prepareStatements>

export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly path: string
  private readonly db: Database.Database
  private readonly statements: Statements
  private readonly committer: GroupCommitter
  private readonly writeInTransaction: (mutations: readonly Mutation[]) => void

  constructor(options: SqliteStoreOptions) {
    mkdirSync(options.dataDir, { recursive: true })
    this.path = join(options.dataDir, 'iothub.db')
    this.db = new Database(this.path, { timeout: options.busyTimeoutMs ?? 5000 })
    this.db.pragma('journal_mode = WAL')
    this.db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`)
    this.migrate()
    this.statements = prepareStatements(this.db)
    this.writeInTransaction = this.db.transaction((mutations: readonly Mutation[]) => {
      for (const m of mutations) applyMutation(this.statements, m)
    })
    this.committer = new GroupCommitter(
      { writeBatch: (mutations) => this.writeInTransaction(mutations) },
      { maxBatch: options.maxBatch, observer: options.observer }
    )
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) {
      throw new Error(`${this.path} has schema version ${version}; this iothub knows up to ${SCHEMA_VERSION}`)
    }
    this.db.exec(SCHEMA)
    this.db.pragma(`user_version = ${SCHEMA_VERSION}`)
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    return this.committer.commit(mutations)
  }

  async load(): Promise<Snapshot> {
    const s = this.statements
    return {
      devices: s.allDevices.all().map((r) => JSON.parse((r as { doc: string }).doc) as Device),
      sessions: s.allSessions.all().map((r) => JSON.parse((r as { doc: string }).doc) as SessionRecord),
      topics: (s.allTopics.all() as TopicRow[]).map((r) => ({
        sessionId: r.session_id,
        persistent: r.persistent === 1,
        subscription: {
          topic: r.topic,
          qos: r.qos as QoS,
          ...(r.rh !== null ? { rh: r.rh } : {}),
          ...(r.rap !== null ? { rap: r.rap === 1 } : {}),
          ...(r.nl !== null ? { nl: r.nl === 1 } : {}),
          ...(r.sub_id !== null ? { subscriptionIdentifier: r.sub_id } : {})
        }
      })),
      retained: (s.allRetained.all() as { topic: string; packet: Buffer }[]).map((r) => ({ topic: r.topic, packet: r.packet })),
      outgoing: (s.allOutgoing.all() as { client_id: string; seq: number; packet: Buffer }[]).map((r) => ({
        clientId: r.client_id,
        seq: r.seq,
        packet: r.packet
      })),
      incoming: (s.allIncoming.all() as { client_id: string; message_id: number; packet: Buffer }[]).map((r) => ({
        clientId: r.client_id,
        messageId: r.message_id,
        packet: r.packet
      })),
      wills: (s.allWills.all() as { client_id: string; packet: Buffer }[]).map((r) => ({ clientId: r.client_id, packet: r.packet })),
      journal: s.allJournal.all() as { seq: number; packet: Buffer }[]
    }
  }

  health(): StoreHealth {
    const error = this.committer.lastError
    return { ok: error === null && this.db.open, lastError: error?.message ?? null }
  }

  async close(): Promise<void> {
    await this.committer.close()
    if (this.db.open) this.db.close()
  }
}

interface TopicRow {
  session_id: string
  topic: string
  qos: number
  rh: number | null
  rap: number | null
  nl: number | null
  sub_id: number | null
  persistent: number
}

function prepareStatements(db: Database.Database) {
  return {
    putDevice: db.prepare('INSERT INTO devices (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc'),
    putSession: db.prepare('INSERT INTO sessions (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc'),
    deleteSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    putTopic: db.prepare(
      `INSERT INTO topics (session_id, topic, qos, rh, rap, nl, sub_id, persistent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(session_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap,
         nl = excluded.nl, sub_id = excluded.sub_id, persistent = excluded.persistent`
    ),
    deleteTopic: db.prepare('DELETE FROM topics WHERE session_id = ? AND topic = ?'),
    clearTopics: db.prepare('DELETE FROM topics WHERE session_id = ?'),
    putRetained: db.prepare('INSERT INTO retained (topic, packet) VALUES (?, ?) ON CONFLICT(topic) DO UPDATE SET packet = excluded.packet'),
    deleteRetained: db.prepare('DELETE FROM retained WHERE topic = ?'),
    putOutgoing: db.prepare(
      'INSERT INTO outgoing (client_id, seq, packet) VALUES (?, ?, ?) ON CONFLICT(client_id, seq) DO UPDATE SET packet = excluded.packet'
    ),
    deleteOutgoing: db.prepare('DELETE FROM outgoing WHERE client_id = ? AND seq = ?'),
    clearOutgoing: db.prepare('DELETE FROM outgoing WHERE client_id = ?'),
    putIncoming: db.prepare(
      'INSERT INTO incoming (client_id, message_id, packet) VALUES (?, ?, ?) ON CONFLICT(client_id, message_id) DO UPDATE SET packet = excluded.packet'
    ),
    deleteIncoming: db.prepare('DELETE FROM incoming WHERE client_id = ? AND message_id = ?'),
    clearIncoming: db.prepare('DELETE FROM incoming WHERE client_id = ?'),
    putWill: db.prepare('INSERT INTO wills (client_id, packet) VALUES (?, ?) ON CONFLICT(client_id) DO UPDATE SET packet = excluded.packet'),
    deleteWill: db.prepare('DELETE FROM wills WHERE client_id = ?'),
    putJournal: db.prepare('INSERT INTO publish_journal (seq, packet) VALUES (?, ?) ON CONFLICT(seq) DO UPDATE SET packet = excluded.packet'),
    deleteJournal: db.prepare('DELETE FROM publish_journal WHERE seq = ?'),
    allDevices: db.prepare('SELECT doc FROM devices'),
    allSessions: db.prepare('SELECT doc FROM sessions'),
    allTopics: db.prepare('SELECT * FROM topics'),
    allRetained: db.prepare('SELECT topic, packet FROM retained'),
    allOutgoing: db.prepare('SELECT client_id, seq, packet FROM outgoing ORDER BY client_id, seq'),
    allIncoming: db.prepare('SELECT client_id, message_id, packet FROM incoming'),
    allWills: db.prepare('SELECT client_id, packet FROM wills'),
    allJournal: db.prepare('SELECT seq, packet FROM publish_journal ORDER BY seq')
  }
}

const flag = (value: boolean | undefined): number | null => (value === undefined ? null : value ? 1 : 0)

function applyMutation(s: Statements, m: Mutation): void {
  switch (m.op) {
    case 'device.put':
      s.putDevice.run(m.device.id, JSON.stringify(m.device))
      return
    case 'session.put':
      s.putSession.run(m.session.id, JSON.stringify(m.session))
      return
    case 'session.delete':
      s.deleteSession.run(m.id)
      return
    case 'topic.put': {
      const sub = m.subscription
      s.putTopic.run(
        m.sessionId, sub.topic, sub.qos, sub.rh ?? null, flag(sub.rap), flag(sub.nl), sub.subscriptionIdentifier ?? null, m.persistent ? 1 : 0
      )
      return
    }
    case 'topic.delete':
      s.deleteTopic.run(m.sessionId, m.topic)
      return
    case 'topic.clear':
      s.clearTopics.run(m.sessionId)
      return
    case 'retained.put':
      s.putRetained.run(m.topic, m.packet)
      return
    case 'retained.delete':
      s.deleteRetained.run(m.topic)
      return
    case 'outgoing.put':
      s.putOutgoing.run(m.clientId, m.seq, m.packet)
      return
    case 'outgoing.delete':
      s.deleteOutgoing.run(m.clientId, m.seq)
      return
    case 'outgoing.clear':
      s.clearOutgoing.run(m.clientId)
      return
    case 'incoming.put':
      s.putIncoming.run(m.clientId, m.messageId, m.packet)
      return
    case 'incoming.delete':
      s.deleteIncoming.run(m.clientId, m.messageId)
      return
    case 'incoming.clear':
      s.clearIncoming.run(m.clientId)
      return
    case 'will.put':
      s.putWill.run(m.clientId, m.packet)
      return
    case 'will.delete':
      s.deleteWill.run(m.clientId)
      return
    case 'journal.put':
      s.putJournal.run(m.seq, m.packet)
      return
    case 'journal.delete':
      s.deleteJournal.run(m.seq)
      return
  }
}
