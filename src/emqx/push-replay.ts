/**
 * EMQX mode: publishing the pushes a replica's run stored and did not get EMQX to take
 * (devices/push-journal.ts) — it was killed between a change's commit and the REST publish, or
 * stopped while EMQX refused its pushes. The replica holding the `push-replay` lease looks every
 * `everyMs` (IOTHUB_PUSH_RETRY_INTERVAL) for the pushes of runs that are over: an earlier run of its own node (this node
 * runs as this replica now), or a run the list of replicas (replica-keeper.ts) no longer shows
 * live, once its pushes are PUSH_ORPHAN_AGE_MS old — a live run's pushes are never published by
 * another replica, as they may still be on their way, and that age is longer than any publish
 * takes (REST tries and timeouts) and than replicas' clocks differ.
 *
 * A push EMQX refuses for good (`publishRefusedForGood`: a bad request, 413, EMQX 4's code for
 * the request itself) is removed, logged and counted (`iothub_pushes_total`, outcome `dropped`);
 * any other refusal (EMQX unreachable or busy, the credentials, a wrong API path: what time or an
 * operator can mend) leaves it, and its device's later pushes, for the next look, where its
 * device is tried after the others; three refusals with none taken between end the look
 * (left-pushes.ts).
 *
 * A push published late this way may reach its device after a later change's push: an
 * attributes push therefore says the values stored now (late-pushes.ts). A command (raw bytes)
 * goes after any earlier one of another run to its device still in the journal, and live
 * replicas keep theirs behind it (push-journal.ts). One the broker takes is
 * counted (`iothub_pushes_total`, outcome `published`); one older than IOTHUB_COMMAND_EXPIRY is
 * removed unpublished (outcome `expired`).
 */
import type { Logger } from 'pino'
import { PUSH_RETRY_MS, PUSH_WITHIN_MS } from '../config.js'
import type { BrokerPublisher, PublishOptions } from '../devices/dispatcher.js'
import type { LatePushes } from '../devices/late-pushes.js'
import { commandExpiry, propertyOfPush, publishLeftPushes, waitsBehindOtherRun, type CommandExpiry } from '../devices/left-pushes.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { Lease } from '../replicas/lease.js'
import type { ReplicaView } from '../replicas/replica-keeper.js'
import { runOf } from '../store/coordination.js'
import type { Store } from '../store/store.js'
import { publishRefusedForGood } from './emqx-rest.js'

/** How old a push of a run no longer listed live must be before another replica publishes it, ms. */
export const PUSH_ORPHAN_AGE_MS = 60_000

export interface PushReplayOptions {
  /** How long a publish may take, its tries included (ms): as a live push's (dispatcher.ts). */
  withinMs?: number
  /** Between looks for pushes that runs now over left unpublished, ms (IOTHUB_PUSH_RETRY_INTERVAL, as the kept pushes' tries). */
  everyMs?: number
  /** After how long a left command (raw push) is dropped rather than published, ms (IOTHUB_COMMAND_EXPIRY); 0 or absent: never. */
  commandExpiryMs?: number
}

export class PushReplay {
  private timer: NodeJS.Timeout | undefined
  private replaying: Promise<number> | null = null
  private stopping = false
  /** The devices whose push EMQX refused at the last look. */
  private refusedDevices: ReadonlySet<string> = new Set()
  /** When this run started, as its run id says. */
  private readonly startedAt: number
  /** How each left push is published: as bounded as a live push (dispatcher.ts). */
  private readonly publishing: PublishOptions
  /** Between looks, ms. */
  private readonly everyMs: number
  /** When a left command is too old to publish (IOTHUB_COMMAND_EXPIRY). */
  private readonly expiry: CommandExpiry | undefined

  constructor(
    private readonly store: Pick<Store, 'replica' | 'commit' | 'pushRuns' | 'readPushes' | 'earliestPushElsewhere'>,
    private readonly publisher: BrokerPublisher,
    private readonly lease: Lease,
    private readonly replicas: (now: number) => Promise<ReplicaView[]>,
    /** This replica's node name: its earlier runs are over, whatever the list still says of them. */
    private readonly node: string,
    /** What a left push says now (late-pushes.ts). */
    private readonly latePushes: Pick<LatePushes, 'send' | 'expire'>,
    private readonly metrics: Pick<HubMetrics, 'pushesTotal'>,
    private readonly log: Logger,
    options: PushReplayOptions = {}
  ) {
    this.startedAt = runOf(store.replica)?.startedAt ?? Date.now()
    this.publishing = { withinMs: options.withinMs ?? PUSH_WITHIN_MS }
    this.everyMs = options.everyMs ?? PUSH_RETRY_MS
    this.expiry = commandExpiry(options.commandExpiryMs ?? 0, latePushes, metrics, log, 'a command left by a replica no longer running')
  }

  /** Looks now, then every `everyMs` (on the replica holding the lease). */
  start(): void {
    this.timer = setInterval(() => void this.publishLeft(), this.everyMs)
    this.timer.unref()
    void this.publishLeft()
  }

  async stop(): Promise<void> {
    this.stopping = true
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
      if (this.stopping || !(await this.lease.hold())) return 0
      const live = new Set((await this.replicas(now)).filter((r) => r.live).map((r) => runKey(r.node, r.startedAt)))
      // each is published in its device's turn (late-pushes.ts), as a live push is: as bounded
      const { published, refused, refusedDevices, complete } = await publishLeftPushes(this.store, (message) => this.publisher.publish(message, this.publishing), {
        deferred: this.refusedDevices,
        leftUpTo: (run) => {
          if (run === this.store.replica) return undefined
          const named = runOf(run)
          // an earlier run of this node: this replica runs in its place (a later one with this
          // node's name is another process misnamed, and goes by the list like any other)
          if (named?.node === this.node && named.startedAt < this.startedAt) return Infinity
          if (named !== undefined && live.has(runKey(named.node, named.startedAt))) return undefined
          return now - PUSH_ORPHAN_AGE_MS
        },
        // a pass that lost its lease meanwhile leaves the rest to the replica that took it (the
        // push already waiting for its device's turn still goes: at least once)
        goOn: () => !this.stopping && this.lease.held,
        refusedForGood: publishRefusedForGood,
        expiry: this.expiry,
        send: (push, publish) => this.latePushes.send(push, publish),
        published: (push) => this.metrics.pushesTotal.inc({ property: propertyOfPush(push), outcome: 'published' }),
        // a left command goes after an earlier one of another run to its device, live or left
        waitsBehind: (push) => waitsBehindOtherRun(this.store, push),
        dropped: (push, error) => {
          this.metrics.pushesTotal.inc({ property: propertyOfPush(push), outcome: 'dropped' })
          this.log.error({ run: push.run, seq: push.seq, topic: push.topic, err: error.message }, 'a push left by a replica no longer running refused by EMQX for good; dropped')
        }
      })
      // tried after the others next time, so that they cannot keep the others waiting (left-pushes.ts)
      this.refusedDevices = refusedDevices
      if (published > 0) this.log.info({ pushes: published }, 'published pushes that replicas no longer running had stored and not published')
      if (refused) {
        this.log.warn({ err: refused.message }, 'pushes left by replicas no longer running refused by EMQX, and those of their devices after them; tried again later')
        return published
      }
      // cut short (this replica stopping, or its lease lost): not a look that was done
      if (!complete) return published
      await this.lease.done(now)
      return published
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'pushes left by replicas no longer running not all published; tried again later')
      return 0
    }
  }
}

const runKey = (node: string, startedAt: number): string => `${node}\u0000${startedAt}`
