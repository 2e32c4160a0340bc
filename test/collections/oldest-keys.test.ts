/**
 * Deleting a Map's oldest keys through one kept iterator answers what asking the Map for its
 * first key answers, whatever its owner deletes or moves to the back meanwhile.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { OldestKeys } from '../../src/collections/oldest-keys.js'

describe('OldestKeys', () => {
  it('deletes the key the Map holds first, through owner deletions and keys moved to the back', () => {
    const bounded = new Map<number, number>()
    const oldest = new OldestKeys(bounded)
    const reference = new Map<number, number>()
    // a fixed pseudo-random walk: keys set, set again (moved to the back), deleted by the owner,
    // and the Map held at 300 by deleting its oldest — the two Maps must stay the same
    let seed = 7
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648
    for (let step = 0; step < 60_000; step++) {
      const key = Math.floor(random() * 1000)
      const r = random()
      for (const map of [bounded, reference]) {
        if (r < 0.15) map.delete(key)
        else if (r < 0.45 && map.has(key)) {
          map.delete(key)
          map.set(key, step)
        } else map.set(key, step)
      }
      oldest.keepAtMost(300)
      assert.ok(bounded.size <= 300, `step ${step}: held at 300`)
      while (reference.size > 300) reference.delete(reference.keys().next().value!)
      if (step % 1000 === 0) assert.deepEqual([...bounded.keys()], [...reference.keys()], `step ${step}`)
    }
    assert.deepEqual([...bounded.entries()], [...reference.entries()])
  })

  it('goes on right after letting its iterator go while the Map was well under its bound', () => {
    const map = new Map<number, number>()
    const oldest = new OldestKeys(map)
    for (let i = 0; i < 20; i++) map.set(i, i)
    oldest.keepAtMost(10) // 0–9 go
    for (let i = 10; i < 18; i++) map.delete(i) // the owner's deletions: 2 left, under half the bound
    oldest.keepAtMost(10)
    for (let i = 20; i < 30; i++) map.set(i, i)
    oldest.keepAtMost(10)
    assert.deepEqual([...map.keys()], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29])
  })

  it('answers false for an empty Map, and goes on once keys come again', () => {
    const map = new Map<string, number>()
    const oldest = new OldestKeys(map)
    assert.equal(oldest.deleteOldest(), false)
    map.set('a', 1)
    map.set('b', 2)
    assert.equal(oldest.deleteOldest(), true)
    assert.deepEqual([...map.keys()], ['b'])
    assert.equal(oldest.deleteOldest(), true)
    assert.equal(oldest.deleteOldest(), false)
    map.set('c', 3)
    assert.equal(oldest.deleteOldest(), true)
    assert.equal(map.size, 0)
  })
})
