/**
 * Group commit's live lane: callers marked `background` (the reconcile's fixes) take only the
 * room live callers leave in a batch, and `liveSettled` lets background work wait for the live
 * callers already queued once they fall behind. Ordered by events (which batch held whom, what
 * resolved before what), never by time.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { GroupCommitter } from '../../src/store/group-commit.js'
import { heldWriter, marker, turn, until } from '../helpers/held-writer.js'

describe('group commit, live callers first', () => {
  it('fills a batch with live callers before background ones when more wait than a batch holds', async () => {
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 3, maxInFlight: 1 })
    const done: Promise<void>[] = [committer.commit(marker('first'))]
    await until(() => writer.waiting === 1) // the writer is busy: the rest queue up behind it
    for (const id of ['bg1', 'bg2', 'bg3']) done.push(committer.commit(marker(id), { background: true }))
    for (const id of ['live1', 'live2']) done.push(committer.commit(marker(id)))
    writer.release()
    await until(() => writer.waiting === 1)
    writer.release()
    await until(() => writer.waiting === 1)
    writer.release()
    await Promise.all(done)
    assert.deepEqual(writer.batches, [['first'], ['bg1', 'live1', 'live2'], ['bg2', 'bg3']], 'the live callers in the next batch, background ones in the room left, in their order')
  })

  it('takes callers in their order when they fit in one batch', async () => {
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 8, maxInFlight: 1 })
    const done = [committer.commit(marker('bg'), { background: true }), committer.commit(marker('live'))]
    await until(() => writer.waiting === 1)
    writer.release()
    await Promise.all(done)
    assert.deepEqual(writer.batches, [['bg', 'live']])
  })

  it('liveSettled waits for the live callers that came before it once they are behind, not for later or background ones', async () => {
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 1, maxInFlight: 1 })
    const order: string[] = []
    const live = committer.commit(marker('live')).then(() => order.push('live stored'))
    const background = committer.commit(marker('bg'), { background: true }).then(() => order.push('background stored'))
    await until(() => writer.waiting === 1)
    // behind by 0 ms or more: the live caller before it is waited for
    const settled = committer.liveSettled(0).then(() => order.push('settled'))
    const later = committer.commit(marker('later')).then(() => order.push('later stored'))
    await turn()
    assert.deepEqual(order, [], 'nothing stored yet, so nothing settled')
    writer.release() // 'live'
    await settled
    assert.deepEqual(order, ['live stored', 'settled'], 'resolved once the live caller before it was stored: neither the background one nor the later one held it')
    for (let i = 0; i < 2; i++) {
      await until(() => writer.waiting === 1)
      writer.release()
    }
    await Promise.all([live, background, later])
  })

  it('liveSettled resolves at once while the live callers have waited less than asked', async () => {
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 1, maxInFlight: 1 })
    const live = committer.commit(marker('live'))
    await until(() => writer.waiting === 1)
    let settled = false
    await committer.liveSettled(60_000).then(() => (settled = true))
    assert.equal(settled, true, 'not behind: no wait')
    assert.equal(writer.waiting, 1, 'and the live caller is still being written')
    writer.release()
    await live
  })
  it('liveSettled waits for every live caller before it when a failed batch retries them after later ones are stored', async () => {
    // the first batch fails: group commit then retries its callers alone, behind the batch handed over after it
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 2, maxInFlight: 2 })
    const order: string[] = []
    const stored = (id: string) => committer.commit(marker(id)).then(() => order.push(`${id} stored`))
    /** Lets the oldest batch waiting commit (or fail), once one is there. */
    const next = async (ok = true) => {
      await until(() => writer.waiting > 0)
      if (ok) writer.release()
      else writer.fail()
    }
    const a = stored('A')
    const b = stored('B')
    await until(() => writer.waiting === 1) // [A, B] handed over
    const settled = committer.liveSettled(0).then(() => order.push('settled')) // for A and B
    const c = stored('C')
    await until(() => writer.waiting === 2) // [C] pipelined behind it
    await next(false) // [A, B] fails: A and B are retried alone, after [C]
    await next()
    await c
    await next()
    await a
    await turn()
    assert.ok(!order.includes('settled'), `B is not stored yet: ${order.join(', ')}`)
    await next()
    await Promise.all([b, settled])
    assert.deepEqual(writer.batches, [['A', 'B'], ['C'], ['A'], ['B']], 'the retries came after [C], each alone')
    assert.deepEqual(order, ['C stored', 'A stored', 'B stored', 'settled'])
  })
})
