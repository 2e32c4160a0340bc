/**
 * Slows down guessing of credentials. Each key — a client address, a device id: the caller
 * chooses, and counts one attempt under every key it names — may fail `failuresAllowed` times
 * within a minute; the failure past that throttles the key for `firstBackoffMs` (a second unless
 * set otherwise: IOTHUB_LOGIN_BACKOFF_FIRST), and every further failure before the key is
 * forgotten doubles the wait, up to `backoffMaxMs`. A throttled key is not
 * asked for credentials at all (its attempts are refused unseen, so they neither count nor
 * tell right from wrong). A success forgets the key; so does a minute without failures after
 * its last wait is over.
 *
 * Memory is bounded: at most `maxKeys` keys are remembered, and the one that failed longest ago
 * is forgotten first (collections/oldest-keys.ts: forgetting one costs the same however many
 * went before it). Spreading guesses over more addresses than that buys an attacker an early
 * release, not more guesses per address than a fresh one gets.
 *
 * Pure and synchronous: the clock is injected, so tests step through time.
 */
import { OldestKeys } from '../collections/oldest-keys.js'

export interface LoginThrottleOptions {
  /** Failures a key may make within `windowMs` before it is throttled. */
  failuresAllowed: number
  /** Longest wait, ms. */
  backoffMaxMs: number
  /** Most keys remembered. */
  maxKeys: number
  /** The counting window, ms (a minute). */
  windowMs?: number
  /** The first wait, ms (a second, or `backoffMaxMs` if that is shorter). */
  firstBackoffMs?: number
  now?: () => number
}

interface KeyState {
  /** When the current window of counted failures began. */
  windowStart: number
  failures: number
  /** The last wait given; 0 while the key has not been throttled. */
  backoff: number
  blockedUntil: number
  lastFailure: number
}

export const LOGIN_WINDOW_MS = 60_000
export const FIRST_BACKOFF_MS = 1000

export class LoginThrottle {
  private readonly keys = new Map<string, KeyState>()
  private readonly oldest = new OldestKeys(this.keys)
  private readonly failuresAllowed: number
  private readonly backoffMaxMs: number
  private readonly maxKeys: number
  private readonly windowMs: number
  private readonly firstBackoffMs: number
  private readonly now: () => number

  constructor(options: LoginThrottleOptions) {
    if (!(options.failuresAllowed >= 1 && options.backoffMaxMs >= 1 && options.maxKeys >= 1)) throw new RangeError('a login throttle needs failuresAllowed, backoffMaxMs and maxKeys of at least 1')
    this.failuresAllowed = options.failuresAllowed
    this.backoffMaxMs = options.backoffMaxMs
    this.maxKeys = options.maxKeys
    this.windowMs = options.windowMs ?? LOGIN_WINDOW_MS
    this.firstBackoffMs = Math.min(options.firstBackoffMs ?? FIRST_BACKOFF_MS, this.backoffMaxMs)
    this.now = options.now ?? Date.now
  }

  /** Ms `key` must still wait before its credentials are looked at; 0 when it may try now. */
  waitOf(key: string): number {
    const state = this.current(key, this.now())
    return state ? Math.max(0, state.blockedUntil - this.now()) : 0
  }

  /** The longest wait of any of `keys`. */
  waitOfAny(keys: readonly string[]): number {
    let wait = 0
    for (const key of keys) wait = Math.max(wait, this.waitOf(key))
    return wait
  }

  /** Counts a wrong login under `key`; answers the wait it brings (0 while failures are still allowed). */
  failed(key: string): number {
    const now = this.now()
    let state = this.current(key, now)
    if (state) {
      this.keys.delete(key) // re-inserted below: the map's order is the order of last failures
    } else {
      state = { windowStart: now, failures: 0, backoff: 0, blockedUntil: 0, lastFailure: now }
    }
    state.lastFailure = now
    if (state.backoff === 0) {
      if (now - state.windowStart >= this.windowMs) {
        state.windowStart = now
        state.failures = 0
      }
      state.failures++
      if (state.failures > this.failuresAllowed) state.backoff = this.firstBackoffMs
    } else {
      state.backoff = Math.min(state.backoff * 2, this.backoffMaxMs)
    }
    if (state.backoff > 0) state.blockedUntil = now + state.backoff
    this.keys.set(key, state)
    this.oldest.keepAtMost(this.maxKeys)
    return Math.max(0, state.blockedUntil - now)
  }

  /** A right login under `key`: its failures are forgotten. */
  succeeded(key: string): void {
    this.keys.delete(key)
  }

  /** Keys remembered now (for tests and metrics). */
  get size(): number {
    return this.keys.size
  }

  /** The state of `key`, or undefined when there is none worth keeping (it is dropped then). */
  private current(key: string, now: number): KeyState | undefined {
    const state = this.keys.get(key)
    if (!state) return undefined
    const quiet = now - Math.max(state.lastFailure, state.blockedUntil) >= this.windowMs
    if (!quiet) return state
    this.keys.delete(key)
    return undefined
  }
}

/**
 * The throttle key of a client address. An IPv6 host usually holds a whole /64, so its
 * addresses count as one; an IPv4 address mapped into IPv6 counts as the IPv4 address.
 */
export function addressKey(address: string | undefined): string {
  if (address === undefined || address === '') return 'addr:unknown'
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped) return `addr:${mapped[1]}`
  if (!address.includes(':')) return `addr:${address}`
  const groups = expandIpv6(address.split('%')[0]!)
  return groups ? `addr:${groups.slice(0, 4).join(':')}::/64` : `addr:${address}`
}

/** The eight groups of an IPv6 address, or undefined when it is not one. */
function expandIpv6(address: string): string[] | undefined {
  const halves = address.split('::')
  if (halves.length > 2) return undefined
  const head = halves[0] === '' ? [] : halves[0]!.split(':')
  const tail = halves.length === 2 ? (halves[1] === '' ? [] : halves[1]!.split(':')) : []
  const missing = 8 - head.length - tail.length
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail]
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/i.test(g))) return undefined
  return groups.map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
}
