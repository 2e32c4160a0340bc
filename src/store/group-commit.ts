/**
 * Group commit: many callers' mutations share one transaction, and each caller's promise
 * resolves when that transaction is durable. While the writer commits one batch, the next fills
 * up, so the thread that produces events and the one that writes them work at the same time, and
 * throughput grows with load instead of being capped by one fsync per event.
 *
 * When batches are handed over: at once when the writer has none; while it commits one, only
 * once half a batch waits (then up to `maxInFlight` are pipelined, so under load the writer never
 * waits for this thread); and the moment the writer answers a batch, before that batch's callers
 * are settled (their continuations can take this thread milliseconds, which the writer would
 * spend idle). A caller that waits while the writer is busy loses nothing by it — the writer
 * commits in order, so a batch handed over early would only have waited behind the one in
 * flight — and every hand-over it is spared costs a message each way, a settling pass and, for
 * SQLite, a transaction and its fsync. Handing each loop turn's few callers over at once made a
 * 5,000-client connect storm cost the hub ~15% more cpu (docs/perf-journal.md, "fewer, fuller
 * batches for the writer").
 *
 * The backend's `writeBatch` must be all-or-nothing and must commit batches in the order it
 * receives them; callers are settled in that order. When a shared batch fails, each caller's
 * mutations are retried alone, so a failure refuses exactly the callers it concerns — those
 * retries settle after any batches already handed over behind the failed one.
 * With `maxBatch: 1, maxInFlight: 1` this is one transaction per commit() call — the
 * per-event baseline the benchmark compares against.
 *
 * Every commit() has a deadline (`timeoutMs` from the call). A caller refused at its deadline
 * must not find its mutations applied later behind its back: still queued, they are dropped;
 * handed to the writer, the batch is aborted (its signal), and the writer must then make sure
 * it cannot commit — by not starting it, or by abandoning its transaction. The one window no
 * writer can close without a two-phase commit: the backend committed, and its answer was lost
 * or came too late. Such a mutation is durable while its caller heard "no" (the hub's memory
 * does not show it; a restart reads it back and recovery treats it like any other stored state).
 *
 * Live callers go first. A caller marked `background` (the reconcile's fixes) is put into a batch
 * only where live callers leave room, and `liveSettled` lets background work wait, between its
 * chunks, for the live callers already queued to be answered: a hook call is EMQX waiting on us,
 * a reconcile is not (docs/ARCHITECTURE.md, "Restart and reconcile").
 */
import type { CommittedLog } from './change-log.js'
import type { Decision } from './decision.js'
import { StoreCommitUnknownError, StoreError, StoreTimeoutError, type Mutation } from './store.js'

export interface WriteControl {
  /** Aborted when the batch's first caller reaches its deadline: the batch must not commit after. */
  signal: AbortSignal
  /** Epoch ms of that deadline. */
  deadline: number
}

/** One caller's share of a batch: mutations decided already, or a decision the writer makes in the transaction. */
export type BatchItem = { mutations: readonly Mutation[] } | { decision: Decision<unknown> }

/** What a committed batch tells its callers. */
export interface BatchOutcome {
  /** By item, for decisions: what each decided, or the error that refused that caller alone (it stored nothing). */
  decisions?: ({ result: unknown } | { error: Error } | undefined)[]
  /** The change-log entries the batch appended. */
  log?: CommittedLog
}

export interface BatchWriter {
  writeBatch(items: readonly BatchItem[], control: WriteControl): void | BatchOutcome | Promise<void | BatchOutcome>
}

export interface CommitObserver {
  committed(commits: number, mutations: number, seconds: number): void
  failed(error: Error): void
}

interface Pending {
  item: BatchItem
  /** What a caller of commit() hears once its mutations are durable (CommitOptions.answer). */
  answer: unknown
  resolve: (result: unknown) => void
  reject: (error: Error) => void
  deadline: number
  /** A live caller's number in arrival order (see liveSettled); undefined for a background one. */
  live: number | undefined
}

/** How a caller is queued: `background` callers wait for room the live ones leave. */
export interface CommitOptions<R = void> {
  background?: boolean
  /**
   * What the commit resolves with once durable (else undefined): a caller that answers with a
   * value computed before it committed needs no continuation of its own — one promise, closure
   * and microtask less for every change in flight (see cache-decider.ts).
   */
  answer?: R
}

export interface GroupCommitOptions {
  /** Most commit() calls in one transaction. */
  maxBatch?: number
  /** Most batches handed to the writer and not yet committed. */
  maxInFlight?: number
  observer?: CommitObserver
  /** Longest a commit() may wait, in ms, before it is refused (and dropped). Default 5000. */
  timeoutMs?: number
  /**
   * Least time before its deadline a caller must have left for a batch to begin with it, ms
   * (default 0). A writer that commits only with time to spare (PostgreSQL's, see
   * postgres-store.ts) would begin a batch of callers with less, do its work, and abandon it at
   * COMMIT; under a backlog, when the oldest callers are the ones taken first, every batch would
   * be such a batch and nothing would commit. Refused at once instead, they leave the writer to
   * callers it can still commit.
   */
  commitMarginMs?: number
  /**
   * Told of what each committed batch appended to the change log, before its callers hear: so
   * a caller finds its change in the caches when it resumes (see log-follower.ts).
   */
  afterCommit?: (log: CommittedLog) => Promise<void>
}

const BACKGROUND: CommitOptions = { background: true }

/** Most commit() calls in one transaction, and most batches handed to the writer at once, unless told otherwise. */
export const DEFAULT_MAX_BATCH = 256
export const DEFAULT_MAX_IN_FLIGHT = 4

export class GroupCommitter {
  /** Callers not yet handed to the writer, in the order (and so the deadline order) they came. */
  private queue: Pending[] = []
  /**
   * One timer for the queue, at its first caller's deadline — not one per commit(), which at tens
   * of thousands of events a second costs the event path a third of its speed.
   */
  private expiryTimer: NodeJS.Timeout | undefined
  private inFlight = 0
  private scheduled = false
  private closed = false
  private idleWaiters: (() => void)[] = []
  /** Live callers not yet settled: their number → when they came (epoch ms). */
  private readonly liveUnsettled = new Map<number, number>()
  private liveCount = 0
  /**
   * No live caller numbered below it is unsettled: where the search for the oldest goes on from.
   * Not the Map's first entry: callers settle from its front, and a fresh iterator walks every
   * hole their deletions left (src/collections/stamp-queue.ts says why), once per settled caller
   * while a liveSettled waits.
   */
  private lowestLive = 1
  /** Waiters of liveSettled, each for the live callers numbered up to `upTo`, in that order. */
  private liveWaiters: { upTo: number; resolve: () => void }[] = []
  private readonly maxBatch: number
  private readonly maxInFlight: number
  private readonly observer: CommitObserver | undefined
  private readonly afterCommit: GroupCommitOptions['afterCommit']
  readonly timeoutMs: number
  private readonly commitMarginMs: number
  lastError: Error | null = null
  /** When lastError was set (epoch ms), so a probe begun later may clear it. */
  lastErrorAt = 0
  /** Failures recorded since the store opened; only grows (StoreHealth.failures). */
  failures = 0

  constructor(
    private readonly writer: BatchWriter,
    options: GroupCommitOptions = {}
  ) {
    this.maxBatch = options.maxBatch ?? DEFAULT_MAX_BATCH
    this.maxInFlight = options.maxInFlight ?? (options.maxBatch === 1 ? 1 : DEFAULT_MAX_IN_FLIGHT)
    this.observer = options.observer
    this.timeoutMs = options.timeoutMs ?? 5000
    this.commitMarginMs = options.commitMarginMs ?? 0
    this.afterCommit = options.afterCommit
  }

  commit<R = void>(mutations: readonly Mutation[], options?: CommitOptions<R>): Promise<R> {
    if (mutations.length === 0 && !this.closed) return Promise.resolve(options?.answer as R)
    return this.enqueue({ mutations }, options) as Promise<R>
  }

  /** Has the writer make `decision` inside the batch's transaction; resolves with its result once durable. */
  decide<R>(decision: Decision<R>): Promise<R> {
    return this.enqueue({ decision: decision }, decision.background ? BACKGROUND : undefined) as Promise<R>
  }

  /**
   * When the oldest live caller not yet answered has waited `behindMs` or more: resolves once every
   * live caller that came before this call has been answered (committed or refused) — later
   * callers do not hold it up, so it always resolves. Otherwise at once. Background work awaits it
   * between chunks: while the live path keeps up it goes on at full speed; once live callers
   * wait, it stops until they are stored.
   */
  liveSettled(behindMs = 0): Promise<void> {
    const upTo = this.liveCount
    const oldest = this.oldestLive()
    if (oldest === undefined || Date.now() - oldest[1] < behindMs) return Promise.resolve()
    return new Promise((resolve) => this.liveWaiters.push({ upTo, resolve }))
  }

  /** The oldest live caller not yet answered: its number and when it came. */
  private oldestLive(): [number, number] | undefined {
    // numbers only grow and settled ones only go, so the search never steps back: one step per
    // caller in all
    while (this.lowestLive <= this.liveCount) {
      const since = this.liveUnsettled.get(this.lowestLive)
      if (since !== undefined) return [this.lowestLive, since]
      this.lowestLive++
    }
    return undefined
  }

  private enqueue(item: BatchItem, options: CommitOptions<unknown> | undefined): Promise<unknown> {
    if (this.closed) return Promise.reject(new StoreError('store is closed'))
    const live = options?.background ? undefined : ++this.liveCount
    const now = Date.now()
    if (live !== undefined) this.liveUnsettled.set(live, now)
    // the caller's own resolve and reject, kept as they are: a queued caller stays alive until
    // its batch commits — thousands of them under load — so it holds no closures of its own
    let pending!: Pending
    const heard = new Promise((resolve, reject) => {
      pending = { item, answer: options?.answer, resolve, reject, deadline: now + this.timeoutMs, live }
    })
    this.queue.push(pending)
    this.armExpiry()
    this.schedule()
    return heard
  }

  /**
   * Settles a caller: it hears first, then whoever waited for it (liveSettled). A caller is settled
   * once in effect — expired callers leave the queue before they are refused, and a batch refused
   * whole at its deadline ignores its write's outcome — and settling again changes nothing.
   */
  private answer(p: Pending, result: unknown): void {
    p.resolve(result)
    this.settled(p)
  }

  private refuse(p: Pending, error: Error): void {
    p.reject(error)
    this.settled(p)
  }

  private settled(p: Pending): void {
    if (p.live === undefined) return
    this.liveUnsettled.delete(p.live)
    this.wakeLiveWaiters()
  }

  private wakeLiveWaiters(): void {
    if (this.liveWaiters.length === 0) return
    const oldest = this.oldestLive()?.[0] ?? Infinity
    let woken = 0
    while (woken < this.liveWaiters.length && this.liveWaiters[woken]!.upTo < oldest) this.liveWaiters[woken++]!.resolve()
    if (woken > 0) this.liveWaiters = this.liveWaiters.slice(woken)
  }

  /** Records a failure seen outside a commit (a probe that got no answer). */
  failed(error: Error): void {
    this.lastError = error
    this.lastErrorAt = Date.now()
    this.failures++
  }

  /** A probe begun at `since` got its answer: failures seen before it are over. */
  answered(since: number): void {
    if (this.lastError && this.lastErrorAt <= since) this.lastError = null
  }

  private armExpiry(): void {
    if (this.expiryTimer || this.queue.length === 0) return
    this.expiryTimer = setTimeout(() => this.expireQueued(), Math.max(0, this.queue[0]!.deadline - Date.now()))
    this.expiryTimer.unref()
  }

  /**
   * Callers still queued at their deadline are dropped and refused. (Those handed over already
   * are refused by their batch's own timer, in write.)
   */
  private expireQueued(): void {
    this.expiryTimer = undefined
    this.refuseQueued(Date.now())
    this.armExpiry()
  }

  /** Refuses, as timed out, the queued callers whose deadline is at or before `cutoff` (the queue's first ones). */
  private refuseQueued(cutoff: number): void {
    let expired = 0
    while (expired < this.queue.length && this.queue[expired]!.deadline <= cutoff) expired++
    if (expired === 0) return
    const error = new StoreTimeoutError(this.timeoutMs)
    this.failed(error)
    this.observer?.failed(error)
    for (const p of this.queue.splice(0, expired)) this.refuse(p, error)
    this.settleIdle()
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
    // the writer is busy: what waits joins the next batch, unless enough waits to pipeline one
    if (this.inFlight > 0 && this.queue.length < this.maxBatch / 2) return
    this.scheduled = true
    // setImmediate, not nextTick: let every event already in this loop turn join the batch.
    setImmediate(() => {
      this.scheduled = false
      this.flush()
    })
  }

  private flush(): void {
    this.refuseQueued(Date.now() + this.commitMarginMs)
    const batch = this.take()
    if (batch.length === 0) return this.settleIdle()
    this.inFlight++
    void this.writeAndSettle(batch).finally(() => {
      this.inFlight--
      this.schedule()
      this.settleIdle()
    })
    this.schedule() // more queued than one batch holds: hand the next one over too
  }

  /**
   * The next batch: the queue's first `maxBatch` callers — but when more wait than a batch holds,
   * live callers first and background ones in the room left. The queue keeps its order (that of
   * the deadlines), so the expiry timer still finds the first deadline at its head.
   */
  private take(): Pending[] {
    if (this.queue.length <= this.maxBatch) {
      const all = this.queue
      this.queue = []
      return all
    }
    let live = 0
    for (const p of this.queue) if (p.live !== undefined) live++
    let backgroundRoom = Math.max(0, this.maxBatch - live)
    const batch: Pending[] = []
    const rest: Pending[] = []
    for (const p of this.queue) {
      if (batch.length < this.maxBatch && (p.live !== undefined || backgroundRoom-- > 0)) batch.push(p)
      else rest.push(p)
    }
    this.queue = rest
    return batch
  }

  private async writeAndSettle(batch: Pending[]): Promise<void> {
    const error = await this.write(batch)
    // One caller's bad mutation must not fail the callers that merely shared its batch:
    // retry each alone, so only the ones that cannot be stored are refused. Not after a
    // timeout: the store is not answering, and every caller of the batch was refused.
    // Nor when the batch may have committed: run again, its decisions would see their own result.
    if (error && !(error instanceof StoreTimeoutError) && !(error instanceof StoreCommitUnknownError) && batch.length > 1) {
      for (const p of batch) await this.write([p])
    }
  }

  /** Writes the callers' mutations in one transaction and settles them; returns the failure. */
  private async write(batch: Pending[]): Promise<StoreError | null> {
    const items = batch.map((p) => p.item)
    const started = process.hrtime.bigint()
    const control = new AbortController()
    let deadline = Infinity
    for (const p of batch) deadline = Math.min(deadline, p.deadline)
    const aborted = new Promise<never>((_resolve, reject) => {
      control.signal.addEventListener('abort', () => reject(control.signal.reason as Error), { once: true })
    })
    aborted.catch(() => undefined) // raced below; unobserved when the write wins
    // the batch shares one transaction: at its first caller's deadline all of it is abandoned
    const expiry = setTimeout(() => control.abort(new StoreTimeoutError(this.timeoutMs)), Math.max(0, deadline - Date.now()))
    let outcome: BatchOutcome | undefined
    try {
      // the race: a writer that cannot stop at once (SQLite's thread inside a transaction)
      // must not hold its callers past their deadline
      outcome = (await Promise.race([this.writer.writeBatch(items, { signal: control.signal, deadline }), aborted])) ?? undefined
    } catch (cause) {
      const error =
        cause instanceof StoreTimeoutError || cause instanceof StoreCommitUnknownError
          ? cause
          : new StoreError(`store commit failed: ${(cause as Error).message}`, { cause })
      this.failed(error)
      this.observer?.failed(error)
      if (batch.length === 1 || error instanceof StoreTimeoutError || error instanceof StoreCommitUnknownError) for (const p of batch) this.refuse(p, error)
      return error
    } finally {
      clearTimeout(expiry)
    }
    // the writer is free: it gets what waits now, before this batch's callers are settled (here,
    // not in the try above, where a throw would count a committed batch as failed)
    if (!this.scheduled && this.inFlight === 1 && this.queue.length > 0) this.flush()
    this.lastError = null
    let mutationCount = 0
    for (const item of items) if ('mutations' in item) mutationCount += item.mutations.length
    this.observer?.committed(batch.length, mutationCount, Number(process.hrtime.bigint() - started) / 1e9)
    if (outcome?.log && this.afterCommit) await this.afterCommit(outcome.log)
    batch.forEach((p, i) => {
      const decided = outcome?.decisions?.[i]
      if (decided && 'error' in decided) this.refuse(p, decided.error)
      else this.answer(p, decided === undefined ? p.answer : decided.result)
    })
    return null
  }

  private settleIdle(): void {
    if (!this.idle()) return
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const w of waiters) w()
  }
}
