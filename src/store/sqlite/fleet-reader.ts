/**
 * The main thread's end of the fleet reader thread (fleet-read-worker.ts): a table's rows as a
 * synchronous Iterable, as the Snapshot hands them to the caches, read on the other thread.
 *
 * The caches are filled by plain loops (`for (const s of snapshot.sessions) …`), so a chunk
 * not yet read is waited for by blocking this thread (Atomics.wait on the count of chunks
 * posted) and taken off its port at once (receiveMessageOnPort) — nothing else runs on this
 * thread while the hub starts anyway. The thread is started at the first iteration and stopped
 * once no iteration is left and this thread has turned back to its event loop, which in a start
 * is after the last table.
 */
import { MessageChannel, receiveMessageOnPort, type MessagePort, type Worker } from 'node:worker_threads'
import { CANCELLED, POSTED, TAKEN, type FleetReadOptions, type FleetReadRequest } from './fleet-read-protocol.js'
import { startWorker } from './start-worker.js'
import type { FleetTable } from './statements.js'

/** How long a chunk may take before the thread is taken for gone: reading one takes milliseconds. */
const STALL_MS = 60_000
const WAIT_SLICE_MS = 1000

export class FleetReader {
  private worker: Worker | undefined
  private reading = 0
  private failure: Error | undefined

  constructor(private readonly options: FleetReadOptions) {}

  /** The rows of `table`, each as FLEET_QUERIES makes it, parsed; read again from the first at every iteration. */
  rows<Row>(table: FleetTable): Iterable<Row> {
    return { [Symbol.iterator]: () => this.read<Row>(table) }
  }

  async close(): Promise<void> {
    const worker = this.worker
    this.worker = undefined
    if (worker) await worker.terminate()
  }

  private *read<Row>(table: FleetTable): Generator<Row> {
    const worker = this.started()
    const { port1, port2 } = new MessageChannel()
    const state = new Int32Array(new SharedArrayBuffer(3 * Int32Array.BYTES_PER_ELEMENT))
    worker.postMessage({ table, port: port2, state } satisfies FleetReadRequest, [port2])
    this.reading++
    let taken = 0
    let finished = false
    try {
      for (;;) {
        const chunk = this.next(table, port1, state)
        if (chunk === null) break
        // taken as soon as it is here: the thread reads the next while this one is decoded
        Atomics.store(state, TAKEN, ++taken)
        Atomics.notify(state, TAKEN)
        yield* JSON.parse(chunk) as Row[]
      }
      finished = true
    } finally {
      if (!finished) {
        Atomics.store(state, CANCELLED, 1)
        Atomics.notify(state, TAKEN)
      }
      port1.close()
      this.reading--
      this.stopWhenIdle()
    }
  }

  /** The next chunk, the JSON text of an array of rows (null after the last), waiting for it if need be. */
  private next(table: FleetTable, port: MessagePort, state: Int32Array): string | null {
    const since = Date.now()
    for (;;) {
      const posted = Atomics.load(state, POSTED)
      const received = receiveMessageOnPort(port)
      if (received !== undefined) {
        const message = received.message as string | null | { error: string }
        if (message !== null && typeof message !== 'string') throw new Error(`reading ${table} failed: ${message.error}`)
        return message
      }
      if (this.failure) throw new Error(`reading ${table} failed: the fleet reader thread failed: ${this.failure.message}`)
      if (Date.now() - since > STALL_MS) throw new Error(`reading ${table} failed: the fleet reader thread sent nothing for ${STALL_MS / 1000} s`)
      Atomics.wait(state, POSTED, posted, WAIT_SLICE_MS)
    }
  }

  private started(): Worker {
    if (this.worker) return this.worker
    const worker = startWorker('fleet-read', this.options)
    // never what keeps the process alive; an error it could not answer with is seen by next()
    // only once this thread is free again, so a read stalls into its deadline meanwhile
    worker.unref()
    worker.on('error', (error) => (this.failure = error))
    this.failure = undefined
    this.worker = worker
    return worker
  }

  private stopWhenIdle(): void {
    if (this.reading > 0) return
    setImmediate(() => {
      if (this.reading === 0) void this.close()
    }).unref()
  }
}
