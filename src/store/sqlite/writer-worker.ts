/**
 * The SQLite writer thread. better-sqlite3 is synchronous, so a transaction and its fsync
 * would stop the hub's event loop — every socket waits while the disk syncs. Here they run on
 * a thread of their own: the main thread keeps serving clients and filling the next batch
 * while this one commits.
 *
 * Protocol: `{ id, mutations }` (encoded, see statements.ts) in, `{ id }` or `{ id, error }` out; `{ close: true }` closes
 * the connection and ends the thread.
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { prepareWrites, type EncodedMutation } from './statements.js'

export interface WriterOptions {
  path: string
  synchronous: 'full' | 'normal'
  busyTimeoutMs: number
}

export type WriterRequest = { id: number; mutations: EncodedMutation[] } | { close: true }
export type WriterReply = { id: number; error?: string }

const options = workerData as WriterOptions
const db = new Database(options.path, { timeout: options.busyTimeoutMs })
db.pragma(`synchronous = ${options.synchronous === 'normal' ? 'NORMAL' : 'FULL'}`)
// The checkpointer thread checkpoints, off the commit path; this high threshold (~40 MB of WAL)
// only bounds the WAL should that thread ever stop.
db.pragma('wal_autocheckpoint = 10000')
const statements = prepareWrites(db)
const writeAll = db.transaction((mutations: EncodedMutation[]) => {
  for (const [op, params] of mutations) statements[op].run(params)
})

parentPort!.on('message', (request: WriterRequest) => {
  if ('close' in request) {
    db.close()
    parentPort!.close()
    return
  }
  try {
    writeAll(request.mutations)
    parentPort!.postMessage({ id: request.id } satisfies WriterReply)
  } catch (error) {
    parentPort!.postMessage({ id: request.id, error: (error as Error).message } satisfies WriterReply)
  }
})
