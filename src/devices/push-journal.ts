/**
 * The journal of pushes: a push of a stored change (devices/dispatcher.ts) is recorded in the
 * change's own transaction and removed once the broker has routed it, so that a crash between the
 * commit and the routing — or a broker that refused the push — does not lose a push the API
 * answered as made. Rows of `push_journal`, keyed by the run of the replica that stored them
 * (`Store.replica`) and a number of the run's own: replicas sharing a store never collide.
 *
 * What a run leaves behind is published by another: embedded mode at its next start, before any
 * client or API call is served (embedded/embedded-broker.ts); EMQX mode by the replica holding the
 * `push-replay` lease, once the run is over (emqx/push-replay.ts). At least once: a push routed
 * just before a crash, its row not yet removed, is published twice.
 */
import type { Logger } from 'pino'
import { RemovalsPerTurn } from '../store/removals-per-turn.js'
import type { Mutation, Store, StoredPush } from '../store/store.js'
import type { BrokerMessage } from './dispatcher.js'

export class PushJournal {
  private nextSeq = 1
  private readonly removals: RemovalsPerTurn

  constructor(
    private readonly store: Pick<Store, 'replica' | 'commit'>,
    log: Logger
  ) {
    const run = store.replica
    this.removals = new RemovalsPerTurn(
      store,
      (from, to) => (from === to ? { op: 'push.delete', run, seq: from } : { op: 'push.delete', run, seq: from, through: to }),
      log,
      'those pushes will be published again once this run is over'
    )
  }

  /** The record of `message` to store with the change it pushes, and its number. */
  record(message: BrokerMessage): { seq: number; mutation: Mutation } {
    const seq = this.nextSeq++
    const push: StoredPush = { run: this.store.replica, seq, topic: message.topic, payload: message.payload, qos: message.qos, at: Date.now() }
    return { seq, mutation: { op: 'push.put', push } }
  }

  /** The push `seq` is routed (or found no one to reach): its record goes. */
  routed(seq: number): void {
    this.removals.remove(seq)
  }

  /** Removes the records of pushes routed so far; before the store closes. */
  flush(): Promise<void> {
    return this.removals.flush()
  }
}

/** A push as it was journaled. */
export function journaledMessage(push: StoredPush): BrokerMessage {
  return { topic: push.topic, payload: Buffer.from(push.payload), qos: push.qos, retain: false }
}

/** Pushes read, published and removed at once while publishing what other runs left. */
const PAGE = 100

/** Which pushes other runs left are published now, and how the broker's refusals are taken. */
export interface LeftPushRules {
  /**
   * The latest `at` (epoch ms) up to which the pushes of `run` are left behind — Infinity for
   * all of them; undefined while the run may still publish them itself.
   */
  leftUpTo(run: string): number | undefined
  /** Whether to go on (asked before each publish): false stops the pass, what is left stays. */
  goOn?(): boolean
  /**
   * Whether the broker refused a push for good (the next pass would be refused too): it is
   * removed, and `dropped` told. Any other refusal leaves it and the rest of its run, which come
   * after it, for the next pass; the other runs' go on.
   */
  refusedForGood?(error: Error): boolean
  dropped?(push: StoredPush, error: Error): void
  /**
   * What to publish for a push now (late-pushes.ts), undefined for nothing (its record goes all
   * the same); without it, the push as it was journaled.
   */
  asNow?(push: StoredPush): Promise<BrokerMessage | undefined>
}

/**
 * Publishes the pushes other runs left — the run with the oldest first, each run's in the order it
 * recorded them — removing a page's once published. Resolves with how many were published;
 * rejects, once every run had its turn, with a refusal that left pushes behind.
 */
export async function publishLeftPushes(
  store: Pick<Store, 'commit' | 'pushRuns' | 'readPushes'>,
  publish: (message: BrokerMessage) => Promise<void>,
  rules: LeftPushRules
): Promise<number> {
  let published = 0
  let refused: Error | undefined
  const goOn = (): boolean => rules.goOn?.() !== false
  for (const run of await store.pushRuns()) {
    const upTo = rules.leftUpTo(run)
    if (upTo === undefined) continue
    for (let afterSeq = 0; goOn(); ) {
      const page = await store.readPushes(run, afterSeq, PAGE)
      const done: number[] = []
      let stopped = false
      for (const push of page) {
        // numbered in the order they were recorded: the rest are younger still
        if (push.at > upTo || !goOn()) {
          stopped = true
          break
        }
        try {
          const message = rules.asNow ? await rules.asNow(push) : journaledMessage(push)
          if (message) {
            await publish(message)
            published++
          }
        } catch (error) {
          if (!rules.refusedForGood?.(error as Error)) {
            refused = error as Error
            stopped = true
            break
          }
          rules.dropped?.(push, error as Error)
        }
        done.push(push.seq)
      }
      if (done.length > 0) await store.commit(done.map((seq) => ({ op: 'push.delete', run, seq })))
      if (stopped || page.length < PAGE) break
      afterSeq = page[page.length - 1]!.seq
    }
    if (!goOn()) break
  }
  if (refused) throw refused
  return published
}
