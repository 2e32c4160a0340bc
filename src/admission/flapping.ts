/**
 * Flapping detection, as EMQX's `flapping_detect`: a device that connects more than
 * `maxConnects` times within a minute is refused for `banMs`. Every connect stores a session,
 * logs its events and answers its watchers, so a device stuck in a reconnect loop — a broken
 * firmware, a client that gives up on every CONNACK — would otherwise take the store's write
 * path from every other device; a device that merely reconnects after a network blip is nowhere
 * near the limit.
 *
 * Counted per device, whatever client ids and protocols it uses. Only connects whose
 * credentials were right are counted (wrong ones are the login throttle's), so nobody can have
 * another device banned by guessing its token.
 *
 * Memory is small and bounded, since every connecting device has an entry for a minute: one
 * number per device (when its minute began and its count, packed), and the device queued once
 * per minute it begins (collections/stamp-queue.ts: asking the Map for its oldest key would walk
 * the holes its deletions leave, on every connect). Each connect drops a stale entry or two, and
 * at most `maxKeys` devices are kept, the one whose minute began first forgotten first. (Until
 * 2026-12-08 it was the one that connected longest ago, which kept a device in a reconnect loop
 * at the back. Now, if more than `maxKeys` other devices begin their minute before such a device
 * reaches its limit, its count starts again: at the default 100,000, a reconnect wave of a whole
 * large fleet within that device's own minute.) Banned devices are kept apart, until their ban
 * is over.
 * Pure and synchronous: the clock is injected, so tests step through time.
 */
import { StampQueue } from '../collections/stamp-queue.js'

export interface FlappingOptions {
  /** Connects a device may make within `windowMs`; the next one bans it. */
  maxConnects: number
  /** How long a ban lasts, ms. */
  banMs: number
  /** Most devices remembered. */
  maxKeys: number
  /** The counting window, ms (a minute). */
  windowMs?: number
  /** Milliseconds on a monotonic clock (default `performance.now`). */
  now?: () => number
}

export const FLAPPING_WINDOW_MS = 60_000

/** Stale entries dropped per connect at most: the rest go with the next connects. */
const DROPS_PER_CONNECT = 2

/**
 * The packing's base: a count is below it (`maxConnects` is at most MAX_CONNECTS). Small, so that
 * a packed number stays a small integer, which V8 keeps in the map's slot itself rather than as a
 * heap number of its own, for the first 12 days (2^30 / 1024 seconds) of a hub's run.
 */
const COUNT_BASE = 1024

/** The most connects a minute the detection can count. */
export const MAX_CONNECTS = COUNT_BASE - 1

export class FlappingDetector {
  /** deviceId → windowStart (s, since `epoch`) × COUNT_BASE + connects counted in that window. */
  private readonly counts = new Map<string, number>()
  /** The counted devices by when their window began (its stamp: windowStart). */
  private readonly windows = new StampQueue<string>((deviceId) => {
    const packed = this.counts.get(deviceId)
    return packed === undefined ? undefined : Math.floor(packed / COUNT_BASE)
  })
  /** deviceId → when its ban ends (ms). */
  private readonly bans = new Map<string, number>()
  /** The banned devices by when their ban ends (its stamp), which is the order they were banned in. */
  private readonly banEnds = new StampQueue<string>((deviceId) => this.bans.get(deviceId))
  private readonly epoch: number
  private readonly windowMs: number
  private readonly now: () => number

  constructor(private readonly options: FlappingOptions) {
    if (!(options.maxConnects >= 1 && options.maxConnects <= MAX_CONNECTS && options.banMs >= 1 && options.maxKeys >= 1)) {
      throw new RangeError(`flapping detection needs maxConnects between 1 and ${MAX_CONNECTS}, and banMs and maxKeys of at least 1`)
    }
    this.windowMs = options.windowMs ?? FLAPPING_WINDOW_MS
    // monotonic: a wall clock stepped back (NTP at boot) would make counts negative and bans long
    this.now = options.now ?? (() => performance.now())
    this.epoch = this.now()
  }

  /**
   * Counts a connect of `deviceId` with the right credentials; answers 0 when it may go on, or
   * the ms its device stays banned (this connect is refused, and not counted).
   */
  connect(deviceId: string): number {
    const now = this.now()
    const bannedUntil = this.bans.get(deviceId)
    if (bannedUntil !== undefined) {
      if (bannedUntil > now) return bannedUntil - now
      this.bans.delete(deviceId)
      this.counts.delete(deviceId)
    }
    this.dropStale(now)
    const second = Math.floor((now - this.epoch) / 1000)
    const packed = this.counts.get(deviceId)
    let windowStart = second
    let connects = 1
    if (packed !== undefined) {
      const start = Math.floor(packed / COUNT_BASE)
      if ((second - start) * 1000 < this.windowMs) {
        windowStart = start
        connects = (packed % COUNT_BASE) + 1
      }
    }
    if (connects > this.options.maxConnects) {
      this.counts.delete(deviceId)
      // its window's occurrence stays queued behind older ones: a device banned again and again
      // would otherwise leave one per ban
      this.windows.keepNear(this.counts.size)
      const ends = now + this.options.banMs
      this.bans.set(deviceId, ends)
      this.banEnds.push(deviceId, ends)
      if (this.bans.size > this.options.maxKeys) this.banEnds.deleteOldestFrom(this.bans)
      return this.options.banMs
    }
    // a value changed in place keeps the device where the queue has it; a new window queues it anew
    this.counts.set(deviceId, windowStart * COUNT_BASE + connects)
    if (connects === 1) this.windows.push(deviceId, windowStart)
    if (this.counts.size > this.options.maxKeys) this.windows.deleteOldestFrom(this.counts)
    return 0
  }

  /** Occurrences in its queues (for tests: they stay within about twice the devices remembered). */
  get queued(): number {
    return this.windows.length + this.banEnds.length
  }

  /** Devices remembered (counted or banned): what the detector holds. */
  get size(): number {
    return this.counts.size + this.bans.size
  }

  /**
   * Drops up to DROPS_PER_CONNECT devices whose window is over (they count nothing any more), and a
   * ban that is over. The old occurrences the queue passes over on the way are not counted: O(1)
   * a connect, amortized.
   */
  private dropStale(now: number): void {
    const banned = this.banEnds.oldest()
    if (banned !== undefined && this.banEnds.oldestStamp() <= now) {
      this.bans.delete(banned)
      this.banEnds.shift()
    }
    const second = Math.floor((now - this.epoch) / 1000)
    for (let dropped = 0; dropped < DROPS_PER_CONNECT; dropped++) {
      const deviceId = this.windows.oldest()
      if (deviceId === undefined || (second - this.windows.oldestStamp()) * 1000 < this.windowMs) return
      this.counts.delete(deviceId)
      this.windows.shift()
    }
  }
}
