/**
 * The WAL checkpointer thread. SQLite's automatic checkpoint runs inside the commit that
 * crosses its threshold: that commit, and every batch queued behind it, waits while the WAL is
 * copied into the database file and the file is fsynced (seen as commits of 100 ms and more
 * under load). The writer connection has automatic checkpoints off; this thread, on a
 * connection of its own, checkpoints every `intervalMs` instead. PASSIVE: it never waits for
 * the writer, and the writer never waits for it.
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'

export interface CheckpointOptions {
  path: string
  intervalMs: number
}

const options = workerData as CheckpointOptions
const db = new Database(options.path)
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)')
  } catch {
    // busy or locked: the next interval tries again; the WAL only grows meanwhile
  }
}, options.intervalMs)

parentPort!.once('message', () => {
  clearInterval(timer)
  db.close()
  parentPort!.close()
})
