/**
 * A lease on work that one replica at a time runs (the reconcile with EMQX, the expiry sweep,
 * pruning the change log). `hold()` takes it when it is free or its holder stopped renewing, and
 * renews it while this replica holds it — also while the work runs, so a long reconcile does not
 * lose it halfway. A holder that dies stops renewing, and another replica takes the lease once it
 * has expired: at most `ttlMs` without anyone doing the work.
 */
import type { Coordination, LeaseState } from '../store/coordination.js'

export class Lease {
  private state: LeaseState | null = null
  private renewTimer: NodeJS.Timeout | undefined
  private stopped = false
  /** The take or renewal on its way: one at a time, and release() waits for it. */
  private asking: Promise<boolean> | null = null

  constructor(
    private readonly coordination: Coordination,
    readonly name: string,
    /** This replica's run (replica-keeper.ts, `instance`). */
    private readonly holder: string,
    readonly ttlMs: number
  ) {}

  /**
   * Takes or renews the lease; true while this replica holds it. Rejects when the store does not
   * answer. `now` is for tests; otherwise the store's own clock decides expiry (PostgreSQL), so
   * replicas whose clocks differ still agree who holds it.
   */
  hold(now?: number): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false)
    this.asking ??= this.ask(now).finally(() => (this.asking = null))
    return this.asking
  }

  private async ask(now: number | undefined): Promise<boolean> {
    const state = await this.coordination.lease(this.name, this.holder, this.ttlMs, now)
    if (this.stopped) return false // released meanwhile: release() gives it back after this
    this.state = state
    // the store hands back our name only when it has just given or renewed it to us
    const held = state.holder === this.holder
    if (held) this.keepRenewing()
    else this.stopRenewing()
    return held
  }

  /** The lease as last seen. */
  get seen(): LeaseState | null {
    return this.state
  }

  /** Whether the lease was held here when last seen. */
  get held(): boolean {
    return this.state !== null && this.state.holder === this.holder && this.state.expiresAt > Date.now()
  }

  /** Whether someone alive holds the lease and has finished a run of its work begun at or after `since`. */
  servedSince(since: number): boolean {
    return this.state !== null && this.state.expiresAt > Date.now() && this.state.doneAt !== null && this.state.doneAt >= since
  }

  /** The holder finished a run of the work begun at `at`, which `note` tells of. */
  async done(at = Date.now(), note: unknown = null): Promise<void> {
    await this.coordination.leaseDone(this.name, this.holder, at, note)
    if (this.state && this.held) this.state = { ...this.state, doneAt: at, note }
  }

  /** Asks the holder, whoever it is, to run the work soon, saying why. */
  async request(reason: string, at = Date.now()): Promise<void> {
    await this.coordination.leaseRequest(this.name, at, reason)
  }

  /** Gives the lease up (this replica stops), so another takes it without waiting for it to expire. */
  async release(): Promise<void> {
    this.stopped = true
    this.stopRenewing()
    await this.asking?.catch(() => undefined)
    // whatever the last renewal did, the store gives the lease up if it is ours
    await this.coordination.release(this.name, this.holder).catch(() => undefined)
  }

  private keepRenewing(): void {
    if (this.renewTimer || this.stopped) return
    this.renewTimer = setInterval(() => {
      this.hold().catch(() => undefined) // a store that does not answer: the lease runs out, as it should
    }, Math.max(100, Math.floor(this.ttlMs / 3)))
    this.renewTimer.unref()
  }

  private stopRenewing(): void {
    clearInterval(this.renewTimer)
    this.renewTimer = undefined
  }
}
