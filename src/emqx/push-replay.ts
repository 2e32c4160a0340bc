/**
 * EMQX mode: publishing the pushes a replica's run stored and did not get EMQX to take
 * (devices/push-journal.ts) — it was killed between a change's commit and the REST publish, or
 * stopped while EMQX refused its pushes. The replica holding the `push-replay` lease looks every
 * PUSH_REPLAY_MS for pushes of runs that are over: an earlier run of its own node, or a run the
 * list of replicas (replica-keeper.ts) no longer shows live — at once when its node has started
 * again (the new run takes the node's row), within about a minute when it has not. A live run's
 * pushes are never published by another replica: they may still be on their way.
 *
 * A push published late this way may reach its device after a later change's push
 * (docs/ROADMAP.md).
 */
import type { Logger } from 'pino'
import type { BrokerPublisher } from '../devices/dispatcher.js'
import { publishLeftPushes } from '../devices/push-journal.js'
import type { Lease } from '../replicas/lease.js'
import type { ReplicaView } from '../replicas/replica-keeper.js'
import { runOf } from '../store/coordination.js'
import type { Store, StoredPush } from '../store/store.js'

/** Between looks for pushes that runs now over left unpublished, ms. */
export const PUSH_REPLAY_MS = 10_000
/**
 * A push younger than this is not published by another replica, whatever the list says of its
 * run: a replica records itself in the list only once it serves, so its first pushes may be
 * stored before the list shows it live.
 */
export const PUSH_ORPHAN_AGE_MS = 5000

export class PushReplay {
  private timer: NodeJS.Timeout | undefined
  private replaying: Promise<number> | null = null

  constructor(
    private readonly store: Pick<Store, 'replica' | 'commit' | 'readPushes'>,
    private readonly publisher: BrokerPublisher,
    private readonly lease: Lease,
    private readonly replicas: (now: number) => Promise<ReplicaView[]>,
    /** This replica's node name: its earlier runs are over, whatever the list still says of them. */
    private readonly node: string,
    private readonly log: Logger
  ) {}

  /** Looks now, then every PUSH_REPLAY_MS (on the replica holding the lease). */
  start(): void {
    this.timer = setInterval(() => void this.publishLeft(), PUSH_REPLAY_MS)
    this.timer.unref()
    void this.publishLeft()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.replaying
  }

  /** Publishes, and removes, the pushes that runs now over left; resolves with how many. */
  publishLeft(now = Date.now()): Promise<number> {
    this.replaying ??= this.publishOnce(now).finally(() => (this.replaying = null))
    return this.replaying
  }

  private async publishOnce(now: number): Promise<number> {
    try {
      if (!(await this.lease.hold())) return 0
      const live = new Set((await this.replicas(now)).filter((r) => r.live).map((r) => runKey(r.node, r.startedAt)))
      const over = (push: StoredPush): boolean => {
        if (push.run === this.store.replica || push.at > now - PUSH_ORPHAN_AGE_MS) return false
        const run = runOf(push.run)
        return run === undefined || run.node === this.node || !live.has(runKey(run.node, run.startedAt))
      }
      const published = await publishLeftPushes(this.store, (message) => this.publisher.publish(message), over)
      await this.lease.done(now)
      if (published > 0) this.log.info({ pushes: published }, 'published pushes that replicas no longer running had stored and not published')
      return published
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'pushes left by replicas no longer running not all published; tried again later')
      return 0
    }
  }
}

const runKey = (node: string, startedAt: number): string => `${node}\u0000${startedAt}`
