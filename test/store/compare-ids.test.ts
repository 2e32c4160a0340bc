/**
 * The order of ids in every listing and cursor (compareIds, sortsAfter): the byte order of their
 * UTF-8, which PostgreSQL's "C" collation and SQLite's BINARY keep, checked against the bytes
 * themselves for strings made of the code points where UTF-16's order and UTF-8's part ways —
 * including where the faster comparison of a plain id (no code unit at or above U+D800) answers.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compareIds, isPlainId, sortIds, sortsAfter } from '../../src/store/fleet-reads.js'

/** Code points around the boundaries: ASCII, Latin-1, the last below the surrogates, U+E000–U+FFFF, and above U+FFFF. */
const ALPHABET = ['a', 'b', 'z', 'é', '\uD7FF', '\uE000', '\uFFFD', '\uFFFF', '\u{10000}', '\u{1F600}']

/** A deterministic stream of strings of 0–4 of those code points. */
function* strings(count: number): Generator<string> {
  let seed = 12345
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31)
  for (let i = 0; i < count; i++) {
    let s = ''
    const length = next() % 5
    for (let k = 0; k < length; k++) s += ALPHABET[next() % ALPHABET.length]
    yield s
  }
}

const sign = (n: number) => Math.sign(n)

describe('compareIds', () => {
  it('orders as the UTF-8 bytes do, plain ids and others alike', () => {
    const all = [...strings(600)]
    const paths = { plainA: 0, otherA: 0, plainCursor: 0, otherCursor: 0 }
    for (const a of all) {
      for (let j = 0; j < all.length; j += 7) {
        const b = all[j]!
        const bytes = sign(Buffer.compare(Buffer.from(a), Buffer.from(b)))
        assert.equal(sign(compareIds(a, b)), bytes, `${JSON.stringify(a)} against ${JSON.stringify(b)}`)
        assert.equal(sortsAfter(b)(a), bytes > 0, `${JSON.stringify(a)} after ${JSON.stringify(b)}`)
        if (isPlainId(a)) paths.plainA++
        else paths.otherA++
        if (isPlainId(b)) paths.plainCursor++
        else paths.otherCursor++
      }
    }
    // each way of comparing, compareIds' and sortsAfter's, was taken many times
    for (const [path, count] of Object.entries(paths)) assert.ok(count > 10_000, `${path}: ${count}`)
  })

  it('puts U+E000–U+FFFF before what surrogate pairs stand for, where JavaScript’s `<` does the opposite', () => {
    assert.ok('\u{1F600}' < '\uFFFD')
    assert.ok(compareIds('\u{1F600}', '\uFFFD') > 0)
    assert.ok(compareIds('\uFFFD', '\u{1F600}') < 0)
    assert.equal(sortsAfter('\uFFFD')('\u{1F600}'), true)
    assert.equal(sortsAfter('\u{1F600}')('\uFFFD'), false)
  })

  it('sorts ids in that order, by the engine’s own sort where every id is plain', () => {
    const byBytes = (ids: string[]) => [...ids].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    const mixed = [...strings(300)]
    const plain = mixed.filter(isPlainId)
    assert.ok(plain.length > 20 && plain.length < mixed.length)
    assert.deepEqual(sortIds([...mixed]), byBytes(mixed))
    assert.deepEqual(sortIds([...plain]), byBytes(plain))
  })

  it('puts a lone surrogate, which UTF-8 cannot hold, above U+FFFF, on both paths alike', () => {
    // a code unit's place: below U+D800 itself, U+E000–U+FFFF moved down, surrogates past U+FFFF
    const place = (u: number) => (u < 0xd800 ? u : u >= 0xe000 ? u - 0x800 : u + 0x2000)
    const reference = (a: string, b: string) => {
      for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return sign(place(a.charCodeAt(i)) - place(b.charCodeAt(i)))
      return sign(a.length - b.length)
    }
    const units = ['a', '\uD7FF', '\uD800', '\uDBFF', '\uDC00', '\uDFFF', '\uE000', '\uFFFF']
    const all = ['', ...units, ...units.flatMap((x) => units.map((y) => x + y))]
    for (const a of all) {
      for (const b of all) {
        const expected = reference(a, b)
        assert.equal(sign(compareIds(a, b)), expected, `${JSON.stringify(a)} against ${JSON.stringify(b)}`)
        assert.equal(sortsAfter(b)(a), expected > 0, `${JSON.stringify(a)} after ${JSON.stringify(b)}`)
      }
    }
    assert.deepEqual(sortIds([...all].reverse()), [...all].sort(reference))
  })

  it('tells plain ids: no code unit at or above U+D800', () => {
    assert.deepEqual(['device-1', 'é', '\uD7FF', '\uD800', '\uDFFF', '\uE000', '\uFFFF', 'x\u{1F600}'].map(isPlainId), [true, true, true, false, false, false, false, false])
  })
})
