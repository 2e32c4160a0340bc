/**
 * EMQX mode's journal of pushes. A push is published through EMQX's REST API once its change has
 * committed (devices/dispatcher.ts); a replica that dies in between would lose it, though the API
 * answered the change as made. So each push is recorded in its change's own transaction — keyed by
 * this replica's run (`Store.replica`) and a number of the run's own, so replicas sharing the store
 * never collide — and deleted once EMQX has taken it.
 *
 * What a run leaves behind when it ends (killed between a commit and its publish, or stopped while
 * EMQX refused its pushes) is published by whichever replica holds the `push-replay` lease, once
 * that run is over: an earlier run of the holder's own node, or a run no longer live in the list of
 * replicas (replica-keeper.ts) — at once when its node has started again (the new run takes the
 * node's row), within a minute when it has not. A live run's pushes are never published by another
 * replica: they may still be on their way. So a push is published at least once; one whose publish
 * EMQX took just before its replica died is published twice. A push published late this way may
 * reach its device after a later change's push (docs/ROADMAP.md).
 */
import type { Logger } from 'pino'
import type { BrokerMessage, BrokerPublisher, PushJournal } from '../devices/dispatcher.js'
import type { Lease } from '../replicas/lease.js'
import type { ReplicaView } from '../replicas/replica-keeper.js'
import { runOf } from '../store/coordination.js'
import type { Mutation, Store, StoredPush } from '../store/store.js'

/** Between looks for pushes that runs now over left unpublished, ms. */
export const PUSH_REPLAY_MS = 10_000
/**
 * A push younger than this is not published by another replica, whatever the list says of its
 * run: a replica records itself in the list only after it serves, so its first pushes may be
 * journaled before the list shows it live.
 */
export const PUSH_ORPHAN_AGE_MS = 5000
/** Pushes read at once. */
const PAGE = 100

export class EmqxPushJournal implements PushJournal {
  private nextSeq = 1
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

  record(message: BrokerMessage): { seq: number; mutation: Mutation } {
    const seq = this.nextSeq++
    const push: StoredPush = { run: this.store.replica, seq, topic: message.topic, payload: message.payload, qos: message.qos, at: Date.now() }
    return { seq, mutation: { op: 'push.put', push } }
  }

  routed(seq: number): void {
    // Not awaited: if this is lost, the push is published again once this run is over (at least once).
    this.store.commit([{ op: 'push.delete', run: this.store.replica, seq }]).catch((error: Error) => {
      this.log.warn({ seq, err: error.message }, 'push journal entry not removed; the push will be published again once this run is over')
    })
  }

  /** Looks for pushes of runs that are over every PUSH_REPLAY_MS, on the replica holding the lease. */
  start(): void {
    this.timer = setInterval(() => void this.replayOrphans(), PUSH_REPLAY_MS)
    this.timer.unref()
    void this.replayOrphans()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.replaying
  }

  /** Publishes, and deletes, the pushes that runs now over stored and did not publish; resolves with how many. */
  replayOrphans(now = Date.now()): Promise<number> {
    this.replaying ??= this.replayOnce(now).finally(() => (this.replaying = null))
    return this.replaying
  }

  private async replayOnce(now: number): Promise<number> {
    let published = 0
    try {
      if (!(await this.lease.hold())) return 0
      const live = new Set((await this.replicas(now)).filter((r) => r.live).map((r) => runKey(r.node, r.startedAt)))
      const over = (push: StoredPush): boolean => {
        if (push.run === this.store.replica || push.at > now - PUSH_ORPHAN_AGE_MS) return false
        const run = runOf(push.run)
        return run === undefined || run.node === this.node || !live.has(runKey(run.node, run.startedAt))
      }
      let after: StoredPush | undefined
      for (;;) {
        const page = await this.store.readPushes(after, PAGE)
        for (const push of page) {
          if (!over(push)) continue
          await this.publisher.publish({ topic: push.topic, payload: Buffer.from(push.payload), qos: push.qos, retain: false })
          await this.store.commit([{ op: 'push.delete', run: push.run, seq: push.seq }], { background: true })
          published++
        }
        if (page.length < PAGE) break
        after = page[page.length - 1]
      }
      await this.lease.done(now)
    } catch (error) {
      this.log.warn({ err: (error as Error).message, published }, 'pushes left by replicas no longer running not all published; tried again later')
    }
    if (published > 0) this.log.info({ pushes: published }, 'published pushes that replicas no longer running had stored and not published')
    return published
  }
}

const runKey = (node: string, startedAt: number): string => `${node}\u0000${startedAt}`
