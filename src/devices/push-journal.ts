/**
 * The journal of pushes: a push of a stored change (devices/dispatcher.ts) is recorded in the
 * change's own transaction and removed once the broker has routed it, so that a crash between the
 * commit and the routing — or a broker that refused the push — does not lose a push the API
 * answered as made. Rows of `push_journal`, keyed by the run of the replica that stored them
 * (`Store.replica`) and a number of the run's own: replicas sharing a store never collide.
 *
 * A push the broker refused is kept: the run tries it again while it lasts (kept-pushes.ts). A
 * later command or raw bytes to the same device is kept behind it rather than published, so that
 * the device gets its messages in the order they were sent (`mustWait`). So is one that another run
 * recorded after an earlier one of its own to the same device that is still in the journal —
 * where other runs' pushes may wait while this one serves (`othersMayWait`: EMQX mode, whose
 * replicas share the store and whose runs' left pushes are published after the next run starts):
 * an order every replica agrees on (Store.earliestPushElsewhere), so no two wait on each other.
 * What a run leaves behind is published by another (left-pushes.ts): embedded mode at its next
 * start, before any client or API call is served (embedded/embedded-broker.ts); EMQX mode by the
 * replica holding the `push-replay` lease, once the run is over (emqx/push-replay.ts). At least
 * once: a push routed just before a crash, its row not yet removed, is published twice.
 */
import type { Logger } from 'pino'
import { RemovalsPerTurn } from '../store/removals-per-turn.js'
import type { Mutation, Store, StoredPush } from '../store/store.js'
import type { BrokerMessage } from './dispatcher.js'
import { earliestAheadElsewhere, takenInOrder, waitsBehindOtherRun } from './left-pushes.js'

export interface PushJournalOptions {
  /**
   * Whether pushes of other runs may wait in the journal while this run serves: EMQX mode (its
   * replicas share the store, and a run's left pushes are published after the next one starts).
   * Not embedded mode, which publishes what earlier runs left before it serves anyone.
   */
  othersMayWait?: boolean
}

export class PushJournal {
  private nextSeq = 1
  /** When the last push was recorded (epoch ms). */
  private lastAt = 0
  private readonly removals: RemovalsPerTurn
  /** This run's pushes the broker refused: their records stay until a retry publishes them. */
  private readonly keptSeqs = new Set<number>()
  /**
   * Of the kept pushes, those a later push on their topic must not overtake, by number: commands
   * and raw bytes, which a device takes as messages, in the order they come. (An attributes push
   * published late says the values stored then, late-pushes.ts: a later one may go first.)
   */
  private readonly keptInOrder = new Map<number, string>()
  /** How many kept pushes wait on each of those topics. */
  private readonly waitingOnTopic = new Map<string, number>()
  /**
   * Pushes done with whose records the store did not remove (it was down): removed again at the
   * next try of the kept pushes (`removeAgain`). A record left would hold other runs' later
   * commands to its device (`waitsBehindOtherRun`) for as long as this run lasts.
   */
  private readonly unremoved = new Set<number>()

  /** Whether a push must be asked about other runs' (`waitsBehindOtherRun`): PushJournalOptions. */
  readonly othersMayWait: boolean

  constructor(
    private readonly store: Pick<Store, 'replica' | 'commit' | 'earliestPushElsewhere'>,
    log: Logger,
    options: PushJournalOptions = {}
  ) {
    this.othersMayWait = options.othersMayWait ?? false
    const run = store.replica
    this.removals = new RemovalsPerTurn(
      store,
      (from, to) => (from === to ? { op: 'push.delete', run, seq: from } : { op: 'push.delete', run, seq: from, through: to }),
      log,
      'removed at the next try of the kept pushes, or published again once this run is over',
      (seqs) => {
        for (const seq of seqs) this.unremoved.add(seq)
      }
    )
  }

  /** The record of `message` to store with the change it pushes, and its number. */
  record(message: BrokerMessage): { seq: number; at: number; mutation: Mutation } {
    const seq = this.nextSeq++
    // never earlier than the run's previous record, whatever the clock does: the order of runs'
    // pushes (Store.earliestPushElsewhere) must keep each run's own, or two could wait on each other
    this.lastAt = Math.max(Date.now(), this.lastAt)
    const push: StoredPush = { run: this.store.replica, seq, topic: message.topic, payload: message.payload, qos: message.qos, at: this.lastAt }
    return { seq, at: push.at, mutation: { op: 'push.put', push } }
  }

  /** The push `seq` is routed (or found no one to reach): its record goes. */
  routed(seq: number): void {
    this.removals.remove(seq)
  }

  /** The broker refused the push `seq` on `topic` (or it was held back): its record stays, for a retry (kept-pushes.ts) or another run. */
  keep(seq: number, topic: string): void {
    if (this.keptSeqs.has(seq)) return
    this.keptSeqs.add(seq)
    if (!takenInOrder(topic)) return
    this.keptInOrder.set(seq, topic)
    this.waitingOnTopic.set(topic, (this.waitingOnTopic.get(topic) ?? 0) + 1)
  }

  /**
   * Whether a push on `topic` must be kept behind one kept already (a command, raw bytes), not
   * published: it would reach the device before the earlier one.
   */
  mustWait(topic: string): boolean {
    return this.waitingOnTopic.has(topic)
  }

  /** How many of this run's kept pushes wait on `topic` (commands, raw bytes: those kept in order). */
  waitingOn(topic: string): number {
    return this.waitingOnTopic.get(topic) ?? 0
  }

  /**
   * Whether this run's push on `topic`, recorded at `at`, must be kept behind another run's on
   * the same topic recorded before it and still in the journal (a command to the device that run
   * has not got the broker to take). Asked only where `othersMayWait`.
   */
  waitsBehindOtherRun(topic: string, at: number): Promise<boolean> {
    return waitsBehindOtherRun(this.store, { run: this.store.replica, topic, at })
  }

  /** Of the other runs' pushes that this run's on `topic`, recorded at `at`, must wait behind (`waitsBehindOtherRun`), when the earliest was recorded; undefined when there is none. */
  earliestAheadElsewhere(topic: string, at: number): Promise<number | undefined> {
    return earliestAheadElsewhere(this.store, { run: this.store.replica, topic, at })
  }

  /** This run's pushes the broker refused and no retry has published yet. */
  get kept(): ReadonlySet<number> {
    return this.keptSeqs
  }

  /** A kept push was published, or dropped: it is not tried again (its record is being removed). */
  released(seq: number): void {
    this.keptSeqs.delete(seq)
    const topic = this.keptInOrder.get(seq)
    if (topic === undefined) return
    this.keptInOrder.delete(seq)
    const waiting = this.waitingOnTopic.get(topic)! - 1
    if (waiting === 0) this.waitingOnTopic.delete(topic)
    else this.waitingOnTopic.set(topic, waiting)
  }

  /** How many records of pushes done with the store has not removed yet, of those given up on. */
  get unremovedCount(): number {
    return this.unremoved.size
  }

  /** Asks again for the removal of the records the store did not remove (`unremoved`). */
  removeAgain(): void {
    for (const seq of this.unremoved) this.removals.remove(seq)
    this.unremoved.clear()
  }

  /** Removes the records of pushes routed so far, and asks again for those the store did not remove; before the store closes. */
  flush(): Promise<void> {
    this.removeAgain()
    return this.removals.flush()
  }
}
