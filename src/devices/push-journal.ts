/**
 * The journal of pushes: a push of a stored change (devices/dispatcher.ts) is recorded in the
 * change's own transaction and removed once the broker has routed it, so that a crash between the
 * commit and the routing — or a broker that refused the push — does not lose a push the API
 * answered as made. Rows of `push_journal`, keyed by the run of the replica that stored them
 * (`Store.replica`) and a number of the run's own: replicas sharing a store never collide.
 *
 * A push the broker refused is kept: the run tries it again while it lasts (kept-pushes.ts).
 * What a run leaves behind is published by another (left-pushes.ts): embedded mode at its next
 * start, before any client or API call is served (embedded/embedded-broker.ts); EMQX mode by the
 * replica holding the `push-replay` lease, once the run is over (emqx/push-replay.ts). At least
 * once: a push routed just before a crash, its row not yet removed, is published twice.
 */
import type { Logger } from 'pino'
import { RemovalsPerTurn } from '../store/removals-per-turn.js'
import type { Mutation, Store, StoredPush } from '../store/store.js'
import type { BrokerMessage } from './dispatcher.js'

export class PushJournal {
  private nextSeq = 1
  private readonly removals: RemovalsPerTurn
  /** This run's pushes the broker refused: their records stay until a retry publishes them. */
  private readonly keptSeqs = new Set<number>()

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

  /** The broker refused the push `seq`: its record stays, for a retry (kept-pushes.ts) or another run. */
  keep(seq: number): void {
    this.keptSeqs.add(seq)
  }

  /** This run's pushes the broker refused and no retry has published yet. */
  get kept(): ReadonlySet<number> {
    return this.keptSeqs
  }

  /** A kept push was published, or dropped: it is not tried again (its record is being removed). */
  released(seq: number): void {
    this.keptSeqs.delete(seq)
  }

  /** Removes the records of pushes routed so far; before the store closes. */
  flush(): Promise<void> {
    return this.removals.flush()
  }
}
