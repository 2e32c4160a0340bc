/**
 * The queue beside a Map that forgets its oldest entries: oldest first, old occurrences of a
 * re-stamped or deleted key passed over, and the order kept across the copies that give back
 * the space in front of it.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { StampQueue } from '../../src/collections/stamp-queue.js'

/** A Map and its queue, as an owner keeps them: every new stamp queued. */
function owner() {
  const values = new Map<string, number>()
  const queue = new StampQueue<string>((key) => values.get(key))
  const stamp = (key: string, at: number) => {
    values.set(key, at)
    queue.push(key, at)
  }
  const forgetOldest = () => {
    const key = queue.oldest()
    if (key === undefined) return undefined
    values.delete(key)
    queue.shift()
    return key
  }
  return { values, queue, stamp, forgetOldest }
}

describe('StampQueue', () => {
  it('answers the key stamped first, and keeps it until shifted', () => {
    const { queue, stamp } = owner()
    stamp('a', 1)
    stamp('b', 2)
    assert.equal(queue.oldest(), 'a')
    assert.equal(queue.oldestStamp(), 1)
    assert.equal(queue.oldest(), 'a', 'asking again does not remove it')
    queue.shift()
    assert.equal(queue.oldest(), 'b')
    queue.shift()
    assert.equal(queue.oldest(), undefined)
    assert.equal(queue.length, 0)
  })

  it('passes over the occurrence of a key stamped anew, and of a key deleted', () => {
    const { values, stamp, forgetOldest } = owner()
    stamp('a', 1)
    stamp('b', 2)
    stamp('c', 3)
    stamp('a', 4) // a begins again: its first occurrence is old now
    values.delete('b') // b went by its owner's hand
    assert.equal(forgetOldest(), 'c')
    assert.equal(forgetOldest(), 'a')
    assert.equal(values.size, 0)
    assert.equal(forgetOldest(), undefined)
  })

  it('takes a key deleted and stamped again with the same stamp as current', () => {
    const { values, queue, stamp } = owner()
    stamp('a', 5)
    values.delete('a')
    stamp('a', 5)
    assert.equal(queue.oldest(), 'a', 'the first occurrence stands for it: the same stamp, the same age')
    assert.equal(queue.length, 2)
  })

  it('keepNear drops the old occurrences once they outnumber the keys, and keeps the order', () => {
    const { values, queue, stamp } = owner()
    stamp('anchor', 0) // stays at the front, so nothing behind it is passed over
    for (let i = 1; i <= 5000; i++) stamp(`k${i % 10}`, i)
    assert.equal(queue.length, 5001)
    queue.keepNear(values.size)
    assert.equal(queue.length, values.size, 'only the current occurrence of each key is left')
    const out: string[] = []
    for (let key = queue.oldest(); key !== undefined; key = queue.oldest()) {
      out.push(key)
      queue.shift()
    }
    assert.deepEqual(out, ['anchor', ...Array.from({ length: 10 }, (_, i) => `k${(4991 + i) % 10}`)])
  })

  it('keeps the order across the copies that give back the space in front of it', () => {
    const { values, queue, stamp, forgetOldest } = owner()
    // a Map bounded at 500 keys with keys coming one after the other, and every third one
    // stamped again: what it holds must always be the newest 500 stamps
    let next = 0
    for (let round = 0; round < 20_000; round++) {
      const key = `k${next % 700}`
      stamp(key, next++)
      if (round % 3 === 0) stamp(`k${(next - 2) % 700}`, next++)
      while (values.size > 500) assert.notEqual(forgetOldest(), undefined, `round ${round}: the queue has no oldest key for a Map over its bound`)
      if (round % 997 === 0 || round === 19_999) {
        const stamps = [...values.values()].sort((x, y) => x - y)
        const oldest = queue.oldest()
        assert.equal(values.get(oldest!), stamps[0], `round ${round}: the queue's oldest is the Map's oldest`)
      }
    }
    // everything it holds comes out oldest first
    const out: number[] = []
    for (let key = queue.oldest(); key !== undefined; key = queue.oldest()) {
      out.push(values.get(key)!)
      values.delete(key)
      queue.shift()
    }
    assert.equal(out.length, 500)
    assert.deepEqual(out, [...out].sort((x, y) => x - y))
    assert.equal(queue.length, 0)
  })
})
