/**
 * The WAL checkpointer thread. SQLite's automatic checkpoint runs inside the commit that
 * crosses its threshold: that commit, and every batch queued behind it, waits while the WAL is
 * copied into the database file and the file is fsynced. This thread, on a connection of its
 * own, checkpoints every `intervalMs`, so that most of that copying is done off the commit path.
 * PASSIVE: it never waits for the writer, and the writer never waits for it. It cannot restart
 * the WAL while the writer keeps appending: the writer's own automatic checkpoint, at a low
 * threshold, finishes what this one copied (see writer-worker.ts).
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { currentThreadId } from './thread-id.js'
import { yieldToMainThread } from './thread-priority.js'

export type CheckpointerHello = { thread: number | null }

export interface CheckpointOptions {
  path: string
  intervalMs: number
}

const options = workerData as CheckpointOptions
// its copying is background work: the main thread's sockets come first (thread-priority.ts)
yieldToMainThread()
const db = new Database(options.path)
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)')
  } catch {
    // busy or locked: the next interval tries again; the WAL only grows meanwhile
  }
}, options.intervalMs)

// said once, first: this thread's id, for its cpu (observability/thread-cpu.ts); any message back is the close
parentPort!.postMessage({ thread: currentThreadId() } satisfies CheckpointerHello)

parentPort!.once('message', () => {
  clearInterval(timer)
  db.close()
  parentPort!.close()
})
