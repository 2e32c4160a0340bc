/**
 * Replicas: EMQX-mode hubs sharing one PostgreSQL database, measured in one run against one
 * replica alone on the same database.
 *
 *   EMQX node n1 (callers 1) ─ gRPC ─▶ replica A ─┐
 *   EMQX node n2 (callers 2) ─ gRPC ─▶ replica B ─┴─▶ PostgreSQL: decisions under advisory locks,
 *                                                      one change log, LISTEN/NOTIFY between replicas
 *
 * Each replica is a child process of its own (this script with `--child`): its own event loop,
 * as a deployment has, so two replicas are not two hubs taking turns on one loop. The callers
 * are two more child processes (bench/lib/exhook-fleet.ts), PostgreSQL is the machine's own;
 * on a 2-cpu machine all of them share the two cpus, and every round prints where the cpu went.
 *
 * 1. **Throughput.** BENCH_REPLICAS_CLIENTS simulated clients per round, each making the three
 *    calls EMQX makes for a device that connects, subscribes to its attributes and leaves
 *    (client.connected → session.subscribed → client.disconnected), BENCH_REPLICAS_CONCURRENCY
 *    calls in flight (a closed loop, as bench/exhook.ts), half from each caller process.
 *    *one replica*: both callers call A, B is not running. *two replicas*: callers 1 call A,
 *    callers 2 call B — as EMQX node n1's channel lands on A and n2's on B, so all of one
 *    client's hooks reach one replica. Rounds alternate the order of the two; medians are
 *    reported, and the ratio two/one (target ≥ 0.85: coordinating costs at most 15%).
 * 2. **Log-follow lag.** A and B running, callers 1 offer client.connected/client.disconnected
 *    pairs to A only — of registered devices (created through A first, outside the measured
 *    window), as every client is behind the hub's authentication, so each call also moves the
 *    device's connectinfo — in an open loop, at the call rate that makes ~BENCH_REPLICAS_CHANGE_RATE
 *    change-log entries per second (measured in a calibration run first), for
 *    BENCH_REPLICAS_LAG_SECONDS. Per change: from the moment A's COMMIT of it answered (A's
 *    LogFollower is told of its own commit right then) to the moment B's cache applier returned
 *    from applying it — both read in the replicas' processes, on one clock (the offset between
 *    the two processes' clocks is estimated and printed). Target p99 ≤ 100 ms. The same lag,
 *    both ways, is printed for the two-replica throughput rounds (both replicas saturated).
 * 3. **Statements.** Every statement each replica sends PostgreSQL is counted in its process
 *    (pg.Client's query, which the store's pool and its LISTEN connection both use): per batch
 *    transaction (BEGIN to COMMIT) by kind, and outside batches (log reads, probes). Divided by
 *    the batches and by the lifecycle events of the same window. pg_stat_statements needs
 *    shared_preload_libraries (a server restart), so it is not used; instead the database's
 *    own count of committed transactions over the whole run (pg_stat_database.xact_commit, read
 *    after every replica has disconnected) is set against the transactions counted here plus
 *    those PostgreSQL runs of its own for the replicas: one as each connection starts, and one
 *    each time a listening connection is handed the notifications queued for it.
 *
 * The lag phase offers its rate whatever A manages: on a machine where A commits fewer changes
 * than that, calls queue past EMQX's 5 s deadline and fail, and the rate A did commit is the one
 * printed beside the lag (marked as not sustained). Checked after it: B applied every change A
 * committed, and both replicas hold the same sessions at the same log position.
 *
 * Checked after every throughput round: every call answered OK; connected, subscribed and
 * disconnected each applied once per client (none stale or failed) across the replicas; both
 * replicas at the same log position; no session and no subscription entity left on either.
 *
 *   BENCH_REPLICAS_CLIENTS       clients per timed round, 3 calls each        (default 4,000)
 *   BENCH_REPLICAS_CONCURRENCY   calls in flight, split over the 2 callers     (default 512)
 *   BENCH_REPLICAS_CHANNELS      gRPC connections, split over the 2 callers    (default 4)
 *   BENCH_REPLICAS_ROUNDS        timed rounds of each; medians are reported   (default 3)
 *   BENCH_REPLICAS_WARMUP        clients of one untimed round of each first   (default 2,000)
 *   BENCH_REPLICAS_CHANGE_RATE   change-log entries per second offered to A   (default 5,000)
 *   BENCH_REPLICAS_LAG_SECONDS   how long they are offered                     (default 10)
 *   BENCH_DATABASE_URL           the PostgreSQL server (default IOTHUB_TEST_DATABASE_URL, else
 *                                postgres://postgres@127.0.0.1:5432/test); a database of its
 *                                own is created there and dropped at the end
 */
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { performance, type EventLoopUtilization } from 'node:perf_hooks'
import pg from 'pg'
import { loadConfig } from '../src/config.js'
import { Hub } from '../src/hub.js'
import type { CommittedLog } from '../src/store/change-log.js'
import { startEmqxRestStandin } from '../test/helpers/emqx-rest-standin.js'
import { ChildLink } from './lib/child-fleet.js'
// Types only, statically: exhook-fleet.ts becomes the callers' child when its process has
// `--child`, as this script's replica processes do — so its code is imported by the parent alone
import type { ExhookFleet, RunReport, StreamReport } from './lib/exhook-fleet.js'
import { machineTimes } from './lib/process-cpu.js'
import { commitTotals } from './lib/targets.js'
import { envInt, fmt, line, median, percentiles, removeDir, report, runMain, tempDir, waitFor } from './lib/util.js'

const CLIENTS = envInt('BENCH_REPLICAS_CLIENTS', 4_000)
const CONCURRENCY = envInt('BENCH_REPLICAS_CONCURRENCY', 512)
const CHANNELS = envInt('BENCH_REPLICAS_CHANNELS', 4)
const ROUNDS = envInt('BENCH_REPLICAS_ROUNDS', 3)
const WARMUP = envInt('BENCH_REPLICAS_WARMUP', 2_000)
const CHANGE_RATE = envInt('BENCH_REPLICAS_CHANGE_RATE', 5_000)
const LAG_SECONDS = envInt('BENCH_REPLICAS_LAG_SECONDS', 10)
const SERVER = process.env.BENCH_DATABASE_URL ?? process.env.IOTHUB_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
/** Calls per second of the calibration stream that finds how many log entries a call makes. */
const CALIBRATION_RATE = 1_000
const CALIBRATION_MS = 2_000
const TARGET_RATIO = 0.85
const TARGET_LAG_P99_MS = 100
/** Share of the machine's cpu used by processes outside this benchmark above which a round is flagged. */
const OTHERS_WARNING = 0.1
/** Devices registered per create call before the lag phase. */
const DEVICES_PER_CREATE = 1_000

/** Epoch milliseconds with sub-millisecond resolution: comparable between processes of one machine. */
const clock = (): number => performance.timeOrigin + performance.now()

// ─────────────────────────────────────────────────────────────── the replica's process (--child)

/** Statements this process sent PostgreSQL, counted in pg.Client's query. */
interface StatementCounts {
  /** Statements sent in an explicit transaction (BEGIN … COMMIT/ROLLBACK), both included, by kind. */
  inTransaction: Record<string, number>
  /** Statements sent outside one (each its own transaction), by kind. */
  autocommit: Record<string, number>
  begins: number
  commits: number
  rollbacks: number
  /** Connections opened (PostgreSQL runs one transaction of its own as each starts). */
  connections: number
  /** Notifications received (a listening backend runs a transaction to deliver what is queued). */
  notifications: number
}

interface ReplicaStats {
  running: boolean
  cpuMs: number
  elu: EventLoopUtilization
  /** The store's batch transactions, the items (events) they held, and their time (HubMetrics). */
  batches: number
  batchItems: number
  batchSeconds: number
  /** Lifecycle events, `kind/outcome` → count. */
  events: [string, number][]
  sessions: number
  entities: number
  /** The last change-log entry this replica has applied. */
  applied: number
  followError: string | null
  statements: StatementCounts
}

/** What a replica saw of the log since the last `applies`: flat arrays, four or three numbers per record. */
interface ApplyRecords {
  /** Its own commits: first seq, last seq, clock() when the COMMIT answered, the entries' `at` (epoch ms, stamped before COMMIT). */
  own: number[]
  /** Entries applied to its caches (its own and others'): first seq, last seq, clock() when applied. */
  applied: number[]
}

type ReplicaCommand =
  | { cmd: 'start'; databaseUrl: string; emqxApi: string; emqxApiKey: string; emqxApiSecret: string }
  | { cmd: 'stats' }
  | { cmd: 'applies' }
  | { cmd: 'clock' }
  | { cmd: 'devices'; prefix: string; count: number }
  | { cmd: 'stop' }
  | { cmd: 'exit' }

type ReplicaReply =
  | { type: 'ready' }
  | { type: 'started'; exhookAddress: string; ms: number }
  | ({ type: 'stats' } & ReplicaStats)
  | ({ type: 'applies' } & ApplyRecords)
  | { type: 'clock'; now: number }
  | { type: 'devices'; created: number }
  | { type: 'stopped' }

/** The kind of a statement: its prepared-statement name, or its first two words. */
function statementKind(config: unknown): string {
  if (typeof config === 'object' && config !== null) {
    const { name, text } = config as { name?: unknown; text?: unknown }
    if (typeof name === 'string') return name
    return typeof text === 'string' ? text.trim().split(/\s+/).slice(0, 2).join(' ') : 'other'
  }
  return typeof config === 'string' ? config.trim().split(/\s+/).slice(0, 2).join(' ') : 'other'
}

/**
 * Counts every statement sent through pg.Client — the store's pool and its LISTEN connection
 * are both made of it — by whether it runs inside an explicit transaction on its connection.
 */
function countStatements(): StatementCounts {
  const counts: StatementCounts = { inTransaction: {}, autocommit: {}, begins: 0, commits: 0, rollbacks: 0, connections: 0, notifications: 0 }
  const inTransaction = new WeakSet<object>()
  const proto = pg.Client.prototype as unknown as { query: (...args: unknown[]) => unknown; connect: (...args: unknown[]) => unknown }
  const query = proto.query
  const connect = proto.connect
  proto.connect = function (this: pg.Client, ...args: unknown[]): unknown {
    counts.connections++
    this.on('notification', () => counts.notifications++)
    return connect.apply(this, args)
  }
  proto.query = function (this: object, ...args: unknown[]): unknown {
    const kind = statementKind(args[0])
    const word = kind.split(' ')[0]!.toUpperCase()
    if (word === 'BEGIN') {
      counts.begins++
      inTransaction.add(this)
    }
    const bucket = inTransaction.has(this) ? counts.inTransaction : counts.autocommit
    bucket[kind] = (bucket[kind] ?? 0) + 1
    if (word === 'COMMIT' || word === 'ROLLBACK') {
      if (word === 'COMMIT') counts.commits++
      else counts.rollbacks++
      inTransaction.delete(this)
    }
    return query.apply(this, args)
  }
  return counts
}

function replicaChild(): void {
  const send = (reply: ReplicaReply) => process.send!(reply)
  const statements = countStatements()
  let hub: Hub | undefined
  let dataDir = ''
  let own: number[] = []
  let applied: number[] = []

  const start = async (c: Extract<ReplicaCommand, { cmd: 'start' }>) => {
    if (hub) throw new Error('this replica is running already')
    const t0 = clock()
    dataDir = tempDir('iothub-bench-replica-')
    const config = loadConfig({}, [], {
      dataDir,
      httpPort: 0,
      mqttHost: '127.0.0.1',
      mqttPort: 0,
      broker: 'emqx',
      emqxApi: c.emqxApi,
      emqxApiKey: c.emqxApiKey,
      emqxApiSecret: c.emqxApiSecret,
      emqxVersion: 5,
      exhookHost: '127.0.0.1',
      exhookPort: 0,
      logLevel: 'silent',
      store: 'postgres',
      databaseUrl: c.databaseUrl
    })
    const opened = await Hub.open(config)
    hub = opened
    // When this replica's own commit answered: the PostgreSQL store hands each committed batch's
    // log to its LogFollower right after COMMIT returns. The follower is private to the store;
    // src/ has no hook for this, so the benchmark wraps the instance's method.
    const follower = (opened.store as unknown as { follower?: { committed(log: CommittedLog): Promise<void> } }).follower
    if (!follower || typeof follower.committed !== 'function') throw new Error('the PostgreSQL store has no follower.committed() to time commits by')
    const committed = follower.committed.bind(follower)
    follower.committed = (log) => {
      if (log.entries.length > 0) own.push(log.previous + 1, log.previous + log.entries.length, clock(), log.entries[0]!.at)
      return committed(log)
    }
    // When entries reached this replica's caches: the applier the hub gives its store at start
    const follow = opened.store.follow.bind(opened.store)
    opened.store.follow = (position, applier) =>
      follow(position, (entries, origin) => {
        applier(entries, origin)
        if (entries.length > 0) applied.push(entries[0]!.seq, entries[entries.length - 1]!.seq, clock())
      })
    const { exhook } = await opened.start()
    if (!(await waitFor(() => opened.readiness().ready, 30_000, 10))) throw new Error(`the replica is not ready: ${JSON.stringify(opened.readiness().checks)}`)
    // and its start reconcile done (here, or the lease holder's run this start asked for): the
    // stand-in lists none of the callers' clients, so a run overlapping a round would rightly end
    // whatever that round had connected before it began as a ghost
    const reconciled = () => opened.readiness().checks.emqx?.detail?.startsWith('reconciled') === true
    if (!(await waitFor(reconciled, 60_000, 10))) throw new Error(`the replica's start reconcile did not finish: ${JSON.stringify(opened.readiness().checks)}`)
    own = []
    applied = []
    send({ type: 'started', exhookAddress: `127.0.0.1:${exhook!.port}`, ms: clock() - t0 })
  }

  const stats = async (): Promise<ReplicaStats> => {
    const cpu = process.cpuUsage()
    const base = { cpuMs: (cpu.user + cpu.system) / 1000, elu: performance.eventLoopUtilization(), statements }
    if (!hub) {
      return { ...base, running: false, batches: 0, batchItems: 0, batchSeconds: 0, events: [], sessions: 0, entities: 0, applied: 0, followError: null }
    }
    await hub.registry.settled()
    const commits = await commitTotals(hub)
    const following = hub.store.following()
    return {
      ...base,
      running: true,
      batches: commits?.transactions ?? 0,
      batchItems: commits?.commits ?? 0,
      batchSeconds: commits?.seconds ?? 0,
      events: (await hub.metrics.eventsTotal.get()).values.map((v): [string, number] => [`${v.labels.kind}/${v.labels.outcome}`, v.value]),
      sessions: hub.registry.size,
      entities: hub.registry.subscriptions.size,
      applied: following.applied,
      followError: following.lastError
    }
  }

  /** Registers devices `{prefix}-0` … `{prefix}-{count-1}` through this replica (its API's bulk create). */
  const devices = async (prefix: string, count: number): Promise<number> => {
    if (!hub) throw new Error('this replica is not running')
    for (let from = 0; from < count; from += DEVICES_PER_CREATE) {
      const ids = Array.from({ length: Math.min(DEVICES_PER_CREATE, count - from) }, (_, i) => ({ id: `${prefix}-${from + i}` }))
      await hub.devices.create(ids)
    }
    return count
  }

  const stop = async () => {
    const h = hub
    hub = undefined
    if (h) await h.stop()
    if (dataDir) removeDir(dataDir)
    dataDir = ''
  }

  const fail = (error: unknown) => {
    process.stderr.write(`replica: ${(error as Error).stack ?? String(error)}\n`)
    process.exit(1)
  }
  process.on('message', (message: ReplicaCommand) => {
    switch (message.cmd) {
      case 'start':
        start(message).catch(fail)
        break
      case 'stats':
        stats().then((s) => send({ type: 'stats', ...s }), fail)
        break
      case 'applies':
        send({ type: 'applies', own, applied })
        own = []
        applied = []
        break
      case 'clock':
        send({ type: 'clock', now: clock() })
        break
      case 'devices':
        devices(message.prefix, message.count).then((created) => send({ type: 'devices', created }), fail)
        break
      case 'stop':
        stop().then(() => send({ type: 'stopped' }), fail)
        break
      default:
        stop().then(() => process.exit(0), fail)
    }
  })
  process.on('disconnect', () => void stop().then(() => process.exit(0), fail))
  send({ type: 'ready' })
}

// ─────────────────────────────────────────────────────────────── the parent: runs and measures

/** The parent's handle on one replica's process; the hub in it starts and stops on command. */
class ReplicaProcess {
  exhookAddress = ''
  running = false

  private constructor(
    readonly name: string,
    private readonly link: ChildLink<ReplicaCommand, ReplicaReply>
  ) {}

  static async start(name: string): Promise<ReplicaProcess> {
    return new ReplicaProcess(name, await ChildLink.start<ReplicaCommand, ReplicaReply>('replicas.ts', `replica ${name}`))
  }

  async startHub(databaseUrl: string, emqx: { url: string; key: string; secret: string }): Promise<number> {
    const { exhookAddress, ms } = await this.link.request({ cmd: 'start', databaseUrl, emqxApi: emqx.url, emqxApiKey: emqx.key, emqxApiSecret: emqx.secret }, 'started')
    this.exhookAddress = exhookAddress
    this.running = true
    return ms
  }

  async stopHub(): Promise<void> {
    await this.link.request({ cmd: 'stop' }, 'stopped')
    this.running = false
  }

  stats(): Promise<ReplicaStats> {
    return this.link.request({ cmd: 'stats' }, 'stats')
  }

  applies(): Promise<ApplyRecords> {
    return this.link.request({ cmd: 'applies' }, 'applies')
  }

  async createDevices(prefix: string, count: number): Promise<void> {
    await this.link.request({ cmd: 'devices', prefix, count }, 'devices')
  }

  /** This process's clock minus the replica's, ms, from the midpoint of a round trip; and the round trip. */
  async clockOffset(): Promise<{ offset: number; rtt: number }> {
    let best = { offset: 0, rtt: Number.POSITIVE_INFINITY }
    for (let i = 0; i < 20; i++) {
      const t0 = clock()
      const { now } = await this.link.request({ cmd: 'clock' }, 'clock')
      const t1 = clock()
      if (t1 - t0 < best.rtt) best = { offset: (t0 + t1) / 2 - now, rtt: t1 - t0 }
    }
    return best
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

/** cpu time (ms) of the PostgreSQL server processes serving `database`, from /proc (10 ms ticks). */
async function postgresCpu(admin: pg.Client, database: string): Promise<Map<number, number>> {
  const { rows } = await admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE datname = $1', [database])
  const cpu = new Map<number, number>()
  for (const { pid } of rows) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      cpu.set(pid, ((Number(fields[11]) + Number(fields[12])) * 1000) / 100)
    } catch {
      // gone already, or not on this machine
    }
  }
  return cpu
}

/** cpu the backends used between two readings; a backend started meanwhile counts whole. */
function postgresCpuDelta(before: Map<number, number>, after: Map<number, number>): number {
  let ms = 0
  for (const [pid, value] of after) ms += value - (before.get(pid) ?? 0)
  return ms
}

interface Reading {
  replicas: Map<string, ReplicaStats>
  machine: { busy: number; total: number }
  parentCpu: NodeJS.CpuUsage
  pgCpu: Map<number, number>
}

async function reading(replicas: ReplicaProcess[], admin: pg.Client, database: string): Promise<Reading> {
  const stats = new Map<string, ReplicaStats>()
  for (const r of replicas) stats.set(r.name, await r.stats())
  return { replicas: stats, machine: machineTimes(), parentCpu: process.cpuUsage(), pgCpu: await postgresCpu(admin, database) }
}

/** One replica's share of a window. */
interface ReplicaWindow {
  name: string
  cpuMs: number
  elu: number
  batches: number
  batchItems: number
  batchSeconds: number
  events: Map<string, number>
  statements: StatementCounts
}

interface Window {
  replicas: ReplicaWindow[]
  pgCpuMs: number
  parentCpuMs: number
  machineBusyMs: number
  machineTotalMs: number
}

function countsDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {}
  for (const [k, v] of Object.entries(b)) if (v - (a[k] ?? 0) !== 0) d[k] = v - (a[k] ?? 0)
  return d
}

function windowOf(before: Reading, after: Reading, live: string[]): Window {
  const replicas = live.map((name): ReplicaWindow => {
    const a = before.replicas.get(name)!
    const b = after.replicas.get(name)!
    const active = b.elu.active - a.elu.active
    const idle = b.elu.idle - a.elu.idle
    return {
      name,
      cpuMs: b.cpuMs - a.cpuMs,
      elu: active / Math.max(1e-9, active + idle),
      batches: b.batches - a.batches,
      batchItems: b.batchItems - a.batchItems,
      batchSeconds: b.batchSeconds - a.batchSeconds,
      events: new Map(Object.entries(countsDelta(Object.fromEntries(a.events), Object.fromEntries(b.events)))),
      statements: {
        inTransaction: countsDelta(a.statements.inTransaction, b.statements.inTransaction),
        autocommit: countsDelta(a.statements.autocommit, b.statements.autocommit),
        begins: b.statements.begins - a.statements.begins,
        commits: b.statements.commits - a.statements.commits,
        rollbacks: b.statements.rollbacks - a.statements.rollbacks,
        connections: b.statements.connections - a.statements.connections,
        notifications: b.statements.notifications - a.statements.notifications
      }
    }
  })
  const parent = process.cpuUsage(before.parentCpu)
  return {
    replicas,
    pgCpuMs: postgresCpuDelta(before.pgCpu, after.pgCpu),
    parentCpuMs: (parent.user + parent.system) / 1000,
    machineBusyMs: after.machine.busy - before.machine.busy,
    machineTotalMs: after.machine.total - before.machine.total
  }
}

const sum = (values: Iterable<number>): number => {
  let s = 0
  for (const v of values) s += v
  return s
}

/**
 * Per change committed by `committer` and applied by `follower`: applied − committed, ms (and
 * from the entry's `at`, stamped just before the COMMIT was sent, with ms resolution).
 * `offset`: the committer's clock minus the follower's, added to put both on one clock.
 */
function lagsOf(committer: ApplyRecords, follower: ApplyRecords, offset: number): { fromCommit: number[]; fromAt: number[] } {
  const committedAt = new Map<number, { t: number; at: number }>()
  for (let i = 0; i < committer.own.length; i += 4) {
    const [first, last, t, at] = committer.own.slice(i, i + 4) as [number, number, number, number]
    for (let seq = first; seq <= last; seq++) committedAt.set(seq, { t, at })
  }
  const fromCommit: number[] = []
  const fromAt: number[] = []
  for (let i = 0; i < follower.applied.length; i += 3) {
    const [first, last, t] = follower.applied.slice(i, i + 3) as [number, number, number]
    for (let seq = first; seq <= last; seq++) {
      const c = committedAt.get(seq)
      if (!c) continue
      fromCommit.push(t + offset - c.t)
      fromAt.push(t + offset - c.at)
    }
  }
  return { fromCommit, fromAt }
}

type Setup = 'one' | 'two'

interface RoundResult {
  setup: Setup
  label: string
  clients: number
  calls: number
  wallMs: number
  rate: number
  reports: RunReport[]
  window: Window
  callersCpuMs: number
  othersCpuMs: number
  /** Two replicas: lag of each one's changes at the other (A→B, B→A). */
  crossLag: { aToB: number[]; bToA: number[] } | null
  faults: string[]
}

const SETUP_NAME: Record<Setup, string> = { one: 'one replica', two: 'two replicas' }

interface Bench {
  admin: pg.Client
  database: string
  databaseUrl: string
  emqx: { url: string; key: string; secret: string }
  a: ReplicaProcess
  b: ReplicaProcess
  callers: [ExhookFleet, ExhookFleet]
  /** B's clock minus A's, ms. */
  offsetBA: number
}

async function ensureB(bench: Bench, setup: Setup): Promise<void> {
  if (setup === 'two' && !bench.b.running) await bench.b.startHub(bench.databaseUrl, bench.emqx)
  if (setup === 'one' && bench.b.running) await bench.b.stopHub()
}

async function openCallers(bench: Bench, setup: Setup): Promise<void> {
  const perCaller = Math.max(1, Math.floor(CHANNELS / 2))
  const targets = [bench.a.exhookAddress, setup === 'two' ? bench.b.exhookAddress : bench.a.exhookAddress]
  for (let i = 0; i < 2; i++) {
    await bench.callers[i]!.close()
    await bench.callers[i]!.open({ address: targets[i]!, version: 'v2', channels: perCaller, transport: 'http2' })
  }
}

/** Waits until every running replica has applied the log up to the newest entry any of them has. */
async function caughtUp(replicas: ReplicaProcess[]): Promise<ReplicaStats[]> {
  let stats: ReplicaStats[] = []
  const ok = await (async () => {
    const deadline = Date.now() + 30_000
    for (;;) {
      stats = []
      for (const r of replicas) stats.push(await r.stats())
      const head = Math.max(...stats.map((s) => s.applied))
      if (stats.every((s) => s.applied === head)) return true
      if (Date.now() > deadline) return false
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  if (!ok) throw new Error(`the replicas did not reach one log position within 30 s: ${stats.map((s, i) => `${replicas[i]!.name} ${s.applied}`).join(', ')}`)
  return stats
}

async function throughputRound(bench: Bench, setup: Setup, label: string, clients: number): Promise<RoundResult> {
  await ensureB(bench, setup)
  await openCallers(bench, setup)
  const live = setup === 'two' ? [bench.a, bench.b] : [bench.a]
  await caughtUp(live)
  for (const r of live) await r.applies() // start the lag records afresh
  const before = await reading(live, bench.admin, bench.database)
  const half = Math.ceil(clients / 2)
  const inFlight = Math.max(1, Math.floor(CONCURRENCY / 2))
  const t0 = clock()
  const reports = await Promise.all([
    bench.callers[0].run({ prefix: `${label}-n1`, clients: half, concurrency: inFlight }),
    bench.callers[1].run({ prefix: `${label}-n2`, clients: clients - half, concurrency: inFlight })
  ])
  const wallMs = clock() - t0
  const after = await reading(live, bench.admin, bench.database)
  const window = windowOf(before, after, live.map((r) => r.name))
  const settled = await caughtUp(live)
  const calls = sum(reports.map((r) => r.calls))
  const callersCpuMs = sum(reports.map((r) => r.cpuMs))

  let crossLag: RoundResult['crossLag'] = null
  if (setup === 'two') {
    const [ra, rb] = [await bench.a.applies(), await bench.b.applies()]
    crossLag = { aToB: lagsOf(ra, rb, -bench.offsetBA).fromCommit, bToA: lagsOf(rb, ra, bench.offsetBA).fromCommit }
  }

  const faults: string[] = []
  const failed = sum(reports.map((r) => r.failed))
  if (failed > 0) faults.push(`${fmt(failed)} calls not answered OK: ${reports.flatMap((r) => r.errors).slice(0, 3).join('; ')}`)
  const events = new Map<string, number>()
  for (const w of window.replicas) for (const [k, v] of w.events) events.set(k, (events.get(k) ?? 0) + v)
  for (const kind of ['connected', 'subscribed', 'disconnected']) {
    const applied = events.get(`${kind}/applied`) ?? 0
    if (applied !== clients) faults.push(`${kind} applied ${fmt(applied)} of ${fmt(clients)}`)
  }
  const other = [...events].filter(([key]) => !key.endsWith('/applied'))
  if (other.length > 0) faults.push(`events not applied: ${other.map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`)
  settled.forEach((s, i) => {
    const name = live[i]!.name
    if (s.sessions > 0) faults.push(`${fmt(s.sessions)} sessions left on ${name}`)
    if (s.entities > 0) faults.push(`${fmt(s.entities)} subscription entities left on ${name}`)
    if (s.followError) faults.push(`${name} cannot read the log: ${s.followError}`)
  })
  const ours = sum(window.replicas.map((w) => w.cpuMs)) + callersCpuMs + window.pgCpuMs + window.parentCpuMs
  return {
    setup,
    label,
    clients,
    calls,
    wallMs,
    rate: (calls / wallMs) * 1000,
    reports,
    window,
    callersCpuMs,
    othersCpuMs: Math.max(0, window.machineBusyMs - ours),
    crossLag,
    faults
  }
}

const PAD = ''.padEnd(6)

function statementsPerBatch(w: ReplicaWindow[]): { batches: number; inBatch: number; outside: number; events: number; notifications: number } {
  const notifications = sum(w.map((r) => r.statements.notifications))
  const batches = sum(w.map((r) => r.statements.begins))
  const inBatch = sum(w.map((r) => sum(Object.values(r.statements.inTransaction))))
  const outside = sum(w.map((r) => sum(Object.values(r.statements.autocommit))))
  const events = sum(w.flatMap((r) => [...r.events.values()]))
  return { batches, inBatch, outside, events, notifications }
}

function printRound(r: RoundResult): void {
  const p99s = r.reports.map((x) => fmt(x.latency.p99, 1)).join(' / ')
  const p50s = r.reports.map((x) => fmt(x.latency.p50, 1)).join(' / ')
  line(
    `  ${SETUP_NAME[r.setup].padEnd(12)}  ${r.label.padEnd(8)}: ${fmt(r.calls).padStart(6)} calls in ${fmt(r.wallMs).padStart(6)} ms = ${fmt(r.rate).padStart(6)} calls/s` +
      `   latency p50 ${p50s} ms, p99 ${p99s} ms (callers 1 / 2)`
  )
  const secs = r.wallMs / 1000
  const replicaText = r.window.replicas
    .map(
      (w) =>
        `${w.name}: cpu ${fmt(w.cpuMs / r.wallMs, 2)}, loop ${fmt(w.elu * 100)}% busy, ${fmt(w.batches)} batches × ${fmt(w.batchItems / Math.max(1, w.batches), 1)} events, ` +
        `${fmt((w.batchSeconds * 1000) / Math.max(1, w.batches), 1)} ms each`
    )
    .join(';  ')
  line(`  ${PAD}${replicaText}`)
  const s = statementsPerBatch(r.window.replicas)
  line(
    `  ${PAD}postgres: cpu ${fmt(r.window.pgCpuMs / r.wallMs, 2)}, ${fmt(s.inBatch / Math.max(1, s.batches), 1)} statements per batch + ${fmt(s.outside / Math.max(1, s.batches), 2)} outside,` +
      ` ${fmt(s.batches / secs)} batches/s;  callers: cpu ${fmt(r.callersCpuMs / r.wallMs, 2)} (loops ${r.reports.map((x) => `${fmt(x.elu * 100)}%`).join(' / ')} busy);  of ${availableParallelism()} cpus`
  )
  if (r.crossLag) {
    const a = percentiles(r.crossLag.aToB)
    const b = percentiles(r.crossLag.bToA)
    line(
      `  ${PAD}log lag while both are saturated: A's changes at B p50/p99/max ${fmt(a.p50, 1)}/${fmt(a.p99, 1)}/${fmt(a.max, 1)} ms (${fmt(r.crossLag.aToB.length)}),` +
        ` B's at A ${fmt(b.p50, 1)}/${fmt(b.p99, 1)}/${fmt(b.max, 1)} ms (${fmt(r.crossLag.bToA.length)})`
    )
  }
  line(
    `  ${PAD}check: ${
      r.faults.length === 0
        ? `${fmt(r.calls)} calls OK; connected, subscribed, disconnected each applied ${fmt(r.clients)}×, none stale; replicas at one log position, no session or entity left`
        : `MISMATCH: ${r.faults.join('; ')}`
    }`
  )
  const others = r.othersCpuMs / Math.max(1, r.window.machineTotalMs)
  if (others > OTHERS_WARNING) {
    line(`  ${PAD}WARNING: processes outside this benchmark used ${fmt(r.othersCpuMs)} ms of cpu (${fmt(others * 100)}% of the machine) during this round: its figures are not clean`)
  }
}

interface LagResult {
  callRate: number
  changesPerCall: number
  changes: number
  changeRate: number
  lag: number[]
  lagFromAt: number[]
  stream: StreamReport
  window: Window
  othersCpuMs: number
  /** After the stream: what is wrong with the replicas' agreement (sessions held, log position), if anything. */
  disagreements: string[]
  /** Commit batches of A timed (the lag's p99 is over changes, which come in batches). */
  commits: number
}

/** Calls offered to A only, in an open loop; every change timed from A's COMMIT to B's applier. */
async function lagPhase(bench: Bench): Promise<LagResult> {
  await ensureB(bench, 'two')
  await bench.callers[0].close()
  await bench.callers[0].open({ address: bench.a.exhookAddress, version: 'v2', channels: Math.max(1, Math.floor(CHANNELS / 2)), transport: 'http2' })
  const live = [bench.a, bench.b]

  // the lag phase's clients are registered devices, as every client is behind the hub's
  // authentication: a connect or disconnect then also changes its device's connectinfo
  const clientsOf = (calls: number) => Math.ceil((calls / 2) * 1.1) + 100
  await bench.a.createDevices('calibrate', clientsOf((CALIBRATION_RATE * CALIBRATION_MS) / 1000))

  // calibration: how many log entries one call makes, at a rate well within reach
  await caughtUp(live)
  const c0 = await bench.a.stats()
  await bench.callers[0].streamStart({ prefix: 'calibrate', rate: CALIBRATION_RATE })
  await new Promise((resolve) => setTimeout(resolve, CALIBRATION_MS))
  const calibration = await bench.callers[0].streamStop()
  const c1 = (await caughtUp(live))[0]!
  const changesPerCall = (c1.applied - c0.applied) / Math.max(1, calibration.calls)
  const callRate = Math.max(1, Math.round(CHANGE_RATE / Math.max(0.01, changesPerCall)))
  line(
    `  calibration: ${fmt(calibration.calls)} calls at ${fmt(CALIBRATION_RATE)}/s made ${fmt(c1.applied - c0.applied)} log entries = ${fmt(changesPerCall, 2)} per call;` +
      ` offering ${fmt(callRate)} calls/s for ~${fmt(CHANGE_RATE)} changes/s`
  )

  await bench.a.createDevices('lag', clientsOf(callRate * LAG_SECONDS))
  await caughtUp(live)
  for (const r of live) await r.applies()
  const before = await reading(live, bench.admin, bench.database)
  await bench.callers[0].streamStart({ prefix: 'lag', rate: callRate })
  await new Promise((resolve) => setTimeout(resolve, LAG_SECONDS * 1000))
  const stream = await bench.callers[0].streamStop()
  const settled = await caughtUp(live)
  // calls refused at their deadline (A overloaded) may leave sessions; both replicas must hold the same
  const disagreements: string[] = []
  if (settled[0]!.sessions !== settled[1]!.sessions || settled[0]!.entities !== settled[1]!.entities) {
    disagreements.push(`A holds ${fmt(settled[0]!.sessions)} sessions and ${fmt(settled[0]!.entities)} entities, B ${fmt(settled[1]!.sessions)} and ${fmt(settled[1]!.entities)}`)
  }
  for (const [i, st] of settled.entries()) if (st.followError) disagreements.push(`${live[i]!.name} cannot read the log: ${st.followError}`)
  const after = await reading(live, bench.admin, bench.database)
  const window = windowOf(before, after, live.map((r) => r.name))
  const [ra, rb] = [await bench.a.applies(), await bench.b.applies()]
  const { fromCommit, fromAt } = lagsOf(ra, rb, -bench.offsetBA)
  let changes = 0
  let first = Number.POSITIVE_INFINITY
  let last = Number.NEGATIVE_INFINITY
  for (let i = 0; i < ra.own.length; i += 4) {
    changes += ra.own[i + 1]! - ra.own[i]! + 1
    first = Math.min(first, ra.own[i + 2]!)
    last = Math.max(last, ra.own[i + 2]!)
  }
  const ours = sum(window.replicas.map((w) => w.cpuMs)) + stream.cpuMs + window.pgCpuMs + window.parentCpuMs
  return {
    callRate,
    changesPerCall,
    changes,
    changeRate: (changes / Math.max(1, last - first)) * 1000,
    lag: fromCommit,
    lagFromAt: fromAt,
    stream,
    window,
    othersCpuMs: Math.max(0, window.machineBusyMs - ours),
    disagreements,
    commits: ra.own.length / 4
  }
}

/** Statements per batch by kind, and outside batches, for the replicas' windows of a setup. */
function statementBreakdown(windows: ReplicaWindow[]): { perBatch: string; outside: string; s: ReturnType<typeof statementsPerBatch> } {
  const s = statementsPerBatch(windows)
  const add = (into: Map<string, number>, from: Record<string, number>) => {
    for (const [k, v] of Object.entries(from)) into.set(k, (into.get(k) ?? 0) + v)
  }
  const inTx = new Map<string, number>()
  const auto = new Map<string, number>()
  for (const w of windows) {
    add(inTx, w.statements.inTransaction)
    add(auto, w.statements.autocommit)
  }
  const per = (m: Map<string, number>) =>
    [...m]
      .sort((x, y) => y[1] - x[1])
      .map(([k, v]) => `${k.replace(/^iothub_/, '')} ${fmt(v / Math.max(1, s.batches), 2)}`)
      .join(', ')
  return { perBatch: per(inTx), outside: auto.size === 0 ? 'none' : per(auto), s }
}

/** xact_commit and xact_rollback of `database`, once every backend of it is gone and the counts stand still. */
async function finalTransactions(admin: pg.Client, database: string): Promise<{ commits: number; rollbacks: number; sessions: number; settled: boolean }> {
  let last = { commits: -1, rollbacks: -1, sessions: -1 }
  let steady = 0
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    const { rows } = await admin.query<{ commits: string; rollbacks: string; sessions: string; backends: string }>(
      `SELECT xact_commit AS commits, xact_rollback AS rollbacks, sessions, (SELECT count(*) FROM pg_stat_activity WHERE datname = $1) AS backends
         FROM pg_stat_database WHERE datname = $1`,
      [database]
    )
    const now = { commits: Number(rows[0]?.commits ?? 0), rollbacks: Number(rows[0]?.rollbacks ?? 0), sessions: Number(rows[0]?.sessions ?? 0) }
    const same = now.commits === last.commits && now.rollbacks === last.rollbacks && now.sessions === last.sessions && Number(rows[0]?.backends ?? 0) === 0
    steady = same ? steady + 1 : 0
    last = now
    if (steady >= 3) return { ...now, settled: true }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  return { ...last, settled: false }
}

async function main(): Promise<void> {
  const database = `iothub_bench_replicas_${process.pid}`
  const url = new URL(SERVER)
  url.pathname = `/${database}`
  const databaseUrl = url.toString()
  const admin = new pg.Client({ connectionString: SERVER })
  await admin.connect()
  const settings = Object.fromEntries(
    (
      await admin.query<{ name: string; setting: string }>(
        `SELECT name, setting FROM pg_settings WHERE name IN ('server_version', 'synchronous_commit', 'fsync', 'shared_preload_libraries', 'autovacuum')`
      )
    ).rows.map((r) => [r.name, r.setting])
  )
  const statStatements = (settings.shared_preload_libraries ?? '').includes('pg_stat_statements')
  await admin.query(`CREATE DATABASE ${database}`)

  line(
    `replicas: EMQX-mode hubs on one PostgreSQL ${settings.server_version} (${url.host}, database ${database}; synchronous_commit ${settings.synchronous_commit}, fsync ${settings.fsync})`
  )
  if (settings.autovacuum !== 'on') {
    // every client's rows are inserted and deleted: their dead rows stay, and each round's statements walk more of them
    line(`  autovacuum is off on this server: the hub's tables keep their dead rows through the run, so later rounds and the lag phase cost PostgreSQL more`)
  }
  line(`  each replica a child process of its own (its own event loop, as deployed); callers in two more; PostgreSQL, the replicas, the callers and this process share ${availableParallelism()} cpus`)
  line(`  per client: client.connected → session.subscribed ({id}/v1/devices/me/attributes, QoS 1) → client.disconnected (normal), ExHook v2`)
  line(
    `  ${fmt(CLIENTS)} clients per round, ${fmt(CONCURRENCY)} calls in flight over ${CHANNELS} gRPC connections, half from each caller process; ${fmt(WARMUP)}-client warm-up of each setup, then ${ROUNDS} round(s) of each, alternating`
  )
  line(`  one replica: both callers → A, B not running;  two replicas: callers 1 → A, callers 2 → B (EMQX node n1's channel on A, n2's on B: a client's hooks all reach one replica)`)

  const dropDatabase = async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
    await admin.end()
  }
  const { EMQX_API_KEY, EMQX_API_SECRET, ExhookFleet } = await import('./lib/exhook-fleet.js')
  const standin = await startEmqxRestStandin({ version: 5, apiKey: EMQX_API_KEY, apiSecret: EMQX_API_SECRET }).catch(async (error: unknown) => {
    await dropDatabase()
    throw error
  })
  const emqx = { url: standin.url, key: EMQX_API_KEY, secret: EMQX_API_SECRET }
  /** Set once every replica has stopped cleanly: the database is then read before it is dropped. */
  let finished = false
  const started: { stop(): Promise<void> }[] = []
  const rounds: RoundResult[] = []
  let warmFaults = 0
  let lag: LagResult
  let counted = { commits: 0, rollbacks: 0, autocommit: 0, connections: 0, notifications: 0 }
  try {
    const a = await ReplicaProcess.start('A')
    started.push(a)
    const b = await ReplicaProcess.start('B')
    started.push(b)
    const callers: [ExhookFleet, ExhookFleet] = [await ExhookFleet.start(), await ExhookFleet.start()]
    started.push(...callers)
    const msA = await a.startHub(databaseUrl, emqx)
    const msB = await b.startHub(databaseUrl, emqx)
    const [oa, ob] = [await a.clockOffset(), await b.clockOffset()]
    const bench: Bench = { admin, database, databaseUrl, emqx, a, b, callers, offsetBA: oa.offset - ob.offset }
    line(
      `  replicas ready (A in ${fmt(msA)} ms, B in ${fmt(msB)} ms); clocks: B − A ≈ ${fmt(bench.offsetBA, 3)} ms (IPC round trips ${fmt(oa.rtt, 2)} / ${fmt(ob.rtt, 2)} ms), lag readings corrected by it`
    )

    line('')
    line('1. throughput: the same load on one replica and on two')
    for (const setup of ['two', 'one'] as const) {
      const r = await throughputRound(bench, setup, 'warm-up', WARMUP)
      printRound(r)
      if (r.faults.length > 0) warmFaults++
    }
    for (let i = 0; i < ROUNDS; i++) {
      // alternate which goes first, so a drift of the machine's load does not favour one
      const order: Setup[] = i % 2 === 0 ? ['one', 'two'] : ['two', 'one']
      for (const setup of order) {
        const r = await throughputRound(bench, setup, `round ${i + 1}`, CLIENTS)
        printRound(r)
        rounds.push(r)
      }
    }

    line('')
    line(`2. log-follow lag: ~${fmt(CHANGE_RATE)} changes/s committed through A (callers 1 → A, open loop, client.connected/client.disconnected pairs), B only following`)
    lag = await lagPhase(bench)

    for (const r of [a, b]) if (r.running) await r.stopHub()
    const counts = [await a.stats(), await b.stats()].map((s) => s.statements)
    counted = {
      commits: sum(counts.map((c) => c.commits)),
      rollbacks: sum(counts.map((c) => c.rollbacks)),
      autocommit: sum(counts.map((c) => sum(Object.values(c.autocommit)))),
      connections: sum(counts.map((c) => c.connections)),
      notifications: sum(counts.map((c) => c.notifications))
    }
    finished = true
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => undefined)
    await standin.close()
    if (!finished) await dropDatabase()
  }
  const xacts = await finalTransactions(admin, database).finally(dropDatabase)

  // ── 2. lag, printed
  const l = percentiles(lag.lag)
  const la = percentiles(lag.lagFromAt)
  const s = lag.stream
  line(
    `  offered ${fmt(lag.callRate)} calls/s for ${LAG_SECONDS} s: ${fmt(s.calls)} calls, latency p50/p99 ${fmt(s.latency.p50, 1)}/${fmt(s.latency.p99, 1)} ms, callers' send lag p99 ${fmt(s.sendLag.p99, 1)} ms;` +
      (s.failed === 0
        ? ' every call answered OK'
        : ` ${fmt(s.failed)} not answered OK (${Object.entries(s.byCode).map(([c, k]) => `${c} ${fmt(k)}`).join(', ')}): more offered than A commits, so calls queued past their deadline`)
  )
  const sustained = lag.changeRate >= 0.9 * CHANGE_RATE
  line(
    `  A committed ${fmt(lag.changes)} changes = ${fmt(lag.changeRate)} changes/s (from its first commit to its last): ` +
      (sustained ? 'the offered rate was sustained' : `NOT the ${fmt(CHANGE_RATE)}/s offered — A could not keep up, so the lag below is at ${fmt(lag.changeRate)} changes/s`)
  )
  for (const w of lag.window.replicas) {
    line(
      `    ${w.name}: cpu ${fmt(w.cpuMs / (LAG_SECONDS * 1000), 2)}, loop ${fmt(w.elu * 100)}% busy, ${fmt(w.batches)} batches × ${fmt(w.batchItems / Math.max(1, w.batches), 1)} events;` +
        ` statements outside batches: ${fmt(sum(Object.values(w.statements.autocommit)))} (${Object.entries(w.statements.autocommit).map(([k, v]) => `${k.replace(/^iothub_/, '')} ${fmt(v)}`).join(', ')})`
    )
  }
  const lagComplete = lag.lag.length === lag.changes
  const lagAgrees = lagComplete && lag.disagreements.length === 0
  line(
    `  check: B applied ${fmt(lag.lag.length)} of the ${fmt(lag.changes)} changes A committed (in ${fmt(lag.commits)} commits); ` +
      (lag.disagreements.length === 0 ? 'A and B at one log position, holding the same sessions' : `MISMATCH: ${lag.disagreements.join('; ')}`)
  )
  line(
    `  lag, A's COMMIT answered → B's caches applied: p50 ${fmt(l.p50, 1)} ms, p99 ${fmt(l.p99, 1)} ms, max ${fmt(l.max, 1)} ms over ${fmt(lag.lag.length)} changes;  target p99 ≤ ${TARGET_LAG_P99_MS} ms: ${l.p99 <= TARGET_LAG_P99_MS ? 'met' : 'MISSED'}`
  )
  line(`  (from the entry's timestamp, taken before A sent its COMMIT: p50 ${fmt(la.p50, 1)} ms, p99 ${fmt(la.p99, 1)} ms — adds A's COMMIT itself)`)
  const lagOthers = lag.othersCpuMs / Math.max(1, lag.window.machineTotalMs)
  if (lagOthers > OTHERS_WARNING) {
    line(`  WARNING: processes outside this benchmark used ${fmt(lagOthers * 100)}% of the machine's cpu meanwhile: the lag is not clean`)
  }

  // ── 1. throughput, summarised
  const ones = rounds.filter((r) => r.setup === 'one')
  const twos = rounds.filter((r) => r.setup === 'two')
  const rateOne = median(ones.map((r) => r.rate))
  const rateTwo = median(twos.map((r) => r.rate))
  const ratio = rateTwo / rateOne
  const spread = (rs: RoundResult[]) => `${fmt(Math.min(...rs.map((r) => r.rate)))}–${fmt(Math.max(...rs.map((r) => r.rate)))}`
  const noisy = (rs: RoundResult[]) => rs.filter((r) => r.othersCpuMs / Math.max(1, r.window.machineTotalMs) > OTHERS_WARNING).length
  line('')
  line(`  throughput, medians over ${ROUNDS} round(s):`)
  for (const [setup, rs] of [['one', ones], ['two', twos]] as const) {
    const cpu = (pick: (r: RoundResult) => number) => fmt(median(rs.map((r) => pick(r) / r.wallMs)), 2)
    line(
      `    ${SETUP_NAME[setup].padEnd(12)}  ${fmt(median(rs.map((r) => r.rate))).padStart(6)} calls/s (rounds ${spread(rs)});` +
        ` cpus: replicas ${cpu((r) => sum(r.window.replicas.map((w) => w.cpuMs)))}, postgres ${cpu((r) => r.window.pgCpuMs)}, callers ${cpu((r) => r.callersCpuMs)}` +
        (noisy(rs) > 0 ? `  — ${noisy(rs)} of ${rs.length} round(s) ran beside other load` : '')
    )
  }
  line(`    two/one: ${fmt(ratio, 2)};  target ≥ ${fmt(TARGET_RATIO, 2)}: ${ratio >= TARGET_RATIO ? 'met' : 'MISSED'}`)
  const allCross = twos.flatMap((r) => [...(r.crossLag?.aToB ?? []), ...(r.crossLag?.bToA ?? [])])
  const cross = percentiles(allCross)
  line(`    log lag between the two saturated replicas (all timed rounds, both ways): p50 ${fmt(cross.p50, 1)} ms, p99 ${fmt(cross.p99, 1)} ms, max ${fmt(cross.max, 1)} ms`)

  // ── 3. statements
  line('')
  line(`3. PostgreSQL statements (counted in the replicas' processes; pg_stat_statements ${statStatements ? 'is loaded but not read here' : 'is not in shared_preload_libraries'})`)
  const perSetup = [
    ['one replica', ones.flatMap((r) => r.window.replicas)],
    ['two replicas', twos.flatMap((r) => r.window.replicas)],
    ['lag phase', lag.window.replicas]
  ] as const
  const perBatchOf = new Map<string, { perBatch: number; perEvent: number }>()
  for (const [name, windows] of perSetup) {
    const b = statementBreakdown([...windows])
    const perBatch = b.s.inBatch / Math.max(1, b.s.batches)
    const perEvent = (b.s.inBatch + b.s.outside) / Math.max(1, b.s.events)
    perBatchOf.set(name, { perBatch, perEvent })
    line(
      `  ${name.padEnd(12)}  ${fmt(b.s.batches)} batches, ${fmt(b.s.events)} events (${fmt(b.s.events / Math.max(1, b.s.batches), 1)} per batch): ` +
        `${fmt(perBatch, 2)} statements per batch, ${fmt(b.s.outside / Math.max(1, b.s.batches), 2)} more outside batches; ` +
        `${fmt(perEvent, 3)} statements and ${fmt((b.s.batches + b.s.outside) / Math.max(1, b.s.events), 3)} transactions per event`
    )
    line(`  ${''.padEnd(12)}  per batch: ${b.perBatch}`)
    line(
      `  ${''.padEnd(12)}  outside batches, per batch: ${b.outside};  notifications delivered to the replicas' listeners: ${fmt(b.s.notifications / Math.max(1, b.s.batches), 2)} per batch (a server-side transaction each)`
    )
  }
  // PostgreSQL also commits a transaction of its own as each connection starts
  // (pg_stat_database.sessions), and on a listening connection each time it hands over the
  // notifications queued for it (one per notification received, unless several wait together)
  const expected = counted.commits + counted.autocommit + counted.connections + counted.notifications
  line(
    `  cross-check over the whole run (start-up, warm-ups, stops included): PostgreSQL counted ${fmt(xacts.commits)} committed transactions in ${database}` +
      ` (${fmt(xacts.sessions)} sessions)${xacts.settled ? '' : ', its statistics not settled'}; the replicas sent ${fmt(counted.commits)} COMMITs + ${fmt(counted.autocommit)} statements outside a transaction,` +
      ` opened ${fmt(counted.connections)} connections and received ${fmt(counted.notifications)} notifications (a transaction each on the server) = ${fmt(expected)}:` +
      ` ${xacts.commits === expected ? 'exact' : `difference ${fmt(xacts.commits - expected)} (autovacuum's, or notifications delivered together)`}; rollbacks ${fmt(xacts.rollbacks)} there, ${fmt(counted.rollbacks)} sent`
  )

  const allRounds = [...ones, ...twos]
  const faulty = allRounds.filter((r) => r.faults.length > 0).length + warmFaults
  const exact = faulty === 0 && lagAgrees
  line('')
  line(
    `  check: ${exact ? `every call answered OK, every event applied once, replicas agree, no session left — in all ${allRounds.length + 2} throughput runs (warm-ups included); after the lag phase B had applied every change A committed` : `MISMATCH in ${faulty} of ${allRounds.length + 2} throughput runs, or in the lag phase (see above)`}`
  )

  const two = perBatchOf.get('two replicas')!
  const one = perBatchOf.get('one replica')!
  await report('replicas', [
    {
      bench: 'replicas',
      metric: `ExHook calls/s, two replicas, ${fmt(CONCURRENCY)} in flight`,
      value: fmt(rateTwo),
      baseline: `${fmt(rateOne)} (one replica)`,
      ratio: `${fmt(ratio, 2)}`,
      target: `≥ ${fmt(TARGET_RATIO, 2)}`,
      met: ratio >= TARGET_RATIO
    },
    {
      bench: 'replicas',
      metric: `log-follow lag p50 / p99, ${fmt(lag.changeRate)} changes/s${sustained ? '' : ` (${fmt(CHANGE_RATE)} offered)`}`,
      value: `${fmt(l.p50, 1)} / ${fmt(l.p99, 1)} ms`,
      baseline: '',
      ratio: '',
      target: `p99 ≤ ${TARGET_LAG_P99_MS} ms`,
      met: l.p99 <= TARGET_LAG_P99_MS
    },
    {
      bench: 'replicas',
      metric: 'PostgreSQL statements per batch / per event',
      value: `${fmt(two.perBatch, 1)} / ${fmt(two.perEvent, 2)}`,
      baseline: `${fmt(one.perBatch, 1)} / ${fmt(one.perEvent, 2)} (one replica)`,
      ratio: '',
      target: '(diagnosis)',
      met: null
    },
    {
      bench: 'replicas',
      metric: 'calls OK, events applied, replicas agree',
      value: exact ? 'exact' : 'MISMATCH',
      baseline: '',
      ratio: '',
      target: 'exact',
      met: exact
    }
  ])
}

if (process.argv.includes('--child') && process.send) replicaChild()
else runMain(main)
