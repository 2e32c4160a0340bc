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
 * number per device (when its minute began and its count, packed), kept in the order of their
 * last connect — each connect drops a stale entry or two from the front — and at most `maxKeys`
 * of them (the oldest is forgotten first). Banned devices are kept apart, until their ban is over.
 * Pure and synchronous: the clock is injected, so tests step through time.
 */

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
  /** deviceId → when its ban ends (ms). */
  private readonly bans = new Map<string, number>()
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
      // moved to the back: the map stays in the order of last connects
      this.counts.delete(deviceId)
    }
    if (connects > this.options.maxConnects) {
      this.bans.set(deviceId, now + this.options.banMs)
      if (this.bans.size > this.options.maxKeys) this.bans.delete(this.bans.keys().next().value!)
      return this.options.banMs
    }
    this.counts.set(deviceId, windowStart * COUNT_BASE + connects)
    if (this.counts.size > this.options.maxKeys) this.counts.delete(this.counts.keys().next().value!)
    return 0
  }

  /** Devices remembered (counted or banned): what the detector holds. */
  get size(): number {
    return this.counts.size + this.bans.size
  }

  /**
   * Drops up to two entries from the front whose window is over (they count nothing any more),
   * and a ban that is over: bans are made in the order they end, all being as long.
   */
  private dropStale(now: number): void {
    const firstBan = this.bans.entries().next()
    if (!firstBan.done && firstBan.value[1] <= now) this.bans.delete(firstBan.value[0])
    const second = Math.floor((now - this.epoch) / 1000)
    for (let i = 0; i < 2; i++) {
      const first = this.counts.entries().next()
      if (first.done) return
      const [deviceId, packed] = first.value
      if ((second - Math.floor(packed / COUNT_BASE)) * 1000 < this.windowMs) return
      this.counts.delete(deviceId)
    }
  }
}
