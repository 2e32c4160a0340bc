/**
 * How a late attributes push settles (src/devices/late-pushes.ts) where other replicas change the
 * device too: published again while its keys' stored values differ from what it said, each time in
 * a turn of its own and SETTLE_TRIES publishes at most; a failure after the first publish leaves
 * the push taken, logged. The device's properties here are a stand-in whose stored values change
 * as a test says — another replica's changes, faster than any real one could be timed; the
 * end-to-end case, two replicas on PostgreSQL behind EMQX's REST API, is in
 * test/push-journal.test.ts ("a late push overtaken by another replica's change").
 */
import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import pino from 'pino'
import type { BrokerMessage } from '../src/devices/dispatcher.js'
import { LatePushes, SETTLE_TRIES } from '../src/devices/late-pushes.js'
import type { StoredPush } from '../src/store/store.js'

const push: StoredPush = { run: 'earlier', seq: 1, topic: 'dev-1/v1/devices/me/attributes', payload: Buffer.from('{"mode":"old"}'), qos: 1, at: 0 }

/** Stored attributes that `change` makes anew at each read, and the turns taken. */
function storedProperties(sharesStore: boolean, change: (read: number) => Record<string, unknown>) {
  const seen = { reads: 0, turns: 0, inTurn: false }
  const properties = {
    sharesStore,
    find: async () => ({ values: { attributes: change(seen.reads++) }, lastChange: 0 }),
    inTurn: async <T>(_deviceId: string, work: () => Promise<T>): Promise<T> => {
      assert.equal(seen.inTurn, false, 'one turn at a time')
      seen.turns++
      seen.inTurn = true
      try {
        return await work()
      } finally {
        seen.inTurn = false
      }
    },
    update: (): never => {
      throw new Error('a late attributes push stores nothing')
    }
  }
  return { properties, seen }
}

/** A logger whose lines are kept. */
function keptLog() {
  const lines: { level: number; msg: string }[] = []
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string })
      done()
    }
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

const said = (messages: BrokerMessage[]): unknown[] => messages.map((m) => JSON.parse(m.payload.toString()) as unknown)

describe('a late attributes push, where other replicas change the device too', () => {
  it('is published again, in a turn of its own, while another replica changes its keys — SETTLE_TRIES publishes at most', async () => {
    const { properties, seen } = storedProperties(true, (read) => ({ mode: `v${read}`, other: 'kept' }))
    const published: BrokerMessage[] = []
    const sent = await new LatePushes(properties, keptLog().log).send(push, async (message) => {
      assert.equal(seen.inTurn, true, 'published in the device turn')
      published.push(message)
    })
    assert.equal(sent, true)
    assert.equal(SETTLE_TRIES, 3)
    assert.deepEqual(said(published), [{ mode: 'v0' }, { mode: 'v1' }, { mode: 'v2' }], 'only the keys of the patch, as stored at each read')
    assert.equal(seen.turns, 3, 'each read and publish in a turn of its own')
  })

  it('stops once a read finds what it published last', async () => {
    const { properties, seen } = storedProperties(true, (read) => ({ mode: read === 0 ? 'eco' : 'turbo' }))
    const published: BrokerMessage[] = []
    await new LatePushes(properties, keptLog().log).send(push, async (message) => void published.push(message))
    assert.deepEqual(said(published), [{ mode: 'eco' }, { mode: 'turbo' }])
    assert.equal(seen.reads, 3, 'read once more after the second publish, and found it unchanged')
  })

  it('a publish after the first that fails leaves the push taken, and says so in the log', async () => {
    const { properties } = storedProperties(true, (read) => ({ mode: `v${read}` }))
    const { log, lines } = keptLog()
    const published: BrokerMessage[] = []
    const sent = await new LatePushes(properties, log).send(push, async (message) => {
      if (published.length > 0) throw new Error('EMQX API answered 503')
      published.push(message)
    })
    assert.equal(sent, true, 'taken: not kept for another try, not dropped')
    assert.deepEqual(said(published), [{ mode: 'v0' }])
    const warning = lines.find((line) => line.level === 40)
    assert.match(warning?.msg ?? '', /could not be published after it/, JSON.stringify(lines))
  })

  it('the first publish failing fails the send, as before: the push stays kept', async () => {
    const { properties } = storedProperties(true, () => ({ mode: 'eco' }))
    await assert.rejects(
      new LatePushes(properties, keptLog().log).send(push, async () => {
        throw new Error('EMQX API answered 503')
      }),
      /503/
    )
  })

  it("where this replica is the store's only writer, reads and publishes once", async () => {
    const { properties, seen } = storedProperties(false, (read) => ({ mode: `v${read}` }))
    const published: BrokerMessage[] = []
    await new LatePushes(properties, keptLog().log).send(push, async (message) => void published.push(message))
    assert.deepEqual(said(published), [{ mode: 'v0' }])
    assert.deepEqual({ reads: seen.reads, turns: seen.turns }, { reads: 1, turns: 1 })
  })
})
