/**
 * Removes numbered entries (a journal's) that are done with, in one commit per turn of the event
 * loop: a fleet push routes thousands of pushes, and a commit each would cost group commit a
 * caller each. Consecutive numbers go as one range, one statement.
 *
 * A removal is not awaited by whoever asked for it: if it is lost (the store failing, a crash),
 * the entry stays, and is published again — at least once. `flush()` removes what is asked for
 * so far and waits for it, so a graceful stop leaves nothing to publish twice.
 */
import type { Logger } from 'pino'
import type { Mutation, Store } from './store.js'

export class RemovalsPerTurn {
  private asked: number[] = []
  private removing: Promise<void> = Promise.resolve()

  constructor(
    private readonly store: Pick<Store, 'commit'>,
    /** The mutation that removes entries `from` through `to`. */
    private readonly removal: (from: number, to: number) => Mutation,
    private readonly log: Logger,
    /** What the warning of a lost removal says will happen to the entries. */
    private readonly consequence: string
  ) {}

  remove(seq: number): void {
    if (this.asked.length === 0) setImmediate(() => void this.commit())
    this.asked.push(seq)
  }

  async flush(): Promise<void> {
    await this.commit()
    await this.removing
  }

  private commit(): Promise<void> {
    if (this.asked.length === 0) return Promise.resolve()
    const seqs = this.asked.sort((a, b) => a - b)
    this.asked = []
    const mutations: Mutation[] = []
    for (let i = 0; i < seqs.length; ) {
      let j = i
      while (j + 1 < seqs.length && seqs[j + 1] === seqs[j]! + 1) j++
      mutations.push(this.removal(seqs[i]!, seqs[j]!))
      i = j + 1
    }
    const removed = this.store.commit(mutations).catch((error: Error) => {
      this.log.warn({ entries: seqs.length, err: error.message }, `journal entries not removed; ${this.consequence}`)
    })
    this.removing = Promise.all([this.removing, removed]).then(() => undefined)
    return removed
  }
}
