/**
 * Where EMQX v4 pages continue from (src/api/compat/page-positions.ts): the next page after a
 * served one is a keyset step, a page past a served one skips only the difference, a page with
 * nothing served before it is an offset from the start; rows are forgotten after a while, a
 * newer row replaces those that disagree with it, and both the listings and the rows per
 * listing are bounded.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PagePositions } from '../../src/api/compat/page-positions.js'

function clock(start = 1_000) {
  let now = start
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

describe('PagePositions', () => {
  it('reads a page with nothing served before it as an offset from the start', () => {
    const p = new PagePositions()
    assert.deepEqual(p.request('all', 0, 10), { limit: 10 })
    assert.deepEqual(p.request('all', 500, 10), { offset: 500, limit: 10 })
  })

  it('reads the page after a served one as a keyset step, and a page past it by skipping only the difference', () => {
    const p = new PagePositions()
    p.served('all', 0, 10, 'id-09')
    assert.deepEqual(p.request('all', 10, 10), { after: 'id-09', limit: 10 })
    assert.deepEqual(p.request('all', 35, 5), { after: 'id-09', offset: 25, limit: 5 })
    // before the remembered row: from the start
    assert.deepEqual(p.request('all', 5, 10), { offset: 5, limit: 10 })
    p.served('all', 10, 10, 'id-19')
    p.served('all', 40, 10, 'id-49')
    assert.deepEqual(p.request('all', 20, 10), { after: 'id-19', limit: 10 })
    assert.deepEqual(p.request('all', 45, 10), { after: 'id-19', offset: 25, limit: 10 })
    assert.deepEqual(p.request('all', 50, 10), { after: 'id-49', limit: 10 })
    assert.deepEqual(p.request('all', 90, 10), { after: 'id-49', offset: 40, limit: 10 })
  })

  it('reads a page nearer the end than any remembered row by its offset, where the total is known', () => {
    const p = new PagePositions()
    p.served('all', 0, 10, 'id-09')
    // 1,000 rows: offset 900 is 90 rows from the end and 890 from the remembered row
    assert.deepEqual(p.request('all', 900, 10, 1_000), { offset: 900, limit: 10 })
    assert.deepEqual(p.request('all', 400, 10, 1_000), { after: 'id-09', offset: 390, limit: 10 })
    assert.deepEqual(p.request('all', 10, 10, 1_000), { after: 'id-09', limit: 10 })
    // the page right after a served one continues from it, even at the end
    p.served('all', 980, 10, 'id-989')
    assert.deepEqual(p.request('all', 990, 10, 995), { after: 'id-989', limit: 10 })
    assert.deepEqual(p.request('all', 900, 10), { after: 'id-09', offset: 890, limit: 10 }, 'no total: the remembered row')
  })

  it('keeps listings apart, and remembers nothing of an empty page', () => {
    const p = new PagePositions()
    p.served('clients {"connected":true}', 0, 10, 'c-9')
    p.served('all', 0, 0, undefined)
    assert.deepEqual(p.request('all', 10, 10), { offset: 10, limit: 10 })
    assert.deepEqual(p.request('clients {"connected":true}', 10, 10), { after: 'c-9', limit: 10 })
    assert.deepEqual(p.request('clients {}', 10, 10), { offset: 10, limit: 10 })
  })

  it('forgets a row once its page was served longer ago than ttlMs', () => {
    const c = clock()
    const p = new PagePositions({ ttlMs: 1_000, now: c.now })
    p.served('all', 0, 10, 'id-09')
    c.advance(600)
    p.served('all', 10, 10, 'id-19')
    c.advance(500)
    // the first is gone, the second still known
    assert.deepEqual(p.request('all', 10, 10), { offset: 10, limit: 10 })
    assert.deepEqual(p.request('all', 20, 10), { after: 'id-19', limit: 10 })
    c.advance(600)
    assert.deepEqual(p.request('all', 20, 10), { offset: 20, limit: 10 })
  })

  it('puts a newer row in place of those that disagree with it (the fleet changed between the pages)', () => {
    const p = new PagePositions()
    p.served('all', 0, 10, 'm')
    p.served('all', 20, 10, 'p')
    // sessions before `m` went away: the row at offset 9 is now `q`, later than the one remembered at 29
    p.served('all', 0, 10, 'q')
    assert.deepEqual(p.request('all', 10, 10), { after: 'q', limit: 10 })
    assert.deepEqual(p.request('all', 30, 10), { after: 'q', offset: 20, limit: 10 })
    // ids compare as UTF-8 bytes do: U+FFFD before U+1F600
    p.served('all', 40, 10, '\u{1F600}')
    p.served('all', 30, 10, '\uFFFD')
    assert.deepEqual(p.request('all', 50, 10), { after: '\u{1F600}', limit: 10 })
  })

  it('bounds the rows per listing (the oldest go) and the listings (the least recently used go)', () => {
    const c = clock()
    const p = new PagePositions({ listings: 2, perListing: 3, now: c.now })
    for (let page = 0; page < 5; page++) {
      p.served('a', page * 10, 10, `a-${page}`)
      c.advance(1)
    }
    assert.deepEqual(p.request('a', 10, 10), { offset: 10, limit: 10 }, 'the two oldest are gone')
    assert.deepEqual(p.request('a', 30, 10), { after: 'a-2', limit: 10 })
    p.served('b', 0, 10, 'b-0')
    assert.deepEqual(p.request('a', 50, 10), { after: 'a-4', limit: 10 }, 'a used after b: b is the least recently used')
    p.served('c', 0, 10, 'c-0')
    assert.deepEqual(p.request('b', 10, 10), { offset: 10, limit: 10 })
    assert.deepEqual(p.request('a', 50, 10), { after: 'a-4', limit: 10 })
    assert.deepEqual(p.request('c', 10, 10), { after: 'c-0', limit: 10 })
  })
})
