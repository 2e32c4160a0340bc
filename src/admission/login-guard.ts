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
 */
import { addressKey, type LoginThrottle } from './login-throttle.js'

export type LoginGate = { kind: 'check' } | { kind: 'refused'; waitMs: number } | { kind: 'held'; waitMs: number }

export class LoginGuard {
  constructor(private readonly throttle: LoginThrottle) {}

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
