/**
 * When group commit hands a batch to its writer: at once when the writer has none; while it
 * commits one, only once half a batch waits; and, the moment the writer answers, the next batch
 * before the answered callers hear. Ordered by events (what the writer was handed, what resolved
 * before what), never by time.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { GroupCommitter } from '../../src/store/group-commit.js'
import { heldWriter, marker, turn, until } from '../helpers/held-writer.js'

describe('group commit, handing batches over', () => {
  it('keeps the callers that come while the writer commits for one next batch, not one batch per turn of the loop', async () => {
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 256 })
    const done = [committer.commit(marker('first'))]
    await until(() => writer.waiting === 1)
    // a caller on each of ten turns of the event loop, the writer busy all the while
    for (let i = 0; i < 10; i++) {
      done.push(committer.commit(marker(`c${i}`)))
      await turn()
    }
    assert.equal(writer.batches.length, 1, 'nothing handed over while the writer is busy and few wait')
    writer.release()
    await until(() => writer.waiting === 1)
    writer.release()
    await Promise.all(done)
    assert.deepEqual(writer.batches, [['first'], Array.from({ length: 10 }, (_, i) => `c${i}`)])
  })

  it('pipelines a second batch once half a batch waits, up to maxInFlight', async () => {
    const writer = heldWriter()
    const committer = new GroupCommitter(writer, { maxBatch: 4, maxInFlight: 2 })
    const done = [committer.commit(marker('first'))]
    await until(() => writer.waiting === 1)
    done.push(committer.commit(marker('a')))
    await turn()
    assert.equal(writer.waiting, 1, 'one waiting caller is less than half a batch')
    done.push(committer.commit(marker('b')))
    await until(() => writer.waiting === 2)
    for (const id of ['c', 'd', 'e']) done.push(committer.commit(marker(id)))
    await turn()
    assert.equal(writer.waiting, 2, 'no more than maxInFlight batches at the writer')
    // the three batches, each released once it has reached the writer
    for (let i = 0; i < 3; i++) {
      await until(() => writer.waiting > 0)
      writer.release()
    }
    await Promise.all(done)
    assert.deepEqual(writer.batches, [['first'], ['a', 'b'], ['c', 'd', 'e']])
  })

  it('hands the next batch over as soon as the writer answers, before the answered callers hear', async () => {
    const record: string[] = []
    const writer = heldWriter(record)
    // one batch at the writer at a time: the second can only go once the first is answered
    const committer = new GroupCommitter(writer, { maxBatch: 256, maxInFlight: 1 })
    const first = committer.commit(marker('first')).then(() => record.push('first heard'))
    await until(() => writer.waiting === 1)
    const second = committer.commit(marker('second')).then(() => record.push('second heard'))
    await turn()
    writer.release()
    await first
    assert.deepEqual(record, ['handed over first', 'handed over second', 'first heard'])
    writer.release()
    await second
  })
})
