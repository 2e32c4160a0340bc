/**
 * The ids of a Map in id order (`compareIds`: the stores' byte order), for listings and fleet
 * walks that page by keyset over the caches: a page is a binary search and a walk of its own size,
 * where a scan of the whole Map per page made a walk of n devices cost n²/page comparisons.
 *
 * Kept lazily: additions and deletions only note that the order is stale (and which ids came),
 * and the next read brings it up to date in one pass — the new ids sorted, merged with the
 * ordered ones, ids no longer in the Map dropped. Creating ten thousand devices therefore costs
 * one merge at the next listing, not ten thousand insertions into a million-entry array.
 */
import { compareIds, sortIds } from '../store/fleet-reads.js'

export class OrderedIds {
  private ordered: string[] = []
  /** Ids added since the order was last brought up to date (may repeat, may be deleted since). */
  private added: string[] = []
  private deletions = false
  private built = false

  /** `has` is the Map's own: the truth of which ids exist. */
  constructor(private readonly has: (id: string) => boolean) {}

  /** An id was put in the Map that was not in it (a repeat is dropped at the next read all the same). */
  noteAdded(id: string): void {
    if (this.built) this.added.push(id)
  }

  /** An id was deleted from the Map. */
  noteDeleted(): void {
    if (this.built) this.deletions = true
  }

  /**
   * The ids after `after` (exclusive; from the first when undefined), in order. The order is a
   * snapshot taken when iteration begins: ids added meanwhile are not visited, ids deleted
   * meanwhile are skipped.
   */
  *after(after: string | undefined, all: () => Iterable<string>): Generator<string> {
    const ordered = this.current(all)
    let i = 0
    if (after !== undefined) {
      let hi = ordered.length
      while (i < hi) {
        const mid = (i + hi) >>> 1
        if (compareIds(ordered[mid]!, after) <= 0) i = mid + 1
        else hi = mid
      }
    }
    for (; i < ordered.length; i++) {
      const id = ordered[i]!
      if (this.has(id)) yield id
    }
  }

  private current(all: () => Iterable<string>): string[] {
    if (!this.built) {
      this.ordered = sortIds([...all()])
      this.built = true
      this.added = []
      this.deletions = false
      return this.ordered
    }
    if (this.added.length === 0 && !this.deletions) return this.ordered
    const fresh = sortIds(this.added)
    const merged: string[] = []
    let i = 0
    let j = 0
    const keep = (id: string) => {
      // an id added twice, or added and deleted again, is taken once, and only if it still exists
      const last = merged.length > 0 ? merged[merged.length - 1] : undefined
      if (id !== last && this.has(id)) merged.push(id)
    }
    const old = this.ordered
    while (i < old.length || j < fresh.length) {
      if (j >= fresh.length || (i < old.length && compareIds(old[i]!, fresh[j]!) <= 0)) keep(old[i++]!)
      else keep(fresh[j++]!)
    }
    this.ordered = merged
    this.added = []
    this.deletions = false
    return merged
  }
}
