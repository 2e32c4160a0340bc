/**
 * The keys of a Map in the order their stamps were given, oldest first, for a Map that forgets
 * its oldest entries (a bound on its size, an expiry) without asking the Map for its first key.
 *
 * Why not the Map's own insertion order: V8 leaves a hole in a Map's table for each deleted
 * entry until the table is next rebuilt (when an insertion finds it full, or a deletion leaves
 * it a quarter full), and a fresh iterator skips the holes one by one. A Map whose front is
 * deleted while its back grows — the oldest forgotten as new keys come — makes every
 * `keys().next()` walk all the holes at its front: in steady state about as many as it has
 * entries. Flapping detection did that on every connect: 10–62 µs a connect with 60,000 devices
 * in its minute, against 0.5–1.6 with this queue (docs/perf-journal.md, "a Map's front, walked
 * on every connect").
 *
 * Each key is queued with a stamp, a number its owner keeps with the key's value (when its
 * window began, when its ban ends); queued again with a new stamp, its older occurrence is
 * passed over once it reaches the front, its stamp being no longer the key's. So the owner may
 * change or delete a key's value at any time and only tells the queue of new stamps. Stamps are
 * given in non-decreasing order, so the front holds the oldest. Every operation is O(1),
 * amortized: an occurrence is queued once and passed once, and the space in front of the head
 * is given back once it is half the queue. Old occurrences behind a front that stays (a key
 * re-stamped or deleted often while an older one lives on) are what the queue can hold beyond
 * its owner's keys: an owner whose keys are re-stamped or deleted that way calls `keepNear`.
 */
export class StampQueue<K> {
  private keys: K[] = []
  private stamps: number[] = []
  private head = 0

  /**
   * @param stampOf the key's stamp as its owner holds it now (undefined: the key is gone), so
   * that an occurrence whose stamp differs is known to be an old one
   */
  constructor(private readonly stampOf: (key: K) => number | undefined) {}

  /** Queues `key` with `stamp`, not less than any stamp queued before. */
  push(key: K, stamp: number): void {
    this.keys.push(key)
    this.stamps.push(stamp)
  }

  /**
   * Passes over the old occurrences at the front; answers the oldest key whose stamp is still its
   * own (it stays queued: `shift` removes it), or undefined when there is none.
   */
  oldest(): K | undefined {
    while (this.head < this.keys.length) {
      const key = this.keys[this.head]!
      if (this.stampOf(key) === this.stamps[this.head]) return key
      this.shift()
    }
    return undefined
  }

  /** The stamp of the key `oldest` answered; only after it answered one. */
  oldestStamp(): number {
    return this.stamps[this.head]!
  }

  /** Removes the front occurrence (the one `oldest` answered). */
  shift(): void {
    if (this.head >= this.keys.length) return
    this.keys[this.head] = undefined as K
    this.head++
    if (this.head === this.keys.length) {
      this.keys = []
      this.stamps = []
      this.head = 0
    } else if (this.head >= COMPACT_AFTER && this.head * 2 >= this.keys.length) {
      this.keys = this.keys.slice(this.head)
      this.stamps = this.stamps.slice(this.head)
      this.head = 0
    }
  }

  /** Deletes the oldest key from `map`, its owner, and shifts it; false when none is queued. */
  deleteOldestFrom(map: { delete(key: K): unknown }): boolean {
    const key = this.oldest()
    if (key === undefined) return false
    map.delete(key)
    this.shift()
    return true
  }

  /** Deletes from `map`, its owner, every key stamped before `stamp`, oldest first. */
  deleteStampedBefore(stamp: number, map: { delete(key: K): unknown }): void {
    for (let key = this.oldest(); key !== undefined && this.oldestStamp() < stamp; key = this.oldest()) {
      map.delete(key)
      this.shift()
    }
  }

  /**
   * Drops every old occurrence once the queue holds more than twice `keys` (its owner's count of
   * keys) and COMPACT_AFTER more: one pass, paid for by the occurrences it drops, so the queue
   * stays within about twice its owner's keys however often they are re-stamped or deleted.
   */
  keepNear(keys: number): void {
    if (this.length <= 2 * keys + COMPACT_AFTER) return
    const kept: K[] = []
    const stamps: number[] = []
    for (let i = this.head; i < this.keys.length; i++) {
      const key = this.keys[i]!
      if (this.stampOf(key) !== this.stamps[i]) continue
      kept.push(key)
      stamps.push(this.stamps[i]!)
    }
    this.keys = kept
    this.stamps = stamps
    this.head = 0
  }

  /** Occurrences queued, old ones not yet passed over included. */
  get length(): number {
    return this.keys.length - this.head
  }
}

/** Fewest passed occurrences worth a copy of the rest. */
const COMPACT_AFTER = 1024
