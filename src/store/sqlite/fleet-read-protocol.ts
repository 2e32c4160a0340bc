/** What the fleet reader thread (fleet-read-worker.ts) and its main-thread end (fleet-reader.ts) agree on. */
import type { MessagePort } from 'node:worker_threads'
import type { FleetTable } from './statements.js'

export interface FleetReadOptions {
  path: string
  busyTimeoutMs: number
}

/** One iteration of a table; `port` is transferred with it. */
export interface FleetReadRequest {
  table: FleetTable
  port: MessagePort
  state: Int32Array
}

/** Indexes into a request's `state`: chunks posted (the thread's count), chunks taken (the main thread's), and 1 once the main thread gave up. */
export const POSTED = 0
export const TAKEN = 1
export const CANCELLED = 2

/** Rows per message: large enough that a message's cost is spread thin, small enough to pipeline. */
export const CHUNK = 2048
/** Chunks posted ahead of the main thread at most. */
export const AHEAD = 8
