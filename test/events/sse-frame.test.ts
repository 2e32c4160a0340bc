/**
 * A live batch's frames are encoded into one buffer piece by piece, its length counted first:
 * a miscount would cut or pad what every consumer reads. The buffer must be byte for byte the
 * frames as written one by one, whatever the ids' digits and the JSON's characters.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { encodeFrames } from '../../src/events/sse-frame.js'

/** An event as a server-sent event (WHATWG HTML): its id line, its data line, a blank line. */
const eventFrame = (seq: number, json: string): string => `id: ${seq}\ndata: ${json}\n\n`

describe('encodeFrames', () => {
  it('is the frames of the events, one after another, for ids of every length', () => {
    const seqs = [1, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 123_456, 999_999, 1_000_000, 2 ** 31, Number.MAX_SAFE_INTEGER]
    const events = seqs.map((seq) => ({ seq, json: JSON.stringify({ seq, type: 'session.connected', clientId: `c-${seq}` }) }))
    const expected = Buffer.from(events.map((e) => eventFrame(e.seq, e.json)).join(''), 'utf8')
    assert.deepEqual(encodeFrames(events), expected)
  })

  it('encodes JSON beyond ASCII as UTF-8 (two-, three- and four-byte characters, escapes)', () => {
    const events = [
      { seq: 7, json: JSON.stringify({ name: 'Zürich – 東京 🚀', note: 'line\nbreak "quoted"' }) },
      { seq: 8, json: JSON.stringify({ value: 'plain' }) }
    ]
    const bytes = encodeFrames(events)
    assert.equal(bytes.toString('utf8'), events.map((e) => eventFrame(e.seq, e.json)).join(''))
    assert.equal(bytes.length, Buffer.byteLength(events.map((e) => eventFrame(e.seq, e.json)).join('')))
  })

  it('is empty for no events', () => {
    assert.equal(encodeFrames([]).length, 0)
  })
})
