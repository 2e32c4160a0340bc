/**
 * The hub's store watch (hub.ts, store-return.ts): a failure counts as one to come back from even
 * when it came and went between two looks. The case it was made for: an outage shorter than the
 * watch's second refused EMQX hook calls, and no replica's watch saw it failing, so no reconcile
 * brought the refused calls in until the next interval's (test/replicas-failures.test.ts, 2).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { StoreReturnWatch } from '../../src/store/store-return.js'

describe('StoreReturnWatch', () => {
  it('leaves a store that has not failed alone: no probe, nothing to act on', () => {
    const watch = new StoreReturnWatch(0)
    assert.equal(watch.needsProbe({ ok: true, failures: 0 }, 0), false)
    assert.equal(watch.look(true, 0), 'steady')
  })

  it('says the store returned once it answers after a look that found it failing, and only once', () => {
    const watch = new StoreReturnWatch(0)
    assert.equal(watch.needsProbe({ ok: false, failures: 1 }, 0), true)
    assert.equal(watch.look(false, 1), 'down')
    // still down: probed at every look, though its health no longer says so
    assert.equal(watch.needsProbe({ ok: true, failures: 1 }, 0), true)
    assert.equal(watch.look(false, 2), 'down')
    assert.equal(watch.look(true, 2), 'returned')
    assert.equal(watch.needsProbe({ ok: true, failures: 2 }, 0), false)
    assert.equal(watch.look(true, 2), 'steady')
  })

  it('says the store returned after a failure that an answer cleared between two looks', () => {
    const watch = new StoreReturnWatch(0)
    // failed and answered again since the last look: health is ok, the count is not what was seen
    assert.equal(watch.needsProbe({ ok: true, failures: 1 }, 0), true)
    assert.equal(watch.look(true, 1), 'returned')
    assert.equal(watch.look(true, 1), 'steady')
    // and again for the next one
    assert.equal(watch.look(true, 3), 'returned')
  })

  it('does not count the failures from before the watch began', () => {
    const watch = new StoreReturnWatch(4)
    assert.equal(watch.needsProbe({ ok: true, failures: 4 }, 0), false)
    assert.equal(watch.look(true, 4), 'steady')
  })

  it('probes while connection ends wait to be stored, and has nothing to act on if the store never failed', () => {
    const watch = new StoreReturnWatch(0)
    assert.equal(watch.needsProbe({ ok: true, failures: 0 }, 3), true)
    assert.equal(watch.look(true, 0), 'steady')
  })
})
