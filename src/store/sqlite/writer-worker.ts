/**
 * The SQLite writer thread. better-sqlite3 is synchronous, so a transaction and its fsync
 * would stop the hub's event loop — every socket waits while the disk syncs. Here they run on
 * a thread of their own: the main thread keeps serving clients and filling the next batch
 * while this one commits.
 *
 * Protocol: first, unasked, `{ thread }`: this thread's id (for its cpu, see
 * observability/thread-cpu.ts). Then `{ id, writes, log, entries, at, deadline }` (see statements.ts, log-rows.ts) in,
 * `{ id, previous }` or `{ id, error }` out; `{ id, probe: true }` takes the write lock and lets it go;
 * `{ id, prune }` deletes change-log entries (see ../coordination.ts) and answers `{ id, pruned }`; `{ close: true }`
 * closes the connection and ends the thread.
 *
 * `deadline` (epoch ms) is when the caller is refused: a batch found past it is not begun, and
 * one that got past it while its statements ran (a lock wait, a slow disk) is rolled back
 * rather than committed. Only the COMMIT itself (its fsync) can still end after the deadline.
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'
import type { LogPruning } from '../coordination.js'
import { prepareLogRows } from './log-rows.js'
import { currentThreadId } from './thread-id.js'
import { yieldToMainThread } from './thread-priority.js'
import { prepareWrites, type EncodedMutation } from './statements.js'

export interface WriterOptions {
  path: string
  synchronous: 'full' | 'normal'
  busyTimeoutMs: number
}

/**
 * `writes`: the batch's mutations in order, encoded; `log`: the change-log row of its `entries`
 * logged changes (log-rows.ts), numbered here from log_head, or null when it logs none; `at`
 * their commit time.
 */
export type WriterRequest =
  | { id: number; writes: EncodedMutation[]; log: string | null; entries: number; at: number; deadline: number }
  | { id: number; probe: true }
  | { id: number; prune: LogPruning }
  | { close: true }
/** `previous`: the log entry before the batch's first; `pruned`: how many entries a prune deleted. */
export type WriterReply = { id: number; error?: string; previous?: number; pruned?: number }
/** Said once, first: the thread's id, null where it cannot be known. */
export type WriterHello = { thread: number | null }

const options = workerData as WriterOptions
const db = new Database(options.path, { timeout: options.busyTimeoutMs })
db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`)
// The checkpointer thread copies the WAL into the database off the commit path, but under
// continuous writes its checkpoints never reach the WAL's end (this connection appends while they
// run), and only a checkpoint that does lets the next commit start the WAL again from its
// beginning. So this connection still checkpoints, SQLite's way, once the WAL holds 1,000 pages
// (~4 MB): what the checkpointer has copied already is not copied again, and the WAL restarts.
// At 10,000 pages (~40 MB) the commit that crossed it waited ~30 ms, several times a second at
// 50,000 events/s — the events latency tail (docs/perf-journal.md, "SQLite's checkpoints").
db.pragma('wal_autocheckpoint = 1000')
const statements = prepareWrites(db)
const logHead = db.prepare('SELECT seq FROM log_head').pluck()
const moveLogHead = db.prepare('UPDATE log_head SET seq = ?')
const logRows = prepareLogRows(db)
const writeAll = db.transaction((writes: EncodedMutation[], log: string | null, entries: number, at: number, deadline: number): number => {
  for (const [op, params] of writes) statements[op].run(params)
  const previous = logHead.get() as number
  if (log !== null) {
    logRows.append(previous + entries, at, entries, log)
    moveLogHead.run(previous + entries)
  }
  if (Date.now() >= deadline) throw new Error('its caller was refused at the deadline: rolled back')
  return previous
})
// entry by entry, in one transaction: the row it stops inside is rewritten (log-rows.ts)
const pruneLog = db.transaction((pruning: LogPruning): number => logRows.prune(pruning))
const takeLock = db.prepare('BEGIN IMMEDIATE')
const letGo = db.prepare('ROLLBACK')

// woken for each batch, it would otherwise take the cpu of the main thread that woke it (thread-priority.ts)
yieldToMainThread()
parentPort!.postMessage({ thread: currentThreadId() } satisfies WriterHello)

parentPort!.on('message', (request: WriterRequest) => {
  if ('close' in request) {
    db.close()
    parentPort!.close()
    return
  }
  try {
    if ('probe' in request) {
      takeLock.run()
      letGo.run()
      parentPort!.postMessage({ id: request.id } satisfies WriterReply)
    } else if ('prune' in request) {
      parentPort!.postMessage({ id: request.id, pruned: pruneLog(request.prune) } satisfies WriterReply)
    } else {
      if (Date.now() >= request.deadline) throw new Error('its caller was refused at the deadline: not begun')
      const previous = writeAll(request.writes, request.log, request.entries, request.at, request.deadline)
      parentPort!.postMessage({ id: request.id, previous } satisfies WriterReply)
    }
  } catch (error) {
    parentPort!.postMessage({ id: request.id, error: (error as Error).message } satisfies WriterReply)
  }
})
