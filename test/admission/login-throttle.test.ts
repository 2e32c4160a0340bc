/**
 * The login throttle on a clock the test steps: failures allowed per window, the doubling wait
 * and its cap, what a success and a quiet minute forget, separate keys, the bound on memory,
 * and the keys of client addresses.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { LoginThrottle, addressKey, type LoginThrottleOptions } from '../../src/admission/login-throttle.js'

function throttle(options: Partial<LoginThrottleOptions> = {}) {
  const clock = { now: 1_000_000 }
  const t = new LoginThrottle({ failuresAllowed: 3, backoffMaxMs: 60_000, maxKeys: 100, now: () => clock.now, ...options })
  return { t, clock }
}

describe('LoginThrottle', () => {
  it('allows failuresAllowed failures, then throttles the key for a second', () => {
    const { t } = throttle()
    assert.deepEqual([t.failed('a'), t.failed('a'), t.failed('a')], [0, 0, 0])
    assert.equal(t.waitOf('a'), 0, 'three failures are allowed')
    assert.equal(t.failed('a'), 1000)
    assert.equal(t.waitOf('a'), 1000)
  })

  it('lets the wait run down with the clock', () => {
    const { t, clock } = throttle()
    for (let i = 0; i < 4; i++) t.failed('a')
    clock.now += 400
    assert.equal(t.waitOf('a'), 600)
    clock.now += 600
    assert.equal(t.waitOf('a'), 0)
  })

  it('doubles the wait with each further failure, up to the cap', () => {
    const { t, clock } = throttle({ backoffMaxMs: 10_000 })
    for (let i = 0; i < 3; i++) t.failed('a')
    const waits: number[] = []
    for (let i = 0; i < 7; i++) {
      waits.push(t.failed('a'))
      clock.now += waits.at(-1)! // the next attempt comes once the wait is over
    }
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 10_000, 10_000, 10_000])
  })

  it('counts failures per window: failures a minute apart never throttle', () => {
    const { t, clock } = throttle()
    for (let i = 0; i < 10; i++) {
      assert.equal(t.failed('a'), 0, `failure ${i}`)
      clock.now += 20_001
    }
  })

  it('a success forgets the key', () => {
    const { t } = throttle()
    for (let i = 0; i < 4; i++) t.failed('a')
    t.succeeded('a')
    assert.equal(t.waitOf('a'), 0)
    assert.deepEqual([t.failed('a'), t.failed('a'), t.failed('a'), t.failed('a')], [0, 0, 0, 1000], 'counting starts afresh')
  })

  it('forgets a throttled key a quiet minute after its wait is over, so its waits start small again', () => {
    const { t, clock } = throttle()
    for (let i = 0; i < 6; i++) t.failed('a') // waits 1 s, 2 s, 4 s
    clock.now += 4000 + 59_999
    assert.equal(t.failed('a'), 8000, 'still remembered within the minute')
    clock.now += 8000 + 59_999
    assert.equal(t.waitOf('a'), 0)
    assert.equal(t.size, 1, 'remembered: the wait ended less than a minute ago')
    clock.now += 1
    assert.equal(t.waitOf('a'), 0)
    assert.equal(t.size, 0)
    assert.equal(t.failed('a'), 0)
  })

  it('keeps keys apart: one throttled address or device does not throttle another', () => {
    const { t } = throttle()
    for (let i = 0; i < 4; i++) t.failed('addr:10.0.0.1')
    assert.equal(t.waitOf('addr:10.0.0.2'), 0)
    assert.equal(t.waitOf('device:d1'), 0)
    t.failed('device:d1')
    assert.equal(t.waitOfAny(['addr:10.0.0.2', 'device:d1']), 0)
    assert.equal(t.waitOfAny(['addr:10.0.0.1', 'device:d1']), 1000)
  })

  it('remembers at most maxKeys keys, forgetting the one that failed longest ago', () => {
    const { t } = throttle({ maxKeys: 3, failuresAllowed: 1 })
    for (const key of ['a', 'b', 'c']) {
      t.failed(key)
      t.failed(key)
    }
    t.failed('a') // a failed last now: b is the oldest
    t.failed('d')
    assert.equal(t.size, 3)
    assert.equal(t.waitOf('b'), 0, 'b was forgotten')
    assert.ok(t.waitOf('a') > 0 && t.waitOf('c') > 0)
    for (let i = 0; i < 10_000; i++) t.failed(`spray-${i}`)
    assert.equal(t.size, 3)
  })

  it('a cap below a second makes the first wait the cap', () => {
    const { t } = throttle({ backoffMaxMs: 300, failuresAllowed: 1 })
    t.failed('a')
    assert.equal(t.failed('a'), 300)
  })
})

describe('addressKey', () => {
  it('keys IPv4 addresses, mapped or not, as themselves', () => {
    assert.equal(addressKey('192.0.2.7'), 'addr:192.0.2.7')
    assert.equal(addressKey('::ffff:192.0.2.7'), 'addr:192.0.2.7')
  })

  it('keys IPv6 addresses by their /64', () => {
    assert.equal(addressKey('2001:db8:1:2:aaaa::1'), 'addr:2001:db8:1:2::/64')
    assert.equal(addressKey('2001:0db8:0001:0002:bbbb:cccc:dddd:eeee'), 'addr:2001:db8:1:2::/64')
    assert.equal(addressKey('::1'), 'addr:0:0:0:0::/64')
    assert.equal(addressKey('fe80::1%eth0'), 'addr:fe80:0:0:0::/64')
  })

  it('keys what it cannot read as it is', () => {
    assert.equal(addressKey(undefined), 'addr:unknown')
    assert.equal(addressKey('not:an::address::'), 'addr:not:an::address::')
  })
})
