/** The login throttle as device logins use it (src/admission/login-guard.ts). */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LoginGuard, MAX_HELD_PER_ADDRESS } from '../../src/admission/login-guard.js'
import { LoginThrottle } from '../../src/admission/login-throttle.js'

describe('LoginGuard', () => {
  it('refuses a guessing address, holds a guessed-at device id, and lets the device in once it is right', () => {
    let now = 0
    const guard = new LoginGuard(new LoginThrottle({ failuresAllowed: 1, backoffMaxMs: 60_000, maxKeys: 100, now: () => now }))
    guard.settle('10.0.0.1', 'd', false)
    guard.settle('10.0.0.1', 'd', false)
    assert.equal(guard.gate('10.0.0.1', 'other').kind, 'refused', 'the address is throttled, whatever id it claims')
    assert.equal(guard.gate('10.0.0.2', 'd').kind, 'held', 'the device id is held, not locked')
    now += 1000
    assert.equal(guard.gate('10.0.0.2', 'd').kind, 'check')
    guard.settle('10.0.0.2', 'd', true)
    assert.equal(guard.gate('10.0.0.3', 'd').kind, 'check', 'a right login forgets the id')
  })

  it('holds at most MAX_HELD_PER_ADDRESS logins of one address at once', () => {
    const guard = new LoginGuard(new LoginThrottle({ failuresAllowed: 1, backoffMaxMs: 60_000, maxKeys: 100 }))
    const resumed: number[] = []
    for (let i = 0; i < MAX_HELD_PER_ADDRESS; i++) assert.equal(guard.hold('10.0.0.5', 60_000, () => resumed.push(i)), true)
    assert.equal(guard.hold('10.0.0.5', 60_000, () => resumed.push(-1)), false, 'one more is refused')
    assert.equal(guard.hold('10.0.0.6', 60_000, () => resumed.push(-2)), true, 'another address has its own')
    assert.deepEqual(resumed, [])
  })
})
