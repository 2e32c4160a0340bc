/** The writer thread of bench/lib/durable-floor.ts: appends each batch's rows in one transaction. */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { currentThreadId } from '../../src/store/sqlite/thread-id.js'
import { yieldToMainThread } from '../../src/store/sqlite/thread-priority.js'

export interface FloorRequest {
  id: number
  rows: string[]
}
export interface FloorReply {
  id: number
}
/** Said once, first: this thread's id, for its cpu (bench/lib/process-cpu.ts). */
export interface FloorHello {
  thread: number | null
}

const db = new Database((workerData as { path: string }).path)
db.pragma('journal_mode = WAL')
db.pragma('synchronous = FULL')
db.pragma('wal_autocheckpoint = 1000') // as the hub's writer (src/store/sqlite/writer-worker.ts)
db.exec('CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event TEXT NOT NULL)')
const append = db.prepare('INSERT INTO events (event) VALUES (?)')
const appendAll = db.transaction((rows: string[]) => {
  for (const row of rows) append.run(row)
})

// as the hub's writer does: a floor has every advantage the hub's store has
yieldToMainThread()
parentPort!.postMessage({ thread: currentThreadId() } satisfies FloorHello)

parentPort!.on('message', (request: FloorRequest) => {
  appendAll(request.rows)
  parentPort!.postMessage({ id: request.id } satisfies FloorReply)
})
