/**
 * A Few (src/registry/few.ts) holds what a Map would, in insertion order, as it grows from one
 * value to an array and to a Map and shrinks back.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { fewDelete, fewGet, fewMap, fewPut, fewSize, fewValues, type Few } from '../../src/registry/few.js'
import { seededRandom } from '../helpers/random.js'

interface Item {
  key: string
  n: number
}
const keyOf = (i: Item): string => i.key

test('behaves as a Map by key through every form, in insertion order', () => {
  let few: Few<string, Item> | undefined
  const map = new Map<string, Item>()
  // every key and both operations come up, in no fixed pattern
  const random = seededRandom(3)
  let largest = 0
  for (let step = 0; step < 6000; step++) {
    const key = `k${random(40)}`
    // the last thousand steps only delete: every Few shrinks back through its forms to nothing
    if (step >= 5000 || random(3) === 0) {
      few = fewDelete(few, key, keyOf)
      if (map.size > 1 && fewSize(few) === 1) assert.ok(!(few instanceof Map), `step ${step}: one value left is held as itself`)
      map.delete(key)
    } else {
      const item = { key, n: step }
      few = fewPut(few, item, keyOf)
      map.set(key, item)
    }
    largest = Math.max(largest, map.size)
    assert.equal(fewSize(few), map.size, `step ${step}`)
    assert.deepEqual([...fewValues(few)], [...map.values()], `step ${step}`)
    assert.equal(fewGet(few, key, keyOf), map.get(key))
    assert.deepEqual(fewMap(few, keyOf) ?? new Map(), map)
    if (map.size === 0) assert.equal(few, undefined, 'an empty Few is undefined, so its key can go')
    if (map.size === 1) assert.equal(few, [...map.values()][0], 'one value is held as itself')
  }
  assert.ok(largest > 16, `grew into a Map (${largest} values at most)`)
})
