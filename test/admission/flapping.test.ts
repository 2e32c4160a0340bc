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

  it('over maxKeys forgets the device whose minute began first, and keeps counting the others', () => {
    const { d, clock } = detector({ maxKeys: 3 })
    d.connect('a')
    clock.now += 1000
    d.connect('b')
    d.connect('b')
    clock.now += 1000
    d.connect('c')
    d.connect('a') // a's minute still began first
    clock.now += 1000
    d.connect('d') // one too many: a is forgotten
    assert.equal(d.size, 3)
    assert.equal(d.connect('b'), 0, "b's two connects were kept: its third is allowed")
    assert.equal(d.connect('b'), 30_000, '… and its fourth bans it')
    for (let i = 0; i < 3; i++) assert.equal(d.connect('a'), 0, `a was forgotten: it counts afresh (connect ${i + 1})`)
    assert.equal(d.connect('a'), 30_000)
  })

  it('keeps its bound and its counts through hours of devices coming and going', () => {
    const { d, clock } = detector({ maxConnects: 5, maxKeys: 1000 })
    // 3,000 devices, each reconnecting every ~2 minutes; one flapper among them, always banned
    // again within its minute
    let bans = 0
    for (let second = 0; second < 3 * 3600; second++) {
      for (let k = 0; k < 25; k++) {
        assert.equal(d.connect(`device-${(second * 25 + k) % 3000}`), 0, `second ${second}: a device reconnecting every two minutes is never banned`)
      }
      if (d.connect('flapper') === 30_000) bans++
      assert.ok(d.size <= 1000 + 1, `second ${second}: ${d.size} remembered`)
      clock.now += 1000
    }
    // five connects allowed, the sixth bans it for 30 s, then it counts afresh: one ban every 35 s
    assert.ok(bans >= 300 && bans <= 310, `the flapper was banned ${bans} times in three hours`)
  })

  it('forgets the ban that began first when more devices are banned than maxKeys', () => {
    const { d } = detector({ maxKeys: 2, maxConnects: 1 })
    for (const device of ['a', 'b', 'c']) {
      assert.equal(d.connect(device), 0)
      assert.equal(d.connect(device), 30_000, `${device} banned`)
    }
    assert.equal(d.connect('a'), 0, "a's ban, the first, was forgotten: it connects again")
    assert.ok(d.connect('b') > 0, 'b is still banned')
    assert.ok(d.connect('c') > 0, 'c is still banned')
  })

  it('holds its queues within about twice the devices it remembers, however often they are banned', () => {
    // a ban of 1 s and one connect allowed: 100 devices in a reconnect loop, each banned every
    // other second, each ban leaving its minute's entry behind in the queue — 3,000 a minute
    const { d, clock } = detector({ maxConnects: 1, banMs: 1000, maxKeys: 1000 })
    let most = 0
    for (let second = 0; second < 600; second++) {
      // a quiet device's minute at the front of the queue, behind which the left entries pile up
      if (second % 60 === 0) d.connect('quiet')
      for (let device = 0; device < 100; device++) {
        d.connect(`looping-${device}`)
        d.connect(`looping-${device}`)
      }
      clock.now += 1000
      most = Math.max(most, d.queued)
      assert.ok(d.queued <= 2 * d.size + 1024 + 200, `second ${second}: ${d.queued} queued for ${d.size} remembered`)
    }
    assert.ok(most > 1024, `the queues were put to the test: ${most} at most`)
  })

  it('refuses options that cannot work', () => {
    assert.throws(() => new FlappingDetector({ maxConnects: 0, banMs: 1000, maxKeys: 10 }), RangeError)
    assert.throws(() => new FlappingDetector({ maxConnects: 3, banMs: 0, maxKeys: 10 }), RangeError)
  })
})
