import { randomBytes } from 'node:crypto'

/**
 * What several replicas of one hub share besides the data: who they are (each records itself
 * and how far it has followed the change log), leases — so work that must not run twice (the
 * reconcile with EMQX, the expiry sweep, pruning the log) runs on one replica at a time, and
 * moves to another when its holder stops renewing — and the pruning of the change log, which
 * never removes what a live replica has not applied yet.
 *
 * A store that one process alone writes (SQLite) has one replica, which holds every lease.
 */
/**
 * Names one run of a replica among the store's writers: its node name and this run — so a
 * restarted replica does not inherit its former run's leases or changes, and two replicas
 * misconfigured with one node name are still told apart.
 */
export function replicaRunId(node: string, startedAt = Date.now()): string {
  return `${node}#${startedAt.toString(36)}.${randomBytes(4).toString('hex')}`
}

/** The node and start (epoch ms) a run id names; undefined for an id `replicaRunId` did not make. */
export function runOf(run: string): { node: string; startedAt: number } | undefined {
  const hash = run.lastIndexOf('#')
  const dot = run.indexOf('.', hash)
  const start = run.slice(hash + 1, dot)
  if (hash < 0 || dot < 0 || !/^[0-9a-z]{1,10}$/.test(start)) return undefined
  return { node: run.slice(0, hash), startedAt: parseInt(start, 36) }
}

export interface ReplicaRecord {
  node: string
  /** Where its API listens, as it knows it (host:port), or null. */
  address: string | null
  /** Epoch ms. */
  startedAt: number
  /** Epoch ms of its last heartbeat. */
  lastSeen: number
  /** The last change-log entry it has applied. */
  logPosition: number
}

export interface LeaseState {
  /** Who holds it now (null: nobody ever did). */
  holder: string | null
  /** Epoch ms until which the holder holds it unless it renews. */
  expiresAt: number
  /** Epoch ms when a holder last finished the leased work. */
  doneAt: number | null
  /** Epoch ms when a replica last asked for the work to run soon, and why. */
  requestedAt: number | null
  requestReason: string | null
  /** What the holder said of its last finished run (the reconcile's report), for every replica to show. */
  note: unknown
}

/**
 * Which change-log entries go: those beyond the newest `keepEntries`, and those committed before
 * `keepSince` — but never one after `through`, the lowest position a live replica has applied.
 */
export interface LogPruning {
  through: number
  keepEntries: number
  /** Epoch ms. */
  keepSince: number
  /** Delete at most this many in one call (a long delete would hold up the writer). */
  limit: number
}

export interface Coordination {
  /** Records `self` as alive now. */
  heartbeat(self: ReplicaRecord): Promise<void>
  /** Every replica that has recorded itself, live or not, by node name. */
  replicas(): Promise<ReplicaRecord[]>
  /** Forgets a replica that stopped cleanly: that run of `node` only (a later run may have taken its row). */
  leave(node: string, startedAt: number): Promise<void>
  /**
   * Takes lease `name` for `holder` until `now + ttlMs` when it is free, expired or already
   * `holder`'s; answers the lease as it stands after (`holder` named only if it now holds it).
   * `now` defaults to the store's own clock.
   */
  lease(name: string, holder: string, ttlMs: number, now?: number): Promise<LeaseState>
  /** The holder finished the leased work, with a note of it (recorded only while it holds the lease). */
  leaseDone(name: string, holder: string, at: number, note?: unknown): Promise<void>
  /** Asks whoever holds the lease to run its work soon, saying why. */
  leaseRequest(name: string, at: number, reason: string): Promise<void>
  /** Releases a lease its holder is giving up (stopping), so another takes it at once. */
  release(name: string, holder: string): Promise<void>
  /** Deletes change-log entries as `pruning` allows; resolves with how many. */
  pruneLog(pruning: LogPruning): Promise<number>
  /** Forgets the incarnations of sessions that ended before `before` (epoch ms); how many. */
  pruneTombstones(before: number): Promise<number>
}

/** The coordination of a store with one writer: this process is every replica there is. */
export class SoleReplica implements Coordination {
  private self: ReplicaRecord | undefined
  private readonly leases = new Map<string, LeaseState>()

  constructor(private readonly prune: (pruning: LogPruning) => Promise<number>) {}

  async heartbeat(self: ReplicaRecord): Promise<void> {
    this.self = self
  }

  async replicas(): Promise<ReplicaRecord[]> {
    return this.self ? [this.self] : []
  }

  async leave(node: string, startedAt: number): Promise<void> {
    if (this.self?.node === node && this.self.startedAt === startedAt) this.self = undefined
  }

  async lease(name: string, holder: string, ttlMs: number, now = Date.now()): Promise<LeaseState> {
    const state = { ...(this.leases.get(name) ?? { doneAt: null, requestedAt: null, requestReason: null, note: null }), holder, expiresAt: now + ttlMs }
    this.leases.set(name, state)
    return state
  }

  async leaseDone(name: string, holder: string, at: number, note: unknown = null): Promise<void> {
    const state = this.leases.get(name)
    if (state?.holder !== holder) return
    state.doneAt = at
    state.note = note
  }

  async leaseRequest(name: string, at: number, reason: string): Promise<void> {
    const state = this.leases.get(name)
    if (!state) return
    state.requestedAt = at
    state.requestReason = reason
  }

  async release(name: string, holder: string): Promise<void> {
    const state = this.leases.get(name)
    if (state?.holder === holder) state.expiresAt = 0
  }

  pruneLog(pruning: LogPruning): Promise<number> {
    return this.prune(pruning)
  }

  /** The caches keep them (one writer): nothing stored to forget. */
  async pruneTombstones(): Promise<number> {
    return 0
  }
}
