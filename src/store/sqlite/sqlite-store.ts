/**
 * The embedded-mode store: one SQLite file in WAL mode, written by group commit on a writer
 * thread of its own (writer-worker.ts), read by this thread at start.
 *
 * With `synchronous = FULL` every committed batch is fsynced before its callers hear back, so
 * an acknowledged event survives `kill -9` and power loss alike; `normal` keeps it across a
 * process crash only, for those who trade that for speed.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { Device } from '../../domain/device.js'
import { newTokenKey, TokenHasher } from '../../domain/secret.js'
import type { SessionRecord } from '../../domain/session.js'
import type { LogEntry } from '../change-log.js'
import { replicaRunId, SoleReplica } from '../coordination.js'
import { GroupCommitter, type CommitObserver, type CommitOptions } from '../group-commit.js'
import { LogFollower, type LogApplier } from '../log-follower.js'
import { StoreError, withinDeadline, type LogFollowing, type Mutation, type Snapshot, type Store, type StoreHealth, type StoredDeviceProperty, type StoredPush, type StoreThread } from '../store.js'
import { FleetReader } from './fleet-reader.js'
import { fleetRows } from './fleet-rows.js'
import { entriesOfRow, type LogRow } from './log-rows.js'
import { HASH_PLAIN_TOKENS, LOG_ROW_ENTRIES, MOUNT_VERSION_1_SESSIONS, SCHEMA, SCHEMA_VERSION, upgradeTo4 } from './schema.js'
import { prepareLoads } from './statements.js'
import type { Worker } from 'node:worker_threads'
import type { CheckpointerHello, CheckpointOptions } from './checkpoint-worker.js'
import { sessionOfRow, type SessionRow } from './session-columns.js'
import { startWorker } from './start-worker.js'
import { WriterThread } from './writer-thread.js'

export interface SqliteStoreOptions {
  /** Folder that holds `iothub.db`; created if missing. */
  dataDir: string
  synchronous?: 'full' | 'normal'
  /** How long a write waits for a lock held by another connection, in ms. */
  busyTimeoutMs?: number
  maxBatch?: number
  observer?: CommitObserver
  /** Deadline of every commit and probe, in ms (IOTHUB_STORE_TIMEOUT). Default 5000. */
  timeoutMs?: number
  /** This process (`replicaRunId`): the store's one writer. */
  replica?: string
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite'
  readonly replica: string
  readonly path: string
  private readonly db: Database.Database
  private readonly loads: ReturnType<typeof prepareLoads>
  private readonly committer: GroupCommitter
  private readonly writer: WriterThread
  private readonly checkpointer: Worker
  private checkpointerThreadId: number | null = null
  /** Resolves once both threads have said their ids (or ended): `threads()` is whole from then on. */
  private readonly threadsSaid: Promise<unknown>
  private readonly fleetReader: FleetReader
  /** One writer: whatever it reads back of the log (after a gap) is its own. */
  private readonly follower = new LogFollower(this)
  /** One writer, one replica: this process. */
  readonly coordination: SoleReplica
  readonly tokens: TokenHasher

  constructor(options: SqliteStoreOptions) {
    this.replica = options.replica ?? replicaRunId('sqlite-store')
    mkdirSync(options.dataDir, { recursive: true })
    this.path = join(options.dataDir, 'iothub.db')
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000
    this.db = new Database(this.path, { timeout: busyTimeoutMs })
    this.db.pragma('journal_mode = WAL')
    this.tokens = this.migrate()
    this.loads = prepareLoads(this.db)
    this.fleetReader = new FleetReader({ path: this.path, busyTimeoutMs })
    this.writer = new WriterThread({ path: this.path, synchronous: options.synchronous ?? 'full', busyTimeoutMs })
    this.coordination = new SoleReplica((pruning) => this.writer.prune(pruning))
    // every 200 ms: the writer's own checkpoints (writer-worker.ts) then find most of the WAL copied
    this.checkpointer = startWorker('checkpoint', { path: this.path, intervalMs: 200 } satisfies CheckpointOptions)
    // Losing it must not take the hub down: commits go on, and the writer's own automatic
    // checkpoint bounds the WAL. It is reported like a failed commit.
    this.checkpointer.on('error', (error) => options.observer?.failed(new StoreError(`WAL checkpointer failed: ${error.message}`)))
    const checkpointerSaid = new Promise<void>((resolve) => {
      this.checkpointer.once('message', (hello: CheckpointerHello) => {
        this.checkpointerThreadId = hello.thread
        resolve()
      })
      this.checkpointer.once('exit', () => resolve())
    })
    this.threadsSaid = Promise.all([this.writer.said, checkpointerSaid])
    // One writer: batches are the log's next entries as they commit, handed to the caches as
    // they come (the follower reads the file only after a batch whose answer was lost).
    this.committer = new GroupCommitter(this.writer, {
      maxBatch: options.maxBatch,
      observer: options.observer,
      timeoutMs: options.timeoutMs,
      // a gap (a batch whose answer came too late) is read back from the file; never waited on for long
      afterCommit: (log) => withinDeadline(this.follower.committed(log), options.timeoutMs ?? 5000).catch(() => undefined)
    })
  }

  /** Brings the file to today's schema; answers the hasher of its token key. */
  private migrate(): TokenHasher {
    const version = this.db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) {
      throw new Error(`${this.path} has schema version ${version}; this iothub knows up to ${SCHEMA_VERSION}`)
    }
    return this.db.transaction(() => {
      // an older file is brought to today's tables first; SCHEMA then adds the tables it lacks
      if (version === 1) this.db.exec(MOUNT_VERSION_1_SESSIONS)
      if (version >= 1 && version < 4) this.db.exec(upgradeTo4(version >= 2))
      // (a file put back to an older version number by hand may have the column already)
      if (version >= 3 && version < 6 && !this.hasColumn('change_log', 'entries')) this.db.exec(LOG_ROW_ENTRIES)
      this.db.exec(SCHEMA)
      this.db.prepare("INSERT OR IGNORE INTO store_keys (name, key) VALUES ('token', ?)").run(newTokenKey())
      const tokens = new TokenHasher(this.db.prepare("SELECT key FROM store_keys WHERE name = 'token'").pluck().get() as Buffer)
      if (version < 5) {
        this.db.function('iothub_token_hash', { deterministic: true }, (token: unknown) => tokens.hash(String(token)))
        this.db.exec(HASH_PLAIN_TOKENS)
      }
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`)
      return tokens
    })()
  }

  private hasColumn(table: string, column: string): boolean {
    return (this.db.pragma(`table_info(${table})`) as { name: string }[]).some((c) => c.name === column)
  }

  commit<R = void>(mutations: readonly Mutation[], options?: CommitOptions<R>): Promise<R> {
    return this.committer.commit(mutations, options)
  }

  liveSettled(behindMs?: number): Promise<void> {
    return this.committer.liveSettled(behindMs)
  }

  async load(): Promise<Snapshot> {
    const s = this.loads
    // the threads start with the store and say their ids within milliseconds; waited for here, so
    // that once the hub serves, its metrics name each of them (threads())
    await this.threadsSaid
    return {
      // the one writer is this process, which commits nothing until its caches are loaded
      ...fleetRows((table) => this.fleetReader.rows(table)),
      retained: (s.retained.all() as { topic: string; packet: Buffer }[]).map((r) => ({ topic: r.topic, packet: r.packet })),
      outgoing: (s.outgoing.all() as { client_id: string; seq: number; packet: Buffer }[]).map((r) => ({
        clientId: r.client_id,
        seq: r.seq,
        packet: r.packet
      })),
      incoming: (s.incoming.all() as { client_id: string; message_id: number; packet: Buffer }[]).map((r) => ({
        clientId: r.client_id,
        messageId: r.message_id,
        packet: r.packet
      })),
      wills: (s.wills.all() as { client_id: string; packet: Buffer }[]).map((r) => ({ clientId: r.client_id, packet: r.packet })),
      journal: s.journal.all() as { seq: number; packet: Buffer }[],
      logPosition: s.logHead.get() as number
    }
  }

  follow(position: number, applier: LogApplier): void {
    this.follower.start(position, applier)
  }

  following(): LogFollowing {
    return { applied: this.follower.applied, lagSeconds: this.follower.lagSeconds(), lastError: this.follower.lastError?.message ?? null }
  }

  async readLog(after: number, limit: number): Promise<LogEntry[]> {
    const entries: LogEntry[] = []
    if (limit <= 0) return entries
    // rows in order from the one holding entry after + 1: each holds at least one entry, so no
    // more than `limit` rows are read, and the loop stops at the first that fills the page
    for (const row of this.loads.log.iterate(after, limit) as IterableIterator<LogRow>) {
      if (entriesOfRow(row, after, limit, entries)) break
    }
    return entries
  }

  async pushRuns(): Promise<string[]> {
    return this.loads.pushRuns.all() as string[]
  }

  async readPushes(run: string, afterSeq: number, limit: number): Promise<StoredPush[]> {
    return this.loads.pushes.all(run, afterSeq, limit) as StoredPush[]
  }

  async countPushes(): Promise<number> {
    return this.loads.pushCount.get() as number
  }

  async earliestPushElsewhere(topic: string, than: Pick<StoredPush, 'run' | 'at'>): Promise<number | undefined> {
    return this.loads.earliestPushElsewhere.get(topic, than.run, than.at, than.at, than.run) as number | undefined
  }

  async readSession(id: string): Promise<SessionRecord | undefined> {
    const row = this.loads.session.get(id) as SessionRow | undefined
    return row ? sessionOfRow(row) : undefined
  }

  async readProperties(deviceId: string): Promise<StoredDeviceProperty[]> {
    return (this.loads.properties.all(deviceId) as { device_id: string; name: string; value: string; updated_at: number }[]).map((r) => ({
      deviceId: r.device_id,
      name: r.name,
      value: JSON.parse(r.value) as unknown,
      updatedAt: r.updated_at
    }))
  }

  async readPropertiesOf(deviceIds: readonly string[]): Promise<StoredDeviceProperty[]> {
    // one indexed read per device, all in this call: SQLite is in the process, no round trips
    const found: StoredDeviceProperty[] = []
    for (const deviceId of deviceIds) found.push(...(await this.readProperties(deviceId)))
    return found
  }

  async readDevice(id: string): Promise<Device | undefined> {
    const row = this.loads.device.get(id) as { doc: string } | undefined
    return row ? (JSON.parse(row.doc) as Device) : undefined
  }

  async probe(): Promise<void> {
    const since = Date.now()
    try {
      await this.writer.probe(this.committer.timeoutMs)
    } catch (cause) {
      const error = cause instanceof StoreError ? cause : new StoreError(`store probe failed: ${(cause as Error).message}`, { cause })
      this.committer.failed(error)
      throw error
    }
    this.committer.answered(since)
  }

  threads(): StoreThread[] {
    const threads: StoreThread[] = []
    if (this.writer.threadId !== null) threads.push({ name: 'store_writer', threadId: this.writer.threadId })
    if (this.checkpointerThreadId !== null) threads.push({ name: 'store_checkpointer', threadId: this.checkpointerThreadId })
    return threads
  }

  health(): StoreHealth {
    const error = this.committer.lastError
    return { ok: error === null && this.db.open, lastError: error?.message ?? null, failures: this.committer.failures }
  }

  async close(): Promise<void> {
    await this.committer.close()
    await this.writer.close()
    this.follower.stop()
    await this.fleetReader.close()
    if (this.checkpointer.threadId !== -1) {
      const exited = new Promise((resolve) => this.checkpointer.once('exit', resolve))
      this.checkpointer.postMessage('close')
      await exited
    }
    if (this.db.open) this.db.close()
  }
}
