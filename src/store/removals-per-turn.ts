/**
 * Removes numbered entries (a journal's) that are done with, in one commit per turn of the event
 * loop: a fleet push routes thousands of pushes, and a commit each would cost group commit a
 * caller each. Consecutive numbers go as one range, one statement.
 *
 * A removal is not awaited by whoever asked for it. One the store refused is tried again a second
 * later, twice; if it is lost still (the store down that long, a crash), the entries stay, and are
 * published again — at least once — and whoever made this is told which (`lost`), to ask again later. `flush()` removes what is asked for so far and waits for it,
 * so a graceful stop leaves nothing to publish twice.
 */
import { setTimeout as delay } from 'node:timers/promises'
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
    private readonly consequence: string,
    /** Told of the entries whose removal was given up. */
    private readonly lost: (seqs: readonly number[]) => void = () => undefined
  ) {}

  remove(seq: number): void {
    if (this.asked.length === 0) setImmediate(() => void this.commit())
    this.asked.push(seq)
  }

  async flush(): Promise<void> {
    await this.commit()
    await this.removing
  }

  private commit(seqs = this.takeAsked(), attempt = 1): Promise<void> {
    if (seqs.length === 0) return Promise.resolve()
    const mutations: Mutation[] = []
    for (let i = 0; i < seqs.length; ) {
      let j = i
      while (j + 1 < seqs.length && seqs[j + 1] === seqs[j]! + 1) j++
      mutations.push(this.removal(seqs[i]!, seqs[j]!))
      i = j + 1
    }
    // the retries are part of the removal, so flush() waits for them too
    const removed = this.store.commit(mutations).catch(async (error: Error) => {
      if (attempt < ATTEMPTS) {
        this.log.warn({ entries: seqs.length, err: error.message }, 'journal entries not removed; trying again in a second')
        await delay(RETRY_MS)
        return this.commit(seqs, attempt + 1)
      }
      this.log.warn({ entries: seqs.length, err: error.message }, `journal entries not removed; ${this.consequence}`)
      this.lost(seqs)
    })
    this.removing = Promise.all([this.removing, removed]).then(() => undefined)
    return removed
  }

  private takeAsked(): number[] {
    const seqs = this.asked.sort((a, b) => a - b)
    this.asked = []
    return seqs
  }
}

/** Tries of one removal, and the wait between them, ms. */
const ATTEMPTS = 3
const RETRY_MS = 1000
