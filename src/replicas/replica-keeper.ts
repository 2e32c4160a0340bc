/**
 * This replica among the others on one store: it records itself (node name, API address, when
 * it started, when last seen, how far it has followed the change log) every heartbeat, lists
 * them all for `GET /v1/replicas`, hands out the leases of work that must run on one replica at a
 * time, and prunes the change log under a lease of its own — by age and count, never past what a
 * live replica has not applied yet — forgetting replicas not heard of for a day. With SQLite it is
 * the one replica there is.
 */
import type { Logger } from 'pino'
import type { HubConfig } from '../config.js'
import { TOMBSTONE_MS } from '../domain/transitions.js'
import type { HubMetrics } from '../observability/metrics.js'
import { runOf, type ReplicaRecord } from '../store/coordination.js'
import type { Store } from '../store/store.js'
import { Lease } from './lease.js'

/** Between heartbeats, ms. */
export const HEARTBEAT_MS = 5000
/** A replica not heard of for this long is not live: its log position no longer holds pruning back. */
export const LIVE_MS = 6 * HEARTBEAT_MS
/** How long a lease outlives its holder's last renewal, ms. */
export const LEASE_TTL_MS = 15_000
/**
 * A replica not heard of for this long is forgotten (its row deleted by the pruning replica): a
 * dead replica stays listed, not live, for a day — long enough for an operator to see that one
 * died — instead of until a replica of that node name starts again, which may be never.
 */
export const FORGET_MS = 24 * 60 * 60 * 1000
/** Between prunes of the change log, ms. */
const PRUNE_MS = 60_000
/** Most entries one prune statement deletes; a prune repeats it until fewer go. */
const PRUNE_CHUNK = 50_000

export interface ReplicaView extends ReplicaRecord {
  /** Heard of within LIVE_MS. */
  live: boolean
  /** This replica. */
  self: boolean
}

export class ReplicaKeeper {
  /** When this run started: as its run id says (so another replica can tell from an id whether that run is still live). */
  readonly startedAt: number
  /** Who holds this replica's leases: this run of it, as the store names it (`replicaRunId`). */
  readonly instance: string
  private address: string | null = null
  private heartbeatTimer: NodeJS.Timeout | undefined
  private pruneTimer: NodeJS.Timeout | undefined
  private readonly leases: Lease[] = []
  private readonly pruneLease: Lease
  /** Positions of other readers of the log that pruning must keep (event deliveries out of the hub). */
  private readonly pruneFloors: (() => number)[] = []
  private liveCount = 1
  private pruning: Promise<void> | null = null
  /** The heartbeat on its way, which stop() waits for: a late one must not record a replica that left. */
  private heartbeating: Promise<void> = Promise.resolve()

  constructor(
    private readonly store: Store,
    private readonly config: HubConfig,
    private readonly metrics: HubMetrics,
    private readonly log: Logger
  ) {
    this.instance = store.replica
    this.startedAt = runOf(store.replica)?.startedAt ?? Date.now()
    this.pruneLease = this.lease('log-prune')
    metrics.gauge('iothub_node_info', "This replica's node name, as a label (value 1)", ['node'], (set) => set({ node: config.node }, 1))
    metrics.gauge('iothub_replica_lag_seconds', 'How long the oldest change-log entry known and not yet applied here has waited (0: current)', [], (set) =>
      set({}, this.store.following().lagSeconds)
    )
    metrics.gauge('iothub_log_position', 'The last change-log entry applied here', [], (set) => set({}, this.store.following().applied))
    metrics.gauge('iothub_replicas_live', 'Replicas of this hub heard of within the last 30 s (as of the last heartbeat)', [], (set) => set({}, this.liveCount))
  }

  /** A lease on work one replica at a time runs, held (when it is) by this replica. */
  lease(name: string): Lease {
    const lease = new Lease(this.store.coordination, name, this.instance, LEASE_TTL_MS)
    this.leases.push(lease)
    return lease
  }

  /** Pruning keeps every entry after `floor()` (a reader of the log whose position is not a replica's). */
  holdPruning(floor: () => number): void {
    this.pruneFloors.push(floor)
  }

  /** Starts the heartbeat (the first at once) and the pruning. */
  async start(address: string | null): Promise<void> {
    this.address = address
    await this.heartbeat().catch((error: Error) => this.log.warn({ err: error.message }, 'replica heartbeat failed'))
    this.heartbeatTimer = setInterval(() => {
      this.heartbeating = this.heartbeat().catch((error: Error) => this.log.warn({ err: error.message }, 'replica heartbeat failed'))
    }, HEARTBEAT_MS)
    this.heartbeatTimer.unref()
    this.pruneTimer = setInterval(() => void this.prune(), PRUNE_MS)
    this.pruneTimer.unref()
  }

  async heartbeat(now = Date.now()): Promise<void> {
    await this.store.coordination.heartbeat({
      node: this.config.node,
      address: this.address,
      startedAt: this.startedAt,
      lastSeen: now,
      logPosition: this.store.following().applied
    })
    await this.replicas(now) // keeps iothub_replicas_live current
  }

  /** Every replica recorded in the store, live or not, by node name. */
  async replicas(now = Date.now()): Promise<ReplicaView[]> {
    const all = await this.store.coordination.replicas()
    const views = all.map((r) => ({ ...r, live: now - r.lastSeen <= LIVE_MS, self: r.node === this.config.node && r.startedAt === this.startedAt }))
    this.liveCount = views.filter((r) => r.live).length
    return views
  }

  /**
   * Deletes change-log entries older than IOTHUB_LOG_RETAIN or beyond IOTHUB_LOG_RETAIN_ENTRIES,
   * never one a live replica has not applied — on whichever replica holds the prune lease.
   */
  prune(now = Date.now()): Promise<void> {
    this.pruning ??= this.pruneOnce(now).finally(() => (this.pruning = null))
    return this.pruning
  }

  private async pruneOnce(now: number): Promise<void> {
    try {
      if (!(await this.pruneLease.hold(now))) return
      const live = (await this.replicas(now)).filter((r) => r.live)
      const through = Math.min(this.store.following().applied, ...live.map((r) => r.logPosition), ...this.pruneFloors.map((floor) => floor()))
      let pruned = 0
      for (;;) {
        const deleted = await this.store.coordination.pruneLog({
          through,
          keepEntries: this.config.logRetainEntries,
          keepSince: now - this.config.logRetain * 1000,
          limit: PRUNE_CHUNK
        })
        pruned += deleted
        if (deleted < PRUNE_CHUNK) break
      }
      const forgotten = await this.store.coordination.pruneTombstones(now - TOMBSTONE_MS)
      const gone = (await this.replicas(now)).filter((r) => now - r.lastSeen > FORGET_MS)
      for (const r of gone) await this.store.coordination.leave(r.node, r.startedAt)
      await this.pruneLease.done(now)
      if (pruned > 0 || forgotten > 0) this.log.info({ pruned, through, tombstones: forgotten }, 'change log pruned')
      for (const r of gone) this.log.info({ replica: r.node, lastSeen: new Date(r.lastSeen).toISOString() }, 'replica not heard of for a day forgotten')
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'change log prune failed; tried again later')
    }
  }

  /** Stops the heartbeat, gives up every lease and leaves the list of replicas. */
  async stop(): Promise<void> {
    clearInterval(this.heartbeatTimer)
    clearInterval(this.pruneTimer)
    await this.pruning
    await Promise.all(this.leases.map((l) => l.release()))
    await this.heartbeating
    // only this run's row: a later run of the same node may have taken it already
    await this.store.coordination.leave(this.config.node, this.startedAt).catch(() => undefined)
  }
}
