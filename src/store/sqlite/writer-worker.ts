/**
 * The SQLite writer thread. better-sqlite3 is synchronous, so a transaction and its fsync
 * would stop the hub's event loop — every socket waits while the disk syncs. Here they run on
 * a thread of their own: the main thread keeps serving clients and filling the next batch
 * while this one commits.
 *
 * Protocol: `{ id, mutations, deadline }` (encoded, see statements.ts) in, `{ id }` or
 * `{ id, error }` out; `{ id, probe: true }` takes the write lock and lets it go; `{ close: true }`
 * closes the connection and ends the thread.
 *
 * `deadline` (epoch ms) is when the caller is refused: a batch found past it is not begun, and
 * one that got past it while its statements ran (a lock wait, a slow disk) is rolled back
 * rather than committed. Only the COMMIT itself (its fsync) can still end after the deadline.
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { prepareWrites, type EncodedMutation } from './statements.js'

export interface WriterOptions {
  path: string
  synchronous: 'full' | 'normal'
  busyTimeoutMs: number
}

export type WriterRequest = { id: number; mutations: EncodedMutation[]; deadline: number } | { id: number; probe: true } | { close: true }
export type WriterReply = { id: number; error?: string }

const options = workerData as WriterOptions
const db = new Database(options.path, { timeout: options.busyTimeoutMs })
db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`)
// The checkpointer thread checkpoints, off the commit path; this high threshold (~40 MB of WAL)
// only bounds the WAL should that thread ever stop.
db.pragma('wal_autocheckpoint = 10000')
const statements = prepareWrites(db)
const writeAll = db.transaction((mutations: EncodedMutation[], deadline: number) => {
  for (const [op, params] of mutations) statements[op].run(params)
  if (Date.now() >= deadline) throw new Error('its caller was refused at the deadline: rolled back')
})
const takeLock = db.prepare('BEGIN IMMEDIATE')
const letGo = db.prepare('ROLLBACK')

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
    } else {
      if (Date.now() >= request.deadline) throw new Error('its caller was refused at the deadline: not begun')
      writeAll(request.mutations, request.deadline)
    }
    parentPort!.postMessage({ id: request.id } satisfies WriterReply)
  } catch (error) {
    parentPort!.postMessage({ id: request.id, error: (error as Error).message } satisfies WriterReply)
  }
})
