/**
 * Where EMQX v4 pages continue from (src/api/compat/page-positions.ts): the next page after a
 * served one is a keyset step, a page past a served one skips only the difference, a page with
 * nothing served before it is an offset from the start; rows are forgotten after a while, a
 * newer row replaces those that disagree with it, and both the listings and the rows per
 * listing are bounded. A long jump in a whole listing has its marks learned (in the background;
 * another long jump meanwhile waits for them), from which any later page starts close by, until
 * they age.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { PagePositions } from '../../src/api/compat/page-positions.js'
import type { PageRequest } from '../../src/store/fleet-reads.js'

function clock(start = 1_000) {
  let now = start
  return { now: () => now, advance: (ms: number) => (now += ms) }
}

describe('PagePositions', () => {
  it('reads a page with nothing served before it as an offset from the start', async () => {
    const p = new PagePositions()
    assert.deepEqual(await p.request('all', 0, 10), { limit: 10 })
    assert.deepEqual(await p.request('all', 500, 10), { offset: 500, limit: 10 })
  })

  it('reads the page after a served one as a keyset step, and a page past it by skipping only the difference', async () => {
    const p = new PagePositions()
    p.served('all', 0, 10, 'id-09')
    assert.deepEqual(await p.request('all', 10, 10), { after: 'id-09', limit: 10 })
    assert.deepEqual(await p.request('all', 35, 5), { after: 'id-09', offset: 25, limit: 5 })
    // before the remembered row: from the start
    assert.deepEqual(await p.request('all', 5, 10), { offset: 5, limit: 10 })
    p.served('all', 10, 10, 'id-19')
    p.served('all', 40, 10, 'id-49')
    assert.deepEqual(await p.request('all', 20, 10), { after: 'id-19', limit: 10 })
    assert.deepEqual(await p.request('all', 45, 10), { after: 'id-19', offset: 25, limit: 10 })
    assert.deepEqual(await p.request('all', 50, 10), { after: 'id-49', limit: 10 })
    assert.deepEqual(await p.request('all', 90, 10), { after: 'id-49', offset: 40, limit: 10 })
  })

  it('reads a page nearer the end than any remembered row by its offset, where the total is known', async () => {
    const p = new PagePositions()
    p.served('all', 0, 10, 'id-09')
    // 1,000 rows: offset 900 is 90 rows from the end and 890 from the remembered row
    assert.deepEqual(await p.request('all', 900, 10, 1_000), { offset: 900, limit: 10 })
    assert.deepEqual(await p.request('all', 400, 10, 1_000), { after: 'id-09', offset: 390, limit: 10 })
    assert.deepEqual(await p.request('all', 10, 10, 1_000), { after: 'id-09', limit: 10 })
    // the page right after a served one continues from it, even at the end
    p.served('all', 980, 10, 'id-989')
    assert.deepEqual(await p.request('all', 990, 10, 995), { after: 'id-989', limit: 10 })
    assert.deepEqual(await p.request('all', 900, 10), { after: 'id-09', offset: 890, limit: 10 }, 'no total: the remembered row')
  })

  it('keeps listings apart, and remembers nothing of an empty page', async () => {
    const p = new PagePositions()
    p.served('clients {"connected":true}', 0, 10, 'c-9')
    p.served('all', 0, 0, undefined)
    assert.deepEqual(await p.request('all', 10, 10), { offset: 10, limit: 10 })
    assert.deepEqual(await p.request('clients {"connected":true}', 10, 10), { after: 'c-9', limit: 10 })
    assert.deepEqual(await p.request('clients {}', 10, 10), { offset: 10, limit: 10 })
  })

  it('forgets a row once its page was served longer ago than ttlMs', async () => {
    const c = clock()
    const p = new PagePositions({ ttlMs: 1_000, now: c.now })
    p.served('all', 0, 10, 'id-09')
    c.advance(600)
    p.served('all', 10, 10, 'id-19')
    c.advance(500)
    // the first is gone, the second still known
    assert.deepEqual(await p.request('all', 10, 10), { offset: 10, limit: 10 })
    assert.deepEqual(await p.request('all', 20, 10), { after: 'id-19', limit: 10 })
    c.advance(600)
    assert.deepEqual(await p.request('all', 20, 10), { offset: 20, limit: 10 })
  })

  it('puts a newer row in place of those that disagree with it (the fleet changed between the pages)', async () => {
    const p = new PagePositions()
    p.served('all', 0, 10, 'm')
    p.served('all', 20, 10, 'p')
    // sessions before `m` went away: the row at offset 9 is now `q`, later than the one remembered at 29
    p.served('all', 0, 10, 'q')
    assert.deepEqual(await p.request('all', 10, 10), { after: 'q', limit: 10 })
    assert.deepEqual(await p.request('all', 30, 10), { after: 'q', offset: 20, limit: 10 })
    // ids compare as UTF-8 bytes do: U+FFFD before U+1F600
    p.served('all', 40, 10, '\u{1F600}')
    p.served('all', 30, 10, '\uFFFD')
    assert.deepEqual(await p.request('all', 50, 10), { after: '\u{1F600}', limit: 10 })
  })

  it('bounds the rows per listing (the oldest go) and the listings (the least recently used go)', async () => {
    const c = clock()
    const p = new PagePositions({ listings: 2, perListing: 3, now: c.now })
    for (let page = 0; page < 5; page++) {
      p.served('a', page * 10, 10, `a-${page}`)
      c.advance(1)
    }
    assert.deepEqual(await p.request('a', 10, 10), { offset: 10, limit: 10 }, 'the two oldest are gone')
    assert.deepEqual(await p.request('a', 30, 10), { after: 'a-2', limit: 10 })
    p.served('b', 0, 10, 'b-0')
    assert.deepEqual(await p.request('a', 50, 10), { after: 'a-4', limit: 10 }, 'a used after b: b is the least recently used')
    p.served('c', 0, 10, 'c-0')
    assert.deepEqual(await p.request('b', 10, 10), { offset: 10, limit: 10 })
    assert.deepEqual(await p.request('a', 50, 10), { after: 'a-4', limit: 10 })
    assert.deepEqual(await p.request('c', 10, 10), { after: 'c-0', limit: 10 })
  })

  describe('marks of a whole listing', () => {
    /** A listing of `total` rows named r-000000…, and a mark source over it that resolves when told. */
    function fleet(total: number) {
      const row = (offset: number) => `r-${String(offset).padStart(6, '0')}`
      const asked: number[] = []
      let answer: (() => void) | undefined
      const source = (every: number) => {
        asked.push(every)
        return new Promise<string[]>((resolve) => {
          answer = () => resolve(Array.from({ length: Math.floor(total / every) }, (_, k) => row((k + 1) * every - 1)))
        })
      }
      // the source's promise settles, then its `then` runs: two turns of the microtask queue
      const learned = async () => {
        answer!()
        await new Promise((resolve) => setImmediate(resolve))
      }
      return { row, asked, source, learned }
    }

    it('learns them at the first long jump, in the background, and starts later pages from the mark before them', async () => {
      const f = fleet(100_000)
      const p = new PagePositions({ marksFrom: 20_000, maxMarks: 50 })
      // the jump itself is served as before: an offset walk
      assert.deepEqual(await p.request('all', 50_000, 100, 100_000, f.source), { offset: 50_000, limit: 100 })
      assert.deepEqual(f.asked, [2_000], '100,000 rows, at most 50 marks: every 2,000th row')
      // a short walk meanwhile (near the end) goes on; a long jump waits for the marks, which are asked for once
      assert.deepEqual(await p.request('all', 99_000, 100, 100_000, f.source), { offset: 99_000, limit: 100 })
      let waited: PageRequest | undefined
      const waiting = p.request('all', 70_000, 100, 100_000, f.source).then((r) => (waited = r))
      await new Promise((resolve) => setImmediate(resolve))
      assert.equal(waited, undefined, 'waits while the marks are learned')
      await f.learned()
      assert.deepEqual(await waiting, { after: f.row(69_999), limit: 100 })
      // rows from offset 50,000 are those after the row at 49,999
      assert.deepEqual(await p.request('all', 50_000, 100, 100_000, f.source), { after: f.row(49_999), limit: 100 })
      assert.deepEqual(await p.request('all', 51_234, 100, 100_000, f.source), { after: f.row(49_999), offset: 1_234, limit: 100 })
      assert.deepEqual(await p.request('all', 1_999, 100, 100_000, f.source), { offset: 1_999, limit: 100 }, 'before the first mark: from the start')
      assert.deepEqual(await p.request('all', 99_950, 100, 100_000, f.source), { offset: 99_950, limit: 100 }, 'nearer the end than the mark before it: walked from the end')
      assert.deepEqual(f.asked, [2_000])
    })

    it('starts from a served row where it is nearer than the mark', async () => {
      const f = fleet(100_000)
      const p = new PagePositions({ marksFrom: 20_000, maxMarks: 50 })
      await p.request('all', 50_000, 100, 100_000, f.source)
      await f.learned()
      p.served('all', 50_500, 100, 'served-50599')
      assert.deepEqual(await p.request('all', 50_600, 100, 100_000, f.source), { after: 'served-50599', limit: 100 })
      assert.deepEqual(await p.request('all', 50_700, 100, 100_000, f.source), { after: 'served-50599', offset: 100, limit: 100 })
      assert.deepEqual(await p.request('all', 52_100, 100, 100_000, f.source), { after: f.row(51_999), offset: 100, limit: 100 }, 'the mark at 52,000 is nearer')
    })

    it('learns none for a short walk (a small listing, near a served page or the end), or a listing without a total or a source', async () => {
      const f = fleet(100_000)
      const p = new PagePositions({ marksFrom: 20_000 })
      await p.request('small', 5_000, 100, 19_999, f.source)
      await p.request('all', 0, 100, 100_000, f.source)
      p.served('all', 0, 100, f.row(99))
      await p.request('all', 100, 100, 100_000, f.source)
      await p.request('all', 19_000, 100, 100_000, f.source)
      await p.request('all', 80_500, 100, 100_000, f.source)
      await p.request('all', 50_000, 100, undefined, f.source)
      await p.request('all', 50_000, 100, 100_000)
      assert.deepEqual(f.asked, [])
      await p.request('all', 50_000, 100, 100_000, f.source)
      assert.deepEqual(f.asked, [100], 'at most 1,000 marks by default, but a page apart at least')
    })

    it('learns them again once they are ttlMs old, and after a failure, not before', async () => {
      const c = clock()
      const failures: unknown[] = []
      const p = new PagePositions({ marksFrom: 1_000, maxMarks: 10, ttlMs: 1_000, now: c.now, onMarksFailed: (error) => failures.push(error) })
      const f = fleet(10_000)
      await p.request('all', 5_000, 100, 10_000, f.source)
      await f.learned()
      c.advance(999)
      assert.deepEqual(await p.request('all', 5_000, 100, 10_000, f.source), { after: f.row(4_999), limit: 100 })
      c.advance(2)
      // aged: this jump walks, and learns them again
      assert.deepEqual(await p.request('all', 5_000, 100, 10_000, f.source), { offset: 5_000, limit: 100 })
      assert.deepEqual(f.asked, [1_000, 1_000])

      const failing = (every: number) => {
        f.asked.push(every)
        return Promise.reject(new Error('store unavailable'))
      }
      const q = new PagePositions({ marksFrom: 1_000, ttlMs: 1_000, now: c.now, onMarksFailed: (error) => failures.push(error) })
      await q.request('all', 5_000, 100, 10_000, failing)
      await new Promise((resolve) => setImmediate(resolve))
      assert.deepEqual(failures.map((e) => (e as Error).message), ['store unavailable'])
      await q.request('all', 6_000, 100, 10_000, failing)
      assert.equal(f.asked.length, 3, 'not asked again at once')
      c.advance(1_001)
      await q.request('all', 6_000, 100, 10_000, failing)
      assert.equal(f.asked.length, 4, 'asked again once the failure is ttlMs old')
      await new Promise((resolve) => setImmediate(resolve))
    })
  })
})
