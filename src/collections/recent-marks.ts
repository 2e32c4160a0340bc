/**
 * Which keys were marked within the last `keepMs`: each new mark forgets the marks older than
 * that, oldest first (stamp-queue.ts), so a mark costs O(1), amortized, and the Map holds only
 * the marks of the last `keepMs` — where sweeping the whole Map once it is large would cost a
 * walk of all of it per mark whenever that many are recent. On a monotonic clock: the queue's
 * order is the marks' order, and a wall clock stepped back would stop the forgetting.
 */
import { StampQueue } from './stamp-queue.js'

export class RecentMarks<K> {
  private readonly marks = new Map<K, number>()
  private readonly order = new StampQueue<K>((key) => this.marks.get(key))

  constructor(
    private readonly keepMs: number,
    /** Milliseconds on a monotonic clock. */
    private readonly now: () => number = () => performance.now()
  ) {}

  mark(key: K): void {
    const at = this.now()
    // the same mark again: nothing new to queue
    if (this.marks.get(key) === at) return
    this.marks.set(key, at)
    this.order.push(key, at)
    this.order.deleteStampedBefore(at - this.keepMs, this.marks)
    // a key marked again, or deleted, leaves its older occurrence behind
    this.order.keepNear(this.marks.size)
  }

  /** Whether `key` was marked less than `keepMs` ago. */
  within(key: K): boolean {
    const at = this.marks.get(key)
    return at !== undefined && this.now() - at < this.keepMs
  }

  delete(key: K): void {
    this.marks.delete(key)
  }

  get size(): number {
    return this.marks.size
  }

  /** Occurrences queued (for tests: they stay within about twice the marks). */
  get queued(): number {
    return this.order.length
  }
}
