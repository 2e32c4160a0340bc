/**
 * The scale-out store: PostgreSQL, which every hub replica of an external-mode deployment shares
 * (docs/ARCHITECTURE.md, "Two carriers"). Writes go through group commit like the SQLite
 * store's; each batch is one transaction of a few multi-row statements (batch-statements.ts) on
 * a connection kept for writing, so batches commit in the order they are handed over. `load()`
 * reads every table in one repeatable-read transaction, a consistent picture even while other
 * replicas write.
 *
 * Opening is asynchronous (connect, check and create the schema): `PostgresStore.open()`.
 */
import pg from 'pg'
import type { Device } from '../../domain/device.js'
import type { SessionRecord } from '../../domain/session.js'
import type { SubscriptionEntity } from '../../domain/subscription.js'
import type { LogEntry } from '../change-log.js'
import type { Decision } from '../decision.js'
import { GroupCommitter, type BatchItem, type BatchOutcome, type BatchWriter, type CommitObserver, type CommitOptions, type WriteControl } from '../group-commit.js'
import { LogFollower, type LogApplier } from '../log-follower.js'
import { StoreCommitUnknownError, StoreError, StoreTimeoutError, withinDeadline, type LogFollowing, type Mutation, type Snapshot, type LoadOptions, type Store, type StoreHealth, type StoredDeviceProperty, type StoredPush, type StoredTopic } from '../store.js'
import { IN_ORDER_PUSHES } from '../in-order-pushes.js'
import { BatchStatements, FleetCountChange, type PlannedStatement } from './batch-statements.js'
import { DecisionReader } from './decision-reader.js'
import { FleetQueries } from './fleet-queries.js'
import { StoreReads } from './store-reads.js'
import { subscriptionOfColumns, type TopicColumns } from './topic-columns.js'
import { LogListener } from './log-listener.js'
import { LogStatements } from './log-statements.js'
import { replicaRunId } from '../coordination.js'
import { PostgresCoordination } from './postgres-coordination.js'
import { SCHEMA_VERSION, createTableStatements, qualifiedTables, type QualifiedTables } from './schema.js'
import { serverWarnings } from './server-warnings.js'
import { upgradeDevicesTo6, tokenKey } from './token-upgrade.js'
import type { TokenHasher } from '../../domain/secret.js'

export interface PostgresStoreOptions {
  connectionString: string
  /** The PostgreSQL schema that holds the tables, created if missing. Default `public`. */
  schema?: string
  maxBatch?: number
  observer?: CommitObserver
  /** Most connections open at once: one is the writer's, the others serve `load()` and `probe()`. Default 4. */
  poolSize?: number
  /** Deadline of every commit and probe, in ms (IOTHUB_STORE_TIMEOUT). Default 5000. */
  timeoutMs?: number
  /** This process among the store's writers (`replicaRunId`); a random one by default. */
  replica?: string
}

/** Longest a committed batch's callers wait for the caches to have it (the entries before it read), ms. */
const CACHE_WAIT_MS = 1000
/** How long to wait for a new connection before failing the commit or load that needs it. */
const CONNECT_TIMEOUT_MS = 10_000
/** Tries of one batch when PostgreSQL rolled it back whole and it may simply be run again. */
const MAX_ATTEMPTS = 3
/** deadlock_detected, serialization_failure: the server rolled back the whole transaction. */
const RETRYABLE_CODES = new Set(['40P01', '40001'])

export class PostgresStore implements Store {
  readonly kind = 'postgres'
  readonly replica: string
  private readonly committer: GroupCommitter
  private readonly follower: LogFollower
  private readonly listener: LogListener
  /** The log head read under way for `caughtUp` (settled, never rejecting), and the one asked for after it. */
  private headRead: Promise<unknown> = Promise.resolve()
  private nextHeadRead: Promise<number> | undefined
  readonly coordination: PostgresCoordination
  readonly fleet: FleetQueries
  /** Reads outside a batch, within the deadline. */
  private readonly reads: StoreReads
  private closing: Promise<void> | null = null

  private constructor(
    private readonly pool: pg.Pool,
    private readonly tables: QualifiedTables,
    private readonly writer: TransactionWriter,
    private readonly log: LogStatements,
    readonly tokens: TokenHasher,
    options: PostgresStoreOptions
  ) {
    this.replica = log.replica
    this.follower = new LogFollower(this, this.replica)
    this.coordination = new PostgresCoordination(pool, tables)
    const timeoutMs = options.timeoutMs ?? 5000
    this.reads = new StoreReads(pool, timeoutMs, (error) => this.committer.failed(error))
    this.fleet = new FleetQueries(this.reads, tables)
    this.listener = new LogListener(options.connectionString, log.channel, (head) => this.follower.wake(head))
    this.committer = new GroupCommitter(writer, {
      maxBatch: options.maxBatch,
      observer: options.observer,
      timeoutMs,
      commitMarginMs: writer.commitMarginMs,
      // the batch is durable whatever happens here: should the entries before it not be read
      // soon, its callers hear anyway (a batch must not hold its place in the pipeline for long),
      // and the caches catch up as the log is read
      afterCommit: (log) => withinDeadline(this.follower.committed(log), Math.min(timeoutMs, CACHE_WAIT_MS)).catch(() => undefined)
    })
  }

  /** Connects, creates the schema and tables if missing, and refuses a newer schema version. */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const poolSize = options.poolSize ?? 4
    // the writer holds one connection for good: with only one, load() would wait forever
    if (!Number.isInteger(poolSize) || poolSize < 2) throw new StoreError(`PostgreSQL poolSize must be an integer of at least 2, not ${poolSize}`)
    const schema = options.schema ?? 'public'
    const timeoutMs = options.timeoutMs ?? 5000
    const pool = new pg.Pool({
      connectionString: options.connectionString,
      max: poolSize,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
      // The server's own guards, for when the hub cannot reach it to say stop (see TransactionWriter)
      statement_timeout: timeoutMs,
      idle_in_transaction_session_timeout: idleInTransactionMs(timeoutMs)
    })
    // An idle pooled connection the server closes (restart, failover, idle timeout) is reported
    // here; the pool has already dropped it and opens a new one when next asked. Not listening
    // would let the 'error' event end the process.
    pool.on('error', () => undefined)
    const tables = qualifiedTables(schema)
    let tokens: TokenHasher
    try {
      tokens = await prepareSchema(pool, schema, tables)
    } catch (error) {
      await pool.end()
      if (error instanceof StoreError) throw error
      throw new StoreError(`cannot open the PostgreSQL store: ${(error as Error).message}`, { cause: error })
    }
    const log = new LogStatements(tables, schema, options.replica ?? replicaRunId('postgres-store'))
    const writer = new TransactionWriter(pool, new BatchStatements(tables), new DecisionReader(tables, schema), log, timeoutMs)
    return new PostgresStore(pool, tables, writer, log, tokens, options)
  }

  commit<R = void>(mutations: readonly Mutation[], options?: CommitOptions<R>): Promise<R> {
    return this.committer.commit(mutations, options)
  }

  serverWarnings(): Promise<string[]> {
    return serverWarnings(this.reads)
  }

  liveSettled(behindMs?: number): Promise<void> {
    return this.committer.liveSettled(behindMs)
  }

  decide<R>(decision: Decision<R>): Promise<R> {
    return this.committer.decide(decision)
  }

  follow(position: number, applier: LogApplier): void {
    this.follower.start(position, applier)
    this.listener.start()
  }

  following(): LogFollowing {
    const error = this.follower.lastError ?? this.listener.lastError
    return { applied: this.follower.applied, lagSeconds: this.follower.lagSeconds(), lastError: error?.message ?? null }
  }

  async caughtUp(timeoutMs: number): Promise<boolean> {
    return this.follower.caughtUp(await this.logHeadFromNow(), timeoutMs)
  }

  /**
   * The log head, read after this call: it covers every commit a read the caller made before
   * could see. Callers share reads — one in flight at a time, the next one issued once it ends,
   * for everyone who asked meanwhile — so a reconcile confirming hundreds of clients at once
   * asks PostgreSQL a couple of times, not hundreds, and leaves the pool to live calls.
   */
  private logHeadFromNow(): Promise<number> {
    if (this.nextHeadRead) return this.nextHeadRead
    const next: Promise<number> = this.headRead.then(async () => {
      // issued now: whoever asks from here on needs a later read
      if (this.nextHeadRead === next) this.nextHeadRead = undefined
      const { rows } = await this.reads.query<{ seq: string }>(`SELECT seq FROM ${this.tables.log_head}`)
      return Number(rows[0]?.seq ?? 0)
    })
    this.nextHeadRead = next
    this.headRead = next.catch(() => undefined)
    return next
  }

  async readLog(after: number, limit: number): Promise<LogEntry[]> {
    const { rows } = await this.pool.query<{ seq: string; at: string; change: LogEntry['change']; replica: string | null }>(this.log.read(after, limit))
    return rows.map((r) => ({ seq: Number(r.seq), at: Number(r.at), change: r.change, ...(r.replica !== null ? { replica: r.replica } : {}) }))
  }

  async pushRuns(): Promise<string[]> {
    const { rows } = await this.reads.query<{ run: string }>(`SELECT run FROM ${this.tables.push_journal} GROUP BY run ORDER BY min(at), run`)
    return rows.map((r) => r.run)
  }

  async readPushes(run: string, afterSeq: number, limit: number): Promise<StoredPush[]> {
    const { rows } = await this.reads.query<{ run: string; seq: string; topic: string; payload: Buffer; qos: number; at: string }>(
      `SELECT run, seq, topic, payload, qos, at FROM ${this.tables.push_journal} WHERE run = $1 AND seq > $2 ORDER BY seq LIMIT $3`,
      [run, afterSeq, limit]
    )
    return rows.map((r) => ({ run: r.run, seq: Number(r.seq), topic: r.topic, payload: r.payload, qos: r.qos as StoredPush['qos'], at: Number(r.at) }))
  }

  async countPushes(): Promise<number> {
    const { rows } = await this.reads.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.tables.push_journal}`)
    return Number(rows[0]!.n)
  }

  async earliestPushElsewhere(topic: string, than: Pick<StoredPush, 'run' | 'at'>): Promise<number | undefined> {
    const { rows } = await this.reads.query<{ at: string }>(
      `SELECT at FROM ${this.tables.push_journal} WHERE topic = $1 AND ${IN_ORDER_PUSHES} AND run <> $2 AND (at < $3 OR (at = $3 AND run < $2)) ORDER BY at LIMIT 1`,
      [topic, than.run, than.at]
    )
    return rows.length === 0 ? undefined : Number(rows[0]!.at)
  }

  async readSession(id: string): Promise<SessionRecord | undefined> {
    const { rows } = await this.reads.query<{ doc: SessionRecord; version: string }>(`SELECT doc, version FROM ${this.tables.sessions} WHERE id = $1`, [id])
    const row = rows[0]
    return row ? { ...row.doc, version: Number(row.version) } : undefined
  }

  async readProperties(deviceId: string): Promise<StoredDeviceProperty[]> {
    const { rows } = await this.reads.query<{ name: string; value: unknown; updated_at: string }>(
      `SELECT name, value, updated_at FROM ${this.tables.device_properties} WHERE device_id = $1`,
      [deviceId]
    )
    return rows.map((r) => ({ deviceId, name: r.name, value: r.value, updatedAt: Number(r.updated_at) }))
  }

  async readPropertiesOf(deviceIds: readonly string[]): Promise<StoredDeviceProperty[]> {
    if (deviceIds.length === 0) return []
    const { rows } = await this.reads.query<{ device_id: string; name: string; value: unknown; updated_at: string }>(
      `SELECT device_id, name, value, updated_at FROM ${this.tables.device_properties} WHERE device_id = ANY($1::text[])`,
      [deviceIds]
    )
    return rows.map((r) => ({ deviceId: r.device_id, name: r.name, value: r.value, updatedAt: Number(r.updated_at) }))
  }

  async readDevice(id: string): Promise<Device | undefined> {
    const { rows } = await this.reads.query<{ doc: Device }>(`SELECT doc FROM ${this.tables.devices} WHERE id = $1`, [id])
    return rows[0]?.doc
  }

  async load(options: LoadOptions = {}): Promise<Snapshot> {
    const fleet = options.fleet ?? true
    const t = this.tables
    const client = await this.pool.connect().catch((error: Error) => {
      throw new StoreError(`store load failed: ${error.message}`, { cause: error })
    })
    let broken: Error | undefined
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
      // Reading everything at start takes as long as the data is large: no deadline here.
      await client.query('SET LOCAL statement_timeout = 0')
      await client.query('SET LOCAL idle_in_transaction_session_timeout = 0')
      const rows = async <Row extends pg.QueryResultRow>(sql: string): Promise<Row[]> => (await client.query<Row>(sql)).rows
      const fleetRows = async <Row extends pg.QueryResultRow>(sql: string): Promise<Row[]> => (fleet ? rows<Row>(sql) : [])
      const snapshot: Snapshot = {
        devices: (await fleetRows<{ doc: Device }>(`SELECT doc FROM ${t.devices} ORDER BY id`)).map((r) => r.doc),
        deviceProperties: (
          await fleetRows<{ device_id: string; name: string; value: unknown; updated_at: string }>(
            `SELECT device_id, name, value, updated_at FROM ${t.device_properties} ORDER BY device_id, name`
          )
        ).map((r) => ({ deviceId: r.device_id, name: r.name, value: r.value, updatedAt: Number(r.updated_at) })),
        subscriptions: (await fleetRows<{ doc: SubscriptionEntity }>(`SELECT doc FROM ${t.subscriptions} ORDER BY id`)).map((r) => r.doc),
        sessions: (await fleetRows<{ doc: SessionRecord; version: string }>(`SELECT doc, version FROM ${t.sessions} ORDER BY id`)).map((r) => {
          // the column is the truth (see schema.ts); assigning keeps the key where it was
          r.doc.version = Number(r.version)
          return r.doc
        }),
        topics: (await fleetRows<TopicRow>(`SELECT * FROM ${t.topics} ORDER BY session_id, topic`)).map(topicOf),
        retained: await rows<{ topic: string; packet: Buffer }>(`SELECT topic, packet FROM ${t.retained} ORDER BY topic`),
        outgoing: (
          await rows<{ client_id: string; seq: string; packet: Buffer }>(`SELECT client_id, seq, packet FROM ${t.outgoing} ORDER BY client_id, seq`)
        ).map((r) => ({ clientId: r.client_id, seq: Number(r.seq), packet: r.packet })),
        incoming: (
          await rows<{ client_id: string; message_id: number; packet: Buffer }>(
            `SELECT client_id, message_id, packet FROM ${t.incoming} ORDER BY client_id, message_id`
          )
        ).map((r) => ({ clientId: r.client_id, messageId: r.message_id, packet: r.packet })),
        wills: (await rows<{ client_id: string; packet: Buffer }>(`SELECT client_id, packet FROM ${t.wills} ORDER BY client_id`)).map((r) => ({
          clientId: r.client_id,
          packet: r.packet
        })),
        journal: (await rows<{ seq: string; packet: Buffer }>(`SELECT seq, packet FROM ${t.publish_journal} ORDER BY seq`)).map((r) => ({
          seq: Number(r.seq),
          packet: r.packet
        })),
        // read in the same snapshot as the rows: the log after it holds exactly what they miss
        logPosition: Number((await rows<{ seq: string }>(`SELECT seq FROM ${t.log_head}`))[0]?.seq ?? 0)
      }
      if (!fleet) {
        const newest = (await rows<{ incarnation: string | null }>(`SELECT max((doc->>'incarnation') COLLATE "C") AS incarnation FROM ${t.sessions}`))[0]?.incarnation
        if (newest) snapshot.newestIncarnation = newest
      }
      await client.query('COMMIT')
      return snapshot
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError))
      throw new StoreError(`store load failed: ${(error as Error).message}`, { cause: error })
    } finally {
      client.release(broken)
    }
  }

  /** Asks a pooled connection whether the server answers and takes writes (not a standby). */
  async probe(): Promise<void> {
    const since = Date.now()
    let client: pg.PoolClient | undefined
    let abandoned = false
    const giveBack = (ok: boolean): void => {
      if (!client) return
      if (ok) client.release()
      else destroyConnection(client, 'probe failed or abandoned at its deadline')
      client = undefined
    }
    const asking = (async () => {
      client = await this.pool.connect()
      if (abandoned) return giveBack(false)
      try {
        const { rows } = await client.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby')
        if (rows[0]?.standby) throw new StoreError('PostgreSQL is a read-only standby')
      } catch (error) {
        giveBack(false)
        throw error
      }
      giveBack(true)
    })()
    try {
      await withinDeadline(asking, this.committer.timeoutMs, () => {
        abandoned = true
        giveBack(false)
      })
    } catch (cause) {
      const error = cause instanceof StoreError ? cause : new StoreError(`store probe failed: ${(cause as Error).message}`, { cause })
      this.committer.failed(error)
      throw error
    }
    this.committer.answered(since)
  }

  health(): StoreHealth {
    const error = this.committer.lastError
    return { ok: error === null && this.closing === null, lastError: error?.message ?? null, failures: this.committer.failures }
  }

  /** Waits for pending batches, then closes every connection. Calling it again waits the same. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.committer.close()
      await this.writer.close()
      this.follower.stop()
      await this.listener.stop()
      await this.pool.end()
    })()
    return this.closing
  }
}

/**
 * Creates what is missing and records the version, under a lock: replicas starting together must
 * not race to create the same tables. A schema already at this version is left untouched (so a
 * role without CREATE rights can run the hub on tables an administrator made).
 */
/** Creates or upgrades the schema; answers the hasher of the store's token key. */
async function prepareSchema(pool: pg.Pool, schema: string, tables: QualifiedTables): Promise<TokenHasher> {
  const client = await pool.connect()
  let broken: Error | undefined
  try {
    // The pool's idle-in-transaction guard is a fraction of the store's deadline, shorter than
    // the gaps of an upgrade that rewrites rows in between statements (token-upgrade.ts) on a
    // busy machine: this transaction gets a minute (set with BEGIN, leaving no gap before it).
    await client.query("BEGIN; SET LOCAL idle_in_transaction_session_timeout = '60s'")
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`iothub schema ${schema}`])
    const found = await client.query<{ exists: boolean }>('SELECT to_regclass($1) IS NOT NULL AS exists', [tables.schema_version])
    const version = found.rows[0]?.exists
      ? ((await client.query<{ version: number }>(`SELECT version FROM ${tables.schema_version}`)).rows[0]?.version ?? 0)
      : 0
    if (version > SCHEMA_VERSION) {
      throw new StoreError(`PostgreSQL schema "${schema}" has iothub schema version ${version}; this iothub knows up to ${SCHEMA_VERSION}`)
    }
    if (version < SCHEMA_VERSION) {
      // an upgrade fills new columns of every row (version 4: a million sessions take seconds)
      await client.query('SET LOCAL statement_timeout = 0')
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${pg.escapeIdentifier(schema)}`)
      for (const statement of createTableStatements(tables)) await client.query(statement)
      if (version < 6) await upgradeDevicesTo6(client, tables, await tokenKey(client, tables))
      await client.query(
        `INSERT INTO ${tables.schema_version} (version) VALUES ($1) ON CONFLICT (singleton) DO UPDATE SET version = excluded.version`,
        [SCHEMA_VERSION]
      )
    }
    const tokens = await tokenKey(client, tables)
    await client.query('COMMIT')
    return tokens
  } catch (error) {
    await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError))
    throw error
  } finally {
    client.release(broken)
  }
}

/**
 * Commits each batch in one transaction, on one connection kept for writing, strictly in the
 * order the batches are handed over: the GroupCommitter hands over several at once and settles
 * their callers in that order, which separate pooled connections would not keep.
 *
 * When that connection fails (the server restarted, an administrator ended it, the network
 * dropped) the batch on it fails, and the next batch opens another. A batch runs again by itself
 * only where that cannot store it twice: its BEGIN failed, or PostgreSQL rolled it all back.
 *
 * A batch aborted at its deadline must not commit afterwards. Not yet begun, it is not begun.
 * Begun, its connection is destroyed at once — but bytes already written to a socket may still
 * reach the server once a partition heals, so the server guards too: every session runs with
 * `idle_in_transaction_session_timeout`, and COMMIT is sent only while at least that long is
 * left before the deadline. A COMMIT that arrives later than that finds its session already
 * ended by the server and its transaction rolled back; one that arrives in time commits before
 * the deadline. What stays in doubt is only a commit whose answer was lost (group-commit.ts).
 */
class TransactionWriter implements BatchWriter {
  /** The server's idle_in_transaction_session_timeout, ms. */
  private readonly idleMs: number
  /** Least time a caller must have left for a batch to begin with it (GroupCommitOptions.commitMarginMs). */
  readonly commitMarginMs: number
  private connection: WriterConnection | null = null
  /** A connection being opened; shared, so a batch that gave up waiting leaves it to the next. */
  private connecting: Promise<WriterConnection> | null = null
  /** The batch handed over last; the next one starts when it has settled. */
  private previous: Promise<unknown> = Promise.resolve()

  constructor(
    private readonly pool: pg.Pool,
    private readonly statements: BatchStatements,
    private readonly reader: DecisionReader,
    private readonly log: LogStatements,
    /** The store's deadline (IOTHUB_STORE_TIMEOUT), ms. */
    private readonly timeoutMs: number
  ) {
    this.idleMs = idleInTransactionMs(timeoutMs)
    // COMMIT is sent only with idleMs still left, and a batch takes up to a few hundred ms under
    // load: a batch begun with less time than this would be abandoned at COMMIT
    this.commitMarginMs = this.idleMs + Math.min(500, timeoutMs / 10)
  }

  writeBatch(items: readonly BatchItem[], control?: WriteControl): Promise<BatchOutcome> {
    const written = this.previous.then(() => this.write(items, control ?? { signal: new AbortController().signal, deadline: Infinity }))
    this.previous = written.catch(() => undefined)
    return written
  }

  /** Waits for the batches handed over, then gives the connection back. */
  async close(): Promise<void> {
    await this.previous
    this.connection?.release()
    this.connection = null
  }

  private async write(items: readonly BatchItem[], control: WriteControl): Promise<BatchOutcome> {
    // decided already, the statements are planned once; decisions are made again on every try,
    // from what is stored by then
    const decides = items.some((item) => 'decision' in item)
    const planned = decides ? null : this.plan(items.flatMap((item) => ('mutations' in item ? item.mutations : [])))
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.transaction(items, planned, control)
      } catch (error) {
        if (attempt >= MAX_ATTEMPTS || !(error instanceof RolledBackWhole)) throw error instanceof RolledBackWhole ? error.cause : error
      }
    }
  }

  /** A batch's statements and the change-log entries it appends. */
  private plan(mutations: readonly Mutation[]): { statements: PlannedStatement[]; mutations: readonly Mutation[] } {
    return { statements: this.statements.plan(mutations), mutations }
  }

  private async transaction(
    items: readonly BatchItem[],
    planned: { statements: PlannedStatement[]; mutations: readonly Mutation[] } | null,
    control: WriteControl
  ): Promise<BatchOutcome> {
    control.signal.throwIfAborted()
    const connection = await this.connect(control.signal)
    // destroyed, not rolled back: a frozen server would not answer the ROLLBACK either
    const abort = (): void => connection.destroy(control.signal.reason as Error)
    control.signal.addEventListener('abort', abort, { once: true })
    let began = false
    let committing = false
    try {
      control.signal.throwIfAborted()
      await connection.client.query('BEGIN')
      began = true
      let decisions: BatchOutcome['decisions']
      if (!planned) {
        const decided = await this.decideAll(connection.client, items)
        decisions = decided.decisions
        planned = this.plan(decided.mutations)
      }
      const counted = new FleetCountChange()
      for (const statement of planned.statements) counted.add(statement, await connection.client.query(statement))
      const log = await this.log.append(connection.client, planned.mutations, counted)
      // as good as timed out: its callers are refused together, not tried again one by one
      if (Date.now() + this.idleMs > control.deadline) throw new StoreTimeoutError(this.timeoutMs, 'too little time left before the deadline to commit safely')
      control.signal.throwIfAborted()
      committing = true
      await connection.client.query('COMMIT')
      return { ...(decisions ? { decisions } : {}), ...(log ? { log } : {}) }
    } catch (error) {
      await this.abandon(connection)
      if (control.signal.aborted) throw control.signal.reason
      // a COMMIT whose answer did not come may have committed: say so, and never run it again
      if (committing) throw new StoreCommitUnknownError(error)
      // Nothing of this batch reached the database when BEGIN failed: its connection had died
      // idle, unnoticed yet. Deadlock and serialization failures undo the whole transaction.
      // Either way the batch can simply run again. A failed COMMIT cannot: it may have committed.
      const code = (error as { code?: unknown }).code
      if (!began || (typeof code === 'string' && RETRYABLE_CODES.has(code))) throw new RolledBackWhole(error)
      throw error
    } finally {
      control.signal.removeEventListener('abort', abort)
    }
  }

  /**
   * Locks and reads what the batch's decisions read, then makes them in order, each seeing what
   * the ones before it decided. A decision that throws is refused alone.
   */
  private async decideAll(client: pg.PoolClient, items: readonly BatchItem[]): Promise<{ decisions: NonNullable<BatchOutcome['decisions']>; mutations: Mutation[] }> {
    const view = await this.reader.lockAndRead(
      client,
      items.flatMap((item) => ('decision' in item ? [item.decision.reads] : []))
    )
    const mutations: Mutation[] = []
    const decisions = items.map((item) => {
      if ('mutations' in item) {
        for (const m of item.mutations) mutations.push(m)
        view.apply(item.mutations)
        return undefined
      }
      try {
        const decided = (item.decision).decide(view)
        for (const m of decided.mutations) mutations.push(m)
        view.apply(decided.mutations)
        return { result: decided.result }
      } catch (error) {
        return { error: error as Error }
      }
    })
    return { decisions, mutations }
  }

  private async connect(signal: AbortSignal): Promise<WriterConnection> {
    if (this.connection?.failure) this.discard(this.connection)
    if (this.connection) return this.connection
    this.connecting ??= this.pool.connect().then(
      (client) => {
        this.connecting = null
        return (this.connection = new WriterConnection(client))
      },
      (error: Error) => {
        this.connecting = null
        throw error
      }
    )
    const connecting = this.connecting
    connecting.catch(() => undefined) // whoever waits on it hears; a batch that gave up does not
    const aborted = new Promise<never>((_resolve, reject) => {
      if (signal.aborted) reject(signal.reason as Error)
      signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true })
    })
    aborted.catch(() => undefined)
    return Promise.race([connecting, aborted])
  }

  /** Ends the failed transaction; a connection that cannot even roll back is closed for good. */
  private async abandon(connection: WriterConnection): Promise<void> {
    if (!connection.failure) {
      try {
        await connection.client.query('ROLLBACK')
        return
      } catch (error) {
        connection.failure = error as Error
      }
    }
    this.discard(connection)
  }

  private discard(connection: WriterConnection): void {
    connection.release()
    if (this.connection === connection) this.connection = null
  }
}

/** The server's idle_in_transaction_session_timeout for a store deadline (see TransactionWriter). */
function idleInTransactionMs(timeoutMs: number): number {
  return Math.max(1, Math.floor(timeoutMs / 4))
}

/** Closes a pooled connection's socket now, whatever it was doing: nothing more goes out on it. */
function destroyConnection(client: pg.PoolClient, why: string): void {
  // pg ends an idle connection gracefully (a Terminate message the frozen server would not
  // read); its socket, internal to pg, is closed here so nothing waits on the server
  ;(client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy()
  client.release(new Error(why))
}

/** A failure after which PostgreSQL holds nothing of the batch, so it may be tried again. */
class RolledBackWhole extends Error {
  constructor(override readonly cause: unknown) {
    super((cause as Error).message)
  }
}

/** The writer's connection, and why it failed if it did (the pool does not watch it while lent). */
class WriterConnection {
  failure: Error | null = null
  private readonly onError = (error: Error): void => {
    this.failure ??= error
  }

  constructor(readonly client: pg.PoolClient) {
    // Without a listener, a connection lost between batches would end the process.
    client.on('error', this.onError)
  }

  /** Closes it now, mid-query or not: the batch on it is abandoned. */
  destroy(why: Error): void {
    this.failure ??= why
    ;(this.client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy()
  }

  /** Back to the pool if healthy; closed if it failed. */
  release(): void {
    // a failed connection keeps its listener: late errors from its socket must stay handled
    if (!this.failure) this.client.off('error', this.onError)
    this.client.release(this.failure ?? undefined)
  }
}

interface TopicRow extends TopicColumns {
  session_id: string
  persistent: boolean
}

function topicOf(r: TopicRow): StoredTopic {
  return {
    sessionId: r.session_id,
    persistent: r.persistent,
    subscription: subscriptionOfColumns(r)
  }
}
