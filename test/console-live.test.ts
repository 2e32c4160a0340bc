/**
 * The console's pure parts, under Node: its SSE parser (the console reads /v1/events with fetch,
 * since an EventSource cannot send credentials) and the rules that keep a page of sessions
 * current from session events.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { SseParser } from '../console/src/api/sse-parser.js'
import type { HubEvent, Session } from '../console/src/api/types.js'
import { applySessionEvent, type SessionPage } from '../console/src/live/session-page.js'

describe('console: SSE parser', () => {
  it('parses blocks split anywhere, with any line ending, skipping comments', () => {
    const text = ': connected\n\nid: 5\ndata: {"a":1}\n\r\nid: 6\r\ndata: line1\r\ndata: line2\r\n\r\n: heartbeat\n\nevent: error\nid: 9\ndata: {"error":"slow"}\n\n'
    for (const size of [1, 2, 3, 7, text.length]) {
      const parser = new SseParser()
      const messages = []
      for (let i = 0; i < text.length; i += size) messages.push(...parser.push(text.slice(i, i + size)))
      assert.deepEqual(
        messages,
        [
          { event: 'message', data: '{"a":1}', id: '5' },
          { event: 'message', data: 'line1\nline2', id: '6' },
          { event: 'error', data: '{"error":"slow"}', id: '9' }
        ],
        `chunks of ${size}`
      )
    }
  })

  it('gives a heartbeat that carries only an id (skipped events) as a message without data', () => {
    const parser = new SseParser()
    assert.deepEqual(parser.push(': heartbeat\nid: 42\n\n'), [{ event: 'message', data: '', id: '42' }])
  })

  it('keeps an unfinished block until its empty line arrives', () => {
    const parser = new SseParser()
    assert.deepEqual(parser.push('id: 1\ndata: x\n'), [])
    assert.deepEqual(parser.push('\n'), [{ event: 'message', data: 'x', id: '1' }])
  })
})

function session(id: string, over: Partial<Session> = {}): Session {
  return {
    id,
    protocol: 'mqtt',
    clientId: id,
    deviceId: `dev-${id}`,
    username: `dev-${id}`,
    node: 'n',
    peerHost: '127.0.0.1',
    peerPort: 1,
    keepalive: 60,
    protoVer: 4,
    cleanStart: true,
    connected: true,
    createdAt: '',
    connectedAt: '',
    disconnectedAt: null,
    disconnectReason: null,
    topics: [],
    incarnation: '000000001.0000.n',
    version: 1,
    ...over
  }
}

const event = (type: string, s: Session): HubEvent => ({ seq: 1, time: '', type, node: 'n', deviceId: s.deviceId, owner: '', clientId: s.id, session: s })
const ids = (page: SessionPage) => page.rows.map((r) => r.id)

describe('console: a page of sessions kept current from events', () => {
  const page: SessionPage = { rows: [session('b'), session('d')], afterId: 'a', untilId: 'f' }

  it('puts a session that connects within the page range in id order, and none outside it', () => {
    assert.deepEqual(ids(applySessionEvent(page, event('session.connected', session('c')), {})), ['b', 'c', 'd'])
    assert.deepEqual(ids(applySessionEvent(page, event('session.connected', session('f')), {})), ['b', 'd', 'f'])
    // belongs to the page before (ids up to `a`) or after (past `f`)
    assert.equal(applySessionEvent(page, event('session.connected', session('a')), {}), page)
    assert.equal(applySessionEvent(page, event('session.connected', session('g')), {}), page)
    // the last page has no end
    assert.deepEqual(ids(applySessionEvent({ rows: page.rows, afterId: 'a' }, event('session.connected', session('z')), {})), ['b', 'd', 'z'])
  })

  it('leaves out a session the filters would not list', () => {
    assert.equal(applySessionEvent(page, event('session.connected', session('c', { protocol: 'coap' })), { protocol: 'mqtt' }), page)
    // a search by part of the client id, as GET /v1/sessions?clientIdContains= lists
    assert.equal(applySessionEvent(page, event('session.connected', session('c', { clientId: 'pump-7' })), { clientIdContains: 'valve' }), page)
    assert.deepEqual(ids(applySessionEvent(page, event('session.connected', session('c', { clientId: 'pump-7' })), { clientIdContains: 'mp-' })), ['b', 'c', 'd'])
    assert.deepEqual(ids(applySessionEvent(page, event('session.connected', session('c', { protocol: 'coap' })), { protocol: 'coap' })), ['b', 'c', 'd'])
  })

  it('replaces a row with the newer session, drops it when it ends or stops matching', () => {
    const subscribed = session('b', { version: 2, topics: [{ topic: 't', brokerTopic: 'x/t', qos: 1 }] })
    assert.deepEqual(applySessionEvent(page, event('session.subscribed', subscribed), {}).rows[0], subscribed)
    assert.deepEqual(ids(applySessionEvent(page, event('session.ended', session('b', { version: 2, connected: false })), {})), ['d'])
    const offline = session('b', { version: 2, connected: false })
    assert.deepEqual(ids(applySessionEvent(page, event('session.disconnected', offline), { connected: true })), ['d'])
    assert.equal(applySessionEvent(page, event('session.disconnected', offline), {}).rows[0]?.connected, false)
  })

  it('ignores an event older than the row (read before the page was): an older version, or an older connection', () => {
    const newer: SessionPage = { rows: [session('b', { version: 5 })] }
    assert.equal(applySessionEvent(newer, event('session.subscribed', session('b', { version: 4 })), {}), newer)
    const reconnected: SessionPage = { rows: [session('b', { incarnation: '000000002.0000.n' })] }
    assert.equal(applySessionEvent(reconnected, event('session.ended', session('b', { version: 9 })), {}), reconnected)
  })
})
