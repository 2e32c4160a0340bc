/**
 * When each key was last marked, kept for `keepMs`: each new mark forgets the marks older than
 * that, oldest first (stamp-queue.ts), so a mark costs O(1), amortized, and the Map holds only
 * the marks of the last `keepMs` — where sweeping the whole Map once it is large would cost a
 * walk of all of it per mark whenever that many are recent.
 */
import { StampQueue } from './stamp-queue.js'

export class RecentMarks<K> {
  private readonly marks = new Map<K, number>()
  private readonly order = new StampQueue<K>((key) => this.marks.get(key))

  constructor(private readonly keepMs: number) {}

  /** Marks `key` at `at` (epoch ms, from a clock that the marks' times follow in order). */
  mark(key: K, at: number): void {
    this.marks.set(key, at)
    this.order.push(key, at)
    this.order.deleteStampedBefore(at - this.keepMs, this.marks)
    // a key marked again leaves its older occurrence behind
    this.order.keepNear(this.marks.size)
  }

  /** When `key` was marked, if it still is (a reader checks the age it allows itself). */
  get(key: K): number | undefined {
    return this.marks.get(key)
  }

  delete(key: K): void {
    this.marks.delete(key)
  }

  get size(): number {
    return this.marks.size
  }
}
