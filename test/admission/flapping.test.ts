/**
 * Flapping detection on a clock the test steps: connects allowed per window, the ban and its
 * end, a fresh window, devices apart, and the bound on what it remembers.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { FlappingDetector, type FlappingOptions } from '../../src/admission/flapping.js'

function detector(options: Partial<FlappingOptions> = {}) {
  const clock = { now: 1_000_000 }
  const d = new FlappingDetector({ maxConnects: 3, banMs: 30_000, maxKeys: 100, now: () => clock.now, ...options })
  return { d, clock }
}

describe('FlappingDetector', () => {
  it('admits maxConnects connects within a minute; the next bans the device for banMs', () => {
    const { d, clock } = detector()
    for (let i = 0; i < 3; i++) {
      assert.equal(d.connect('a'), 0, `connect ${i + 1}`)
      clock.now += 1000
    }
    assert.equal(d.connect('a'), 30_000)
    clock.now += 10_000
    assert.equal(d.connect('a'), 20_000, 'a connect during the ban is refused with what is left of it')
    clock.now += 20_000
    assert.equal(d.connect('a'), 0, 'the ban is over: a fresh count')
    assert.equal(d.connect('a'), 0)
    assert.equal(d.connect('a'), 0)
    assert.equal(d.connect('a'), 30_000)
  })

  it('counts each minute afresh: a device reconnecting now and then is never banned', () => {
    const { d, clock } = detector()
    for (let i = 0; i < 30; i++) {
      assert.equal(d.connect('a'), 0, `connect ${i + 1}`)
      clock.now += 25_000 // under three a minute
    }
  })

  it('counts devices apart', () => {
    const { d } = detector()
    for (let i = 0; i < 3; i++) d.connect('a')
    assert.ok(d.connect('a') > 0)
    assert.equal(d.connect('b'), 0, 'another device is not held by the first one')
  })

  it('remembers at most maxKeys devices, and lets go of those whose minute and ban are over', () => {
    const { d, clock } = detector({ maxKeys: 10 })
    for (let i = 0; i < 50; i++) d.connect(`device-${i}`)
    assert.equal(d.size, 10)
    for (let i = 0; i < 3; i++) d.connect('flapper')
    assert.ok(d.connect('flapper') > 0)
    clock.now += 61_000
    // each connect drops stale entries from the front: the quiet fleet's entries and the ban that is over go
    for (let i = 0; i < 8; i++) assert.equal(d.connect(`later-${i}`), 0)
    assert.equal(d.size, 8)
  })

  it('refuses options that cannot work', () => {
    assert.throws(() => new FlappingDetector({ maxConnects: 0, banMs: 1000, maxKeys: 10 }), RangeError)
    assert.throws(() => new FlappingDetector({ maxConnects: 3, banMs: 0, maxKeys: 10 }), RangeError)
  })
})
