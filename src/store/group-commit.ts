/**
 * Group commit: many callers' mutations share one transaction, and each caller's promise
 * resolves when that transaction is durable. Batches are pipelined: while the writer commits
 * one, the next fills up and is handed over too (up to `maxInFlight`), so the thread that
 * produces events and the one that writes them work at the same time, and throughput grows
 * with load instead of being capped by one fsync per event.
 *
 * The backend's `writeBatch` must be all-or-nothing and must commit batches in the order it
 * receives them; callers are settled in that order. When a shared batch fails, each caller's
 * mutations are retried alone, so a failure refuses exactly the callers it concerns — those
 * retries settle after any batches already handed over behind the failed one.
 * With `maxBatch: 1, maxInFlight: 1` this is one transaction per commit() call — the
 * per-event baseline the benchmark compares against.
 */
import { StoreError, type Mutation } from './store.js'

export interface BatchWriter {
  writeBatch(mutations: readonly Mutation[]): void | Promise<void>
}

export interface CommitObserver {
  committed(commits: number, mutations: number, seconds: number): void
  failed(error: Error): void
}

interface Pending {
  mutations: readonly Mutation[]
  resolve: () => void
  reject: (error: Error) => void
}

export interface GroupCommitOptions {
  /** Most commit() calls in one transaction. */
  maxBatch?: number
  /** Most batches handed to the writer and not yet committed. */
  maxInFlight?: number
  observer?: CommitObserver
}

export class GroupCommitter {
  private queue: Pending[] = []
  private inFlight = 0
  private scheduled = false
  private closed = false
  private idleWaiters: (() => void)[] = []
  private readonly maxBatch: number
  private readonly maxInFlight: number
  private readonly observer: CommitObserver | undefined
  lastError: Error | null = null

  constructor(
    private readonly writer: BatchWriter,
    options: GroupCommitOptions = {}
  ) {
    this.maxBatch = options.maxBatch ?? 256
    this.maxInFlight = options.maxInFlight ?? (options.maxBatch === 1 ? 1 : 4)
    this.observer = options.observer
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    if (this.closed) return Promise.reject(new StoreError('store is closed'))
    if (mutations.length === 0) return Promise.resolve()
    return new Promise((resolve, reject) => {
      this.queue.push({ mutations, resolve, reject })
      this.schedule()
    })
  }

  /** Resolves once every commit() made so far has settled. */
  async drain(): Promise<void> {
    if (this.idle()) return
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve))
  }

  async close(): Promise<void> {
    await this.drain()
    this.closed = true
  }

  private idle(): boolean {
    return this.inFlight === 0 && !this.scheduled && this.queue.length === 0
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight || this.queue.length === 0) return
    this.scheduled = true
    // setImmediate, not nextTick: let every event already in this loop turn join the batch.
    setImmediate(() => {
      this.scheduled = false
      this.flush()
    })
  }

  private flush(): void {
    const batch = this.queue.splice(0, this.maxBatch)
    if (batch.length === 0) return this.settleIdle()
    this.inFlight++
    void this.writeAndSettle(batch).finally(() => {
      this.inFlight--
      this.schedule()
      this.settleIdle()
    })
    this.schedule() // more queued than one batch holds: hand the next one over too
  }

  private async writeAndSettle(batch: Pending[]): Promise<void> {
    const error = await this.write(batch)
    // One caller's bad mutation must not fail the callers that merely shared its batch:
    // retry each alone, so only the ones that cannot be stored are refused.
    if (error && batch.length > 1) for (const p of batch) await this.write([p])
  }

  /** Writes the callers' mutations in one transaction and settles them; returns the failure. */
  private async write(batch: Pending[]): Promise<StoreError | null> {
    const mutations = batch.length === 1 ? batch[0]!.mutations : batch.flatMap((p) => p.mutations)
    const started = process.hrtime.bigint()
    try {
      await this.writer.writeBatch(mutations)
    } catch (cause) {
      const error = new StoreError(`store commit failed: ${(cause as Error).message}`, { cause })
      this.lastError = error
      this.observer?.failed(error)
      if (batch.length === 1) batch[0]!.reject(error)
      return error
    }
    this.lastError = null
    this.observer?.committed(batch.length, mutations.length, Number(process.hrtime.bigint() - started) / 1e9)
    for (const p of batch) p.resolve()
    return null
  }

  private settleIdle(): void {
    if (!this.idle()) return
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const w of waiters) w()
  }
}
