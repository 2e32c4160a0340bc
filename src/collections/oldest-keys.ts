/**
 * Deletes a Map's oldest keys — the first in its insertion order — for a Map bounded by
 * forgetting its oldest, without walking the holes earlier deletions left at its front (why that
 * walk costs about as much as the Map is large: stamp-queue.ts).
 *
 * One iterator is kept across calls. Every entry before its position was either deleted (here,
 * or by the Map's owner) or deleted and set again by the owner, which moves it to the back, where
 * the iterator meets it again; a Map only ever adds at its back. So the next entry it gives is
 * the oldest one, and each hole is passed once: O(1) a deletion, amortized, and nothing kept per
 * entry.
 */
export class OldestKeys<K> {
  private cursor: Iterator<K> | undefined

  constructor(private readonly map: Map<K, unknown>) {}

  /** Deletes the oldest keys until the Map holds at most `max`. */
  keepAtMost(max: number): void {
    for (let excess = this.map.size - max; excess > 0 && this.deleteOldest(); excess--) {
      // one deleted
    }
    // the iterator holds on to the tables V8 rebuilt since it last moved, and what they held:
    // let it go while the Map is well under its bound (a new one walks the holes once)
    if (this.map.size < max / 2) this.cursor = undefined
  }

  /** Deletes the oldest key; false when the Map is empty. */
  deleteOldest(): boolean {
    let next = (this.cursor ??= this.map.keys()).next()
    if (next.done === true) {
      // an iterator that has met the end stays there: keys set since need a new one
      this.cursor = this.map.keys()
      next = this.cursor.next()
      if (next.done === true) return false
    }
    this.map.delete(next.value)
    return true
  }
}
