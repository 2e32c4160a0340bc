/**
 * What storing an event durably costs at least on this machine: the floor of bench `events`'
 * latency target, of an ExHook server that answers a call only once it is durable (bench
 * `exhook`), of a broker that stores each CONNECT, SUBSCRIBE and end before going on (bench
 * `connect-storm`, targets.ts) and of an API that stores each change before pushing it (bench
 * `fanout`) — each bench's durable floor. Each event is appended as one row (its JSON) to a SQLite table, by
 * group commit on a worker thread, with the hub's store settings (WAL, synchronous = FULL, the
 * writer's checkpoint every 1,000 pages) — and nothing else: no registry, no sessions or topics
 * table, no change log, no decision. Batches are formed as the hub's are: whatever is queued when
 * the event loop turns, up to 256 events, at most 4 batches handed over at once.
 */
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import type { LifecycleEvent } from '../../src/domain/lifecycle-event.js'
import type { ApplyResult } from '../../src/registry/registry.js'
import { DEFAULT_MAX_BATCH as MAX_BATCH, DEFAULT_MAX_IN_FLIGHT as MAX_IN_FLIGHT } from '../../src/store/group-commit.js'
import type { FloorHello, FloorReply, FloorRequest } from './durable-floor-worker.js'

const APPLIED: ApplyResult = { applied: true }

interface Queued {
  row: string
  resolve: (result: ApplyResult) => void
}

export class DurableFloor {
  private readonly worker: Worker
  private queue: Queued[] = []
  private readonly batches = new Map<number, Queued[]>()
  private nextId = 1
  private scheduled = false
  /** Its writer thread's id, once the thread has said it (for its cpu); null where it cannot be known. */
  threadId: number | null = null
  /** Resolves once the writer thread has opened its database and said its id. */
  readonly started: Promise<void>

  constructor(dataDir: string) {
    this.worker = new Worker(new URL('./durable-floor-worker.js', import.meta.url), { workerData: { path: join(dataDir, 'floor.db') } })
    let started!: () => void
    this.started = new Promise((resolve) => (started = resolve))
    this.worker.on('message', (reply: FloorReply | FloorHello) => {
      if ('thread' in reply) {
        this.threadId = reply.thread
        started()
        return
      }
      const batch = this.batches.get(reply.id)!
      this.batches.delete(reply.id)
      for (const q of batch) q.resolve(APPLIED)
      this.schedule()
    })
  }

  /** Resolves once `event` is durable. */
  apply(event: LifecycleEvent): Promise<ApplyResult> {
    return new Promise((resolve) => this.enqueue(JSON.stringify(event), resolve))
  }

  /** Resolves once `value` (any JSON-able record: an ExHook request) is durable. */
  append(value: object): Promise<void> {
    return new Promise((resolve) => this.enqueue(JSON.stringify(value), () => resolve()))
  }

  private enqueue(row: string, resolve: Queued['resolve']): void {
    this.queue.push({ row, resolve })
    this.schedule()
  }

  private schedule(): void {
    if (this.scheduled || this.queue.length === 0 || this.batches.size >= MAX_IN_FLIGHT) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      const batch = this.queue.splice(0, MAX_BATCH)
      const id = this.nextId++
      this.batches.set(id, batch)
      this.worker.postMessage({ id, rows: batch.map((q) => q.row) } satisfies FloorRequest)
      this.schedule()
    })
  }

  async close(): Promise<void> {
    await this.worker.terminate()
  }
}
