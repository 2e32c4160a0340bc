/**
 * The fleet reader thread: reads the fleet's tables for the hub's start (fleet-reader.ts), so
 * that taking rows out of SQLite — with a million sessions, a third of what the start's main
 * thread did — runs beside the main thread, which builds its caches from one chunk of rows
 * while this thread reads the next.
 *
 * Protocol: `{ table, port, state }` in, one per iteration of a table. Its rows (FLEET_QUERIES:
 * a JSON text each) go to `port` as the JSON text of an array of CHUNK rows, then `null`, or
 * `{ error }` if the read failed. `state` counts the chunks posted and taken (see
 * fleet-read-protocol.ts): this thread posts at most AHEAD chunks more than the main thread has
 * taken, so a table is never held whole in a queue, and stops when the main thread gives up
 * the iteration. Each iteration reads on a connection of its own and waits without blocking
 * this thread, so iterations of several tables can be interleaved.
 */
import { parentPort, workerData } from 'node:worker_threads'
import Database from 'better-sqlite3'
import { AHEAD, CANCELLED, CHUNK, POSTED, TAKEN, type FleetReadOptions, type FleetReadRequest } from './fleet-read-protocol.js'
import { FLEET_QUERIES } from './statements.js'

const options = workerData as FleetReadOptions

async function read({ table, port, state }: FleetReadRequest): Promise<void> {
  let db: Database.Database | undefined
  try {
    db = new Database(options.path, { readonly: true, timeout: options.busyTimeoutMs })
    // a table read once from its first row to its last gains nothing from SQLite's page cache
    // (the system's serves it), and memory this thread's allocator takes stays with the process
    db.pragma('cache_size = -1024')
    const statement = db.prepare(FLEET_QUERIES[table]).pluck()
    let chunk: string[] = []
    let posted = 0
    for (const row of statement.iterate() as IterableIterator<string>) {
      chunk.push(row)
      if (chunk.length < CHUNK) continue
      port.postMessage(`[${chunk.join(',')}]`)
      chunk = []
      Atomics.store(state, POSTED, ++posted)
      Atomics.notify(state, POSTED)
      if (!(await roomFor(state, posted))) return
    }
    if (chunk.length > 0) port.postMessage(`[${chunk.join(',')}]`)
    port.postMessage(null)
  } catch (error) {
    port.postMessage({ error: (error as Error).message })
  } finally {
    db?.close()
    // the main thread may be waiting on the count: one more wakes it to the last message
    Atomics.add(state, POSTED, 1)
    Atomics.notify(state, POSTED)
    port.close()
  }
}

/** Waits until the main thread is fewer than AHEAD chunks behind; false once it has given up. */
async function roomFor(state: Int32Array, posted: number): Promise<boolean> {
  for (;;) {
    if (Atomics.load(state, CANCELLED) !== 0) return false
    const taken = Atomics.load(state, TAKEN)
    if (posted - taken < AHEAD) return true
    const wait = waitAsync(state, TAKEN, taken)
    if (wait.async) await wait.value
  }
}

/** Atomics.waitAsync (ES2024; Node 16+), which this project's ES2022 typings do not declare. */
const waitAsync = (Atomics as unknown as { waitAsync(array: Int32Array, index: number, value: number): { async: false } | { async: true; value: Promise<string> } })
  .waitAsync.bind(Atomics)

parentPort!.on('message', (request: FleetReadRequest) => void read(request))
