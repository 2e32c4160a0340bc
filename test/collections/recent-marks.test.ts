/**
 * Marks kept for a while, on a clock the test steps: a new mark forgets those older than that,
 * a key marked again keeps its newest mark, and however many keys are marked and deleted, the
 * Map and its queue hold only about the marks of the last while.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RecentMarks } from '../../src/collections/recent-marks.js'

function marksOn(keepMs: number) {
  const clock = { now: 0 }
  return { marks: new RecentMarks<string>(keepMs, () => clock.now), clock }
}

describe('RecentMarks', () => {
  it('says a key is within keepMs of its newest mark, and forgets older marks as new ones come', () => {
    const { marks, clock } = marksOn(10_000)
    clock.now = 1_000
    marks.mark('a')
    clock.now = 5_000
    marks.mark('b')
    clock.now = 8_000
    marks.mark('a') // marked again: its newest mark counts
    clock.now = 14_999
    assert.equal(marks.within('b'), true, '9,999 ms after its mark')
    clock.now = 15_000
    assert.equal(marks.within('b'), false, 'keepMs after its mark: no longer within')
    assert.equal(marks.within('a'), true)
    assert.equal(marks.size, 2, 'nothing is forgotten until a new mark comes')
    clock.now = 15_001
    marks.mark('c') // b, marked at 5,000, is older than 10 s now
    assert.equal(marks.size, 2)
    assert.equal(marks.within('a'), true, "a's first mark went, not its newest")
    assert.equal(marks.within('x'), false, 'never marked')
  })

  it('holds the marks of the last keepMs only, and a queue near them, however keys repeat or are deleted', () => {
    const { marks, clock } = marksOn(1_000)
    for (let at = 0; at < 20_000; at++) {
      clock.now = at
      // four clients a millisecond; three of the marks are taken at once (a resumed session's
      // client.connected), one is marked four times over within its millisecond
      for (let k = 0; k < 4; k++) marks.mark(`client-${(at * 4 + k) % 50_000}`)
      for (let k = 1; k < 4; k++) marks.delete(`client-${(at * 4 + k) % 50_000}`)
      for (let again = 0; again < 3; again++) marks.mark(`client-${(at * 4) % 50_000}`)
      assert.ok(marks.size <= 1_001, `at ${at}: ${marks.size} marks for the last 1,000 ms`)
      // the bound holds at each mark; the three deletions since may have left three more
      assert.ok(marks.queued <= 2 * marks.size + 1_024 + 8, `at ${at}: ${marks.queued} queued for ${marks.size} marks`)
    }
    assert.equal(marks.within(`client-${(19_999 * 4) % 50_000}`), true)
    assert.equal(marks.within(`client-${(19_999 * 4 + 1) % 50_000}`), false, 'taken')
  })
})
