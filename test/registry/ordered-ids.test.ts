/**
 * OrderedIds (src/registry/ordered-ids.ts) lists a Map's ids in the stores' byte order from any
 * cursor, through additions and deletions made between reads and during one.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { compareIds } from '../../src/store/fleet-reads.js'
import { OrderedIds } from '../../src/registry/ordered-ids.js'
import { seededRandom } from '../helpers/random.js'

/** A Map and its ordered ids, changed together as DeviceDirectory changes them. */
function indexed() {
  const map = new Map<string, number>()
  const order = new OrderedIds((id) => map.has(id))
  return {
    map,
    put(id: string) {
      if (!map.has(id)) order.noteAdded(id)
      map.set(id, 1)
    },
    delete(id: string) {
      if (map.delete(id)) order.noteDeleted()
    },
    after: (cursor?: string) => [...order.after(cursor, () => map.keys())],
    walk: (cursor?: string) => order.after(cursor, () => map.keys())
  }
}

const expected = (map: Map<string, number>, cursor?: string) =>
  [...map.keys()].sort(compareIds).filter((id) => cursor === undefined || compareIds(id, cursor) > 0)

test('matches a sort of the Map from every cursor, through random additions and deletions', () => {
  const ids = indexed()
  // additions, repeats and deletions in no fixed pattern
  const random = seededRandom(7)
  for (let step = 0; step < 3000; step++) {
    const id = `d${random(500)}`
    if (random(3) === 0) ids.delete(id)
    else ids.put(id)
    // reads now and then, so changes pile up between them
    if (random(10) === 0) {
      const cursor = random(4) === 0 ? undefined : `d${random(500)}`
      assert.deepEqual(ids.after(cursor), expected(ids.map, cursor), `step ${step}, after ${cursor}`)
    }
  }
  assert.deepEqual(ids.after(), expected(ids.map))
})

test('orders by UTF-8 bytes, as the stores do, not by UTF-16 code units', () => {
  const ids = indexed()
  // U+FF21 (one code unit, 0xFF21) sorts after U+1F600 (surrogates 0xD83D…) in UTF-16, before it in UTF-8
  for (const id of ['b', '\u{1F600}', '\uFF21', 'a']) ids.put(id)
  assert.deepEqual(ids.after(), ['a', 'b', '\uFF21', '\u{1F600}'])
  ids.put('\uE000')
  assert.deepEqual(ids.after('\uE000'), ['\uFF21', '\u{1F600}'])
})

test('an iteration walks the order as it began: ids added meanwhile are not visited, ids deleted meanwhile are skipped', () => {
  const ids = indexed()
  for (const id of ['a', 'b', 'c', 'd']) ids.put(id)
  assert.deepEqual(ids.after(), ['a', 'b', 'c', 'd'])
  const walk = ids.walk()
  const seen = [walk.next().value]
  ids.delete('c')
  ids.put('bb')
  // another read in the middle brings the order up to date without disturbing the walk
  assert.deepEqual(ids.after('a'), ['b', 'bb', 'd'])
  for (let r = walk.next(); !r.done; r = walk.next()) seen.push(r.value)
  assert.deepEqual(seen, ['a', 'b', 'd'])
})
