/**
 * The login throttle as device logins use it, the same in every transport. Two keys count each
 * wrong login: the client's address and the device id it claimed.
 *
 * - An address over its allowance is refused unseen (its credentials are not looked at) until
 *   its wait is over: that stops one host guessing, whatever device ids it tries.
 * - A device id over its allowance is not locked: anyone may know a device's id, and a lock
 *   would let them keep the real device out. Its logins are held instead, checked only once its
 *   wait is over, so guesses against one device from many addresses come one wait apart, while
 *   the real device still gets in (late). A right login forgets both keys' failures.
 *
 * A held login holds a connection and a timer, so one address may have only a few held at once;
 * past that its logins are refused (an address guessing at throttled ids is an attacker's).
 */
import { addressKey, type LoginThrottle } from './login-throttle.js'

export type LoginGate = { kind: 'check' } | { kind: 'refused'; waitMs: number } | { kind: 'held'; waitMs: number }

/** Logins one address may have held at once. */
export const MAX_HELD_PER_ADDRESS = 16

export class LoginGuard {
  /** Logins held now, by address key (only addresses that have some). */
  private readonly held = new Map<string, number>()

  constructor(private readonly throttle: LoginThrottle) {}

  /**
   * Holds a login the gate answered `held` for: `resume` runs once its wait is over (the caller
   * then asks the gate again). False, and nothing held, when its address has too many held.
   */
  hold(address: string | null | undefined, waitMs: number, resume: () => void): boolean {
    const key = addressKey(address ?? undefined)
    const held = this.held.get(key) ?? 0
    if (held >= MAX_HELD_PER_ADDRESS) return false
    this.held.set(key, held + 1)
    setTimeout(() => {
      const left = (this.held.get(key) ?? 1) - 1
      if (left > 0) this.held.set(key, left)
      else this.held.delete(key)
      resume()
    }, waitMs).unref()
    return true
  }

  /** What to do with a login from `address` claiming `deviceId`, before its credentials are checked. */
  gate(address: string | null | undefined, deviceId: string): LoginGate {
    const byAddress = this.throttle.waitOf(addressKey(address ?? undefined))
    if (byAddress > 0) return { kind: 'refused', waitMs: byAddress }
    const byDevice = this.throttle.waitOf(deviceKey(deviceId))
    if (byDevice > 0) return { kind: 'held', waitMs: byDevice }
    return { kind: 'check' }
  }

  /** Counts the login's outcome under both keys. */
  settle(address: string | null | undefined, deviceId: string, succeeded: boolean): void {
    const keys = [addressKey(address ?? undefined), deviceKey(deviceId)]
    for (const key of keys) {
      if (succeeded) this.throttle.succeeded(key)
      else this.throttle.failed(key)
    }
  }
}

function deviceKey(deviceId: string): string {
  return `device:${deviceId}`
}
