/**
 * Keeps a replica's caches in step with the change log: hands every entry after the replica's
 * starting position to one applier, once each, strictly in log order — whether the entry was
 * committed here (handed over straight from the commit, no read) or by another replica (read
 * from the store when a notification or a gap says there is more). Caches that change only
 * through it can never go back in time, and a lost notification or a restart never leaves a
 * hole: the follower reads on from the last entry it applied.
 */
import type { CommittedLog, LogEntry, LogReader } from './change-log.js'

/** Where entries were committed: by this process (`here`) or by another replica (`elsewhere`). */
export type LogOrigin = 'here' | 'elsewhere'

export type LogApplier = (entries: readonly LogEntry[], origin: LogOrigin) => void

/** Entries read from the store at once. */
const READ_BATCH = 2000
/** Wait before reading again after a failed read, ms. */
const RETRY_MS = 1000

export class LogFollower {
  private position = 0
  private applier: LogApplier | undefined
  private waiters: { seq: number; resolve: () => void }[] = []
  private reading: Promise<void> | null = null
  private readAgain = false
  private retryTimer: NodeJS.Timeout | undefined
  private stopped = false
  /** The newest entry known to exist (from a notification or a commit), and since when we are behind it. */
  private knownHead = 0
  private behindSince: number | null = null
  /** Batches committed here that wait for others' entries before them: applied as `here` when read. */
  private ownWaiting: { first: number; last: number }[] = []
  lastError: Error | null = null

  constructor(
    private readonly reader: LogReader,
    /** This process's run; entries naming another were committed elsewhere. */
    private readonly self?: string
  ) {}

  /** Follows the log from `position` (the snapshot's): every later entry goes to `applier`, in order. */
  start(position: number, applier: LogApplier): void {
    this.position = position
    this.knownHead = Math.max(this.knownHead, position)
    this.applier = applier
    this.wake()
  }

  get following(): boolean {
    return this.applier !== undefined
  }

  /** The last entry applied. */
  get applied(): number {
    return this.position
  }

  /** How long the oldest entry known and not yet applied has waited, in seconds; 0 when current. */
  lagSeconds(now = Date.now()): number {
    return this.behindSince === null ? 0 : (now - this.behindSince) / 1000
  }

  /**
   * A batch committed here: applied at once when it is the next in order; otherwise the entries
   * before it (other replicas') are read first. Resolves when it has been applied.
   */
  committed(log: CommittedLog): Promise<void> {
    if (!this.applier || this.stopped || log.entries.length === 0) return Promise.resolve()
    const last = log.previous + log.entries.length
    this.heard(last)
    if (last <= this.position) return Promise.resolve()
    if (log.previous === this.position) {
      this.apply(log.entries, 'here')
      return Promise.resolve()
    }
    this.ownWaiting.push({ first: log.previous + 1, last })
    this.wake()
    return this.reached(last)
  }

  /** There is news in the log (a notification, up to `head` if it says): read on. */
  wake(head?: number): void {
    if (head !== undefined) {
      this.heard(head)
      // our own commit's notification, or one we have read past: nothing new
      if (head <= this.position) return
    }
    if (!this.applier || this.stopped) return
    if (this.reading) {
      this.readAgain = true
      return
    }
    this.reading = this.readOn().finally(() => (this.reading = null))
  }

  /** Resolves once every entry up to `seq` has been applied. */
  reached(seq: number): Promise<void> {
    if (seq <= this.position) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push({ seq, resolve }))
  }

  /**
   * Whether every entry up to `seq` (a log head read from the store) is applied within
   * `timeoutMs`: the follower reads on up to it at once, whether or not a notification came.
   */
  caughtUp(seq: number, timeoutMs: number): Promise<boolean> {
    if (seq <= this.position) return Promise.resolve(true)
    this.wake(seq)
    return new Promise((resolve) => {
      const waiter = {
        seq,
        resolve: () => {
          clearTimeout(timer)
          resolve(true)
        }
      }
      // a waiter given up on goes, so a follower that stays behind does not gather them
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter)
        resolve(false)
      }, timeoutMs)
      this.waiters.push(waiter)
    })
  }

  stop(): void {
    this.stopped = true
    clearTimeout(this.retryTimer)
  }

  private async readOn(): Promise<void> {
    try {
      do {
        this.readAgain = false
        for (;;) {
          const entries = await this.reader.readLog(this.position, READ_BATCH)
          // a commit of ours may have been applied while this read was on its way
          const fresh = entries.filter((e) => e.seq > this.position)
          if (fresh.length > 0 && fresh[0]!.seq !== this.position + 1) {
            // pruned past us (we were not heard of for too long): what is missing cannot be read
            // back, so the caches stay as they are and readiness says why
            this.stopped = true
            throw new Error(
              `the change log no longer holds entries ${this.position + 1}–${fresh[0]!.seq - 1} this replica has not applied: restart it to load the store afresh`
            )
          }
          if (fresh.length > 0) this.applyRead(fresh)
          if (entries.length < READ_BATCH) break
        }
      } while (this.readAgain && !this.stopped)
      this.lastError = null
    } catch (error) {
      this.lastError = error as Error
      if (!this.stopped && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined
          this.wake()
        }, RETRY_MS)
        this.retryTimer.unref()
      }
    }
  }

  private heard(head: number): void {
    if (head <= this.knownHead) return
    this.knownHead = head
    if (head > this.position) this.behindSince ??= Date.now()
  }

  /** Entries read from the store: each run of them told where it was committed. */
  private applyRead(entries: readonly LogEntry[]): void {
    let start = 0
    for (let i = 1; i <= entries.length; i++) {
      if (i < entries.length && this.originOf(entries[i]!) === this.originOf(entries[start]!)) continue
      this.apply(entries.slice(start, i), this.originOf(entries[start]!))
      start = i
    }
    this.ownWaiting = this.ownWaiting.filter((r) => r.last > this.position)
  }

  /**
   * Where an entry read back was committed: its own record says, where the store keeps one
   * (several writers); else it is one of ours that waited for a gap, or another's.
   */
  private originOf(entry: LogEntry): LogOrigin {
    if (entry.replica !== undefined && this.self !== undefined) return entry.replica === this.self ? 'here' : 'elsewhere'
    return this.ownWaiting.some((r) => entry.seq >= r.first && entry.seq <= r.last) ? 'here' : 'elsewhere'
  }

  private apply(entries: readonly LogEntry[], origin: LogOrigin): void {
    this.applier!(entries, origin)
    this.position = entries[entries.length - 1]!.seq
    if (this.position > this.knownHead) this.knownHead = this.position
    if (this.position >= this.knownHead) this.behindSince = null
    if (this.waiters.length === 0) return
    const still: typeof this.waiters = []
    for (const w of this.waiters) {
      if (w.seq <= this.position) w.resolve()
      else still.push(w)
    }
    this.waiters = still
  }
}
