/**
 * This run's pushes the broker refused, tried again while the run lasts. A push whose publish
 * failed (EMQX's API down or refusing, a broker whose queue store failed) stays in the journal
 * (push-journal.ts); every `retryMs` (IOTHUB_PUSH_RETRY_INTERVAL), while any is kept, they are published again in the
 * order they were recorded; one the broker refuses again holds back its device's later ones, and
 * three refusals in a row end the try; the devices refused at one try go after the others at the
 * next (left-pushes.ts). So an outage of the broker's side ends
 * with the devices told, not at this run's end, and a push the broker keeps refusing keeps only
 * its own device waiting.
 *
 * Later attributes pushes of the same device may have been routed meanwhile: a kept one says the
 * values stored now (late-pushes.ts). Its later commands and raw bytes were kept behind a kept
 * one (push-journal.ts, `mustWait`), and go after it, in their order; one kept behind another
 * run's earlier push waits at each try until that one has left the journal. Each try also asks
 * again for the removal of records of pushes done with that the store did not remove when asked
 * (it was down): left, they would hold other runs' later commands to their devices. A push the
 * broker refuses for good (the carrier tells which: EMQX's 400, say) is dropped, logged and
 * counted (`iothub_pushes_total{outcome="dropped"}`); one it takes is counted as `published`
 * (its first try was counted `failed`). A kept command (raw push) older than IOTHUB_COMMAND_EXPIRY
 * is dropped at the next try, counted `expired`, and its device's later ones go.
 */
import type { Logger } from 'pino'
import type { HubMetrics } from '../observability/metrics.js'
import { StoreError, type Store, type StoredPush } from '../store/store.js'
import { PUSH_RETRY_MS, PUSH_WITHIN_MS } from '../config.js'
import type { BrokerMessage, BrokerPublisher } from './dispatcher.js'
import type { LatePushes } from './late-pushes.js'
import { commandExpiry, propertyOfPush, publishRunPushes, type CommandExpiry } from './left-pushes.js'
import type { PushJournal } from './push-journal.js'

export interface KeptPushOptions {
  /** Whether the broker refused a push for good: it is dropped rather than tried again. */
  refusedForGood?: (error: Error) => boolean
  /** How long a publish may take, its tries included (ms): as a live push's (dispatcher.ts). */
  withinMs?: number
  /** Between tries, ms (IOTHUB_PUSH_RETRY_INTERVAL). */
  retryMs?: number
  /** After how long a kept command (raw push) is dropped rather than published, ms (IOTHUB_COMMAND_EXPIRY); 0 or absent: never. */
  commandExpiryMs?: number
}

export class KeptPushes {
  private timer: NodeJS.Timeout | undefined
  private retrying: Promise<number> | null = null
  private stopping = false
  /** The last try was refused: the next refusal is not logged again. */
  private refusedBefore = false
  /** The devices whose push the broker refused at the last try. */
  private refusedDevices: ReadonlySet<string> = new Set()
  /** When a kept command is too old to publish (IOTHUB_COMMAND_EXPIRY): the same at every try. */
  private readonly expiry: CommandExpiry | undefined

  constructor(
    private readonly journal: Pick<PushJournal, 'kept' | 'released' | 'othersMayWait' | 'waitsBehindOtherRun' | 'routed' | 'unremovedCount' | 'removeAgain'>,
    private readonly store: Pick<Store, 'replica' | 'commit' | 'readPushes'>,
    private readonly publisher: BrokerPublisher,
    private readonly latePushes: Pick<LatePushes, 'send' | 'expire'>,
    private readonly metrics: Pick<HubMetrics, 'pushesTotal'>,
    private readonly log: Logger,
    private readonly options: KeptPushOptions = {}
  ) {
    this.expiry = commandExpiry(options.commandExpiryMs ?? 0, latePushes, metrics, log, 'a command this run kept')
  }

  start(): void {
    this.timer = setInterval(() => void this.retry(), this.options.retryMs ?? PUSH_RETRY_MS)
    this.timer.unref()
  }

  /** Stops trying; resolves once a try under way is over. Kept pushes stay for another run. */
  async stop(): Promise<void> {
    this.stopping = true
    clearInterval(this.timer)
    await this.retrying
  }

  /** Publishes the kept pushes, in their order (left-pushes.ts, publishRunPushes); resolves with how many went. */
  retry(): Promise<number> {
    if ((this.journal.kept.size === 0 && this.journal.unremovedCount === 0) || this.stopping) return Promise.resolve(0)
    this.retrying ??= this.retryOnce().finally(() => (this.retrying = null))
    return this.retrying
  }

  private async retryOnce(): Promise<number> {
    // records of pushes done with that the store did not remove when asked: asked again
    this.journal.removeAgain()
    const kept = this.journal.kept
    if (kept.size === 0) return 0
    const atStart = [...kept]
    /** The run's records this try read: a push kept since the start that is not among them is gone. */
    const met = new Set<number>()
    /** Those released in this try: published or dropped, their records removed a page at a time. */
    const released: number[] = []
    try {
      // each is published in its device's turn (late-pushes.ts), as a live push is: as bounded
      const publishing = { withinMs: this.options.withinMs ?? PUSH_WITHIN_MS }
      const publish = (message: BrokerMessage) => this.publisher.publish(message, publishing)
      const { published, refused, refusedDevices, complete } = await publishRunPushes(this.store, this.store.replica, Infinity, publish, {
        deferred: this.refusedDevices,
        goOn: () => !this.stopping,
        includes: (push) => {
          met.add(push.seq)
          return kept.has(push.seq)
        },
        send: (push, publish) => this.latePushes.send(push, publish),
        published: (push) => this.metrics.pushesTotal.inc({ property: propertyOfPush(push), outcome: 'published' }),
        // a command held behind another run's earlier one waits while that one is in the journal
        ...(this.journal.othersMayWait ? { waitsBehind: (push: StoredPush) => this.journal.waitsBehindOtherRun(push.topic, push.at) } : {}),
        ...(this.options.refusedForGood ? { refusedForGood: this.options.refusedForGood } : {}),
        expiry: this.expiry,
        dropped: (push, error) => {
          this.metrics.pushesTotal.inc({ property: propertyOfPush(push), outcome: 'dropped' })
          this.log.error({ seq: push.seq, topic: push.topic, err: error.message }, 'a push the broker refused, refused again for good; dropped')
        },
        // released before its record is removed: a removal the store refuses leaves the record
        // for another run, rather than this one publishing it again at every try
        done: (push) => {
          this.journal.released(push.seq)
          released.push(push.seq)
        }
      })
      // tried after the others next time, so that they cannot keep the others waiting (left-pushes.ts)
      this.refusedDevices = refusedDevices
      if (published > 0) this.log.info({ pushes: published, left: kept.size }, 'published pushes the broker had refused')
      // the broker took some: a refusal now is news again, not the outage already told
      if (published > 0 || !refused) this.refusedBefore = false
      if (refused) this.refused(refused, kept.size)
      if (complete) {
        // every record of the run was read: one kept since the start and not met is gone (another
        // replica published it, taking this run for over), and is not looked for again — nor
        // waited on by its device's later pushes (push-journal.ts, `mustWait`)
        for (const seq of atStart) if (!met.has(seq)) this.journal.released(seq)
      }
      return published
    } catch (error) {
      // not the broker's answer (that is `refused`): the store's, reading or removing records. A
      // record of a push released here may be left: its removal is asked for again, so that it
      // does not hold other runs' later commands to its device (push-journal.ts)
      for (const seq of released) this.journal.routed(seq)
      this.storeFailed(error as Error, kept.size)
      return 0
    }
  }

  /** Logged when the broker starts refusing them again, not at every try while it goes on. */
  private refused(error: Error, left: number): void {
    // the device's stored attributes could not be read (late-pushes.ts): not the broker's answer
    if (error instanceof StoreError) return this.storeFailed(error, left)
    if (!this.refusedBefore) this.log.warn({ pushes: left, err: error.message }, 'pushes the broker refused are refused again; tried every IOTHUB_PUSH_RETRY_INTERVAL while this run lasts')
    this.refusedBefore = true
  }

  /** Logged at every try: the store's failures are not the outage the broker's refusals are. */
  private storeFailed(error: Error, left: number): void {
    this.log.warn({ pushes: left, err: error.message }, 'a try of the pushes the broker refused failed; tried again after IOTHUB_PUSH_RETRY_INTERVAL')
  }
}
