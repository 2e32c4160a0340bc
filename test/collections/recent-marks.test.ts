/**
 * Marks kept for a while: a new mark forgets those older than that, a key marked again keeps its
 * newest mark, and however many keys are marked, the Map holds only the marks of the last while.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RecentMarks } from '../../src/collections/recent-marks.js'

describe('RecentMarks', () => {
  it('forgets the marks older than keepMs when a new one comes, and keeps the newest of a key', () => {
    const marks = new RecentMarks<string>(10_000)
    marks.mark('a', 1_000)
    marks.mark('b', 5_000)
    marks.mark('a', 8_000) // marked again: its newest mark is kept
    marks.mark('c', 12_000)
    assert.equal(marks.get('a'), 8_000)
    assert.equal(marks.get('b'), 5_000)
    marks.mark('d', 15_001) // b, marked at 5,000, is older than 10 s now
    assert.equal(marks.get('b'), undefined)
    assert.equal(marks.get('a'), 8_000, "a's first mark went, not its newest")
    assert.equal(marks.size, 3)
  })

  it('holds the marks of the last keepMs only, whatever the rate and however keys repeat', () => {
    const marks = new RecentMarks<string>(1_000)
    for (let at = 0; at < 100_000; at++) {
      marks.mark(`client-${at % 5_000}`, at)
      if (at % 7 === 0) marks.delete(`client-${(at + 3) % 5_000}`)
      assert.ok(marks.size <= 1_001, `at ${at}: ${marks.size} marks for the last 1,000 ms`)
    }
    assert.equal(marks.get(`client-${99_999 % 5_000}`), 99_999)
  })
})
