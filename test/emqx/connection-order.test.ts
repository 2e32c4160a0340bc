/**
 * Which of two EMQX connections of one clientId is the newer: the same connection told again, a
 * newer one (proven by EMQX's `connected_at`, by authority of the REST listing, or unproven when
 * only arrival orders them), an older one; and what an incarnation minted here carries.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { newIncarnation } from '../../src/domain/incarnation.js'
import type { SessionRecord } from '../../src/domain/session.js'
import { brokerTimeOf, orderConnect, type ConnectOrder } from '../../src/emqx/connection-order.js'
import type { EmqxClient } from '../../src/emqx/emqx-client.js'

const T0 = 1_700_000_000_000

function client(fields: Partial<EmqxClient> = {}): EmqxClient {
  return {
    node: 'emqx@10.0.0.1',
    clientId: 'dev-1',
    username: 'dev-1',
    protocol: 'mqtt',
    peerHost: '10.1.1.1',
    peerPort: 40000,
    sockPort: 1883,
    mountpoint: 'dev-1/',
    protoVer: 4,
    keepalive: 60,
    cleanStart: true,
    expiryInterval: 0,
    connectedAt: undefined,
    ...fields
  }
}

/** An incarnation as orderConnect mints it: `<ms>.<counter>.~<connected_at base 36>~<node/host:port>`. */
function incarnation(connectedAt: number | undefined, connection = 'emqx@10.0.0.1/10.1.1.1:40000', ms = T0): string {
  return `${ms.toString(36).padStart(9, '0')}.0000.~${connectedAt === undefined ? '' : connectedAt.toString(36)}~${connection}`
}

/** The session holding (or having held) the connection `c`, under `inc`. */
function session(c: EmqxClient, inc: string, connected = true): SessionRecord {
  return {
    id: c.clientId,
    protocol: 'mqtt',
    clientId: c.clientId,
    deviceId: c.clientId,
    username: c.username,
    mountpoint: 'dev-1/',
    node: c.node,
    peerHost: c.peerHost,
    peerPort: c.peerPort ?? null,
    sockPort: 1883,
    keepalive: 60,
    protoVer: 4,
    cleanStart: true,
    expiryInterval: 0,
    connected,
    createdAt: T0,
    connectedAt: T0,
    disconnectedAt: connected ? null : T0 + 1,
    disconnectReason: connected ? null : 'client_disconnect',
    incarnation: inc,
    version: 1
  }
}

function newer(order: ConnectOrder): { incarnation: string; unproven: boolean } {
  assert.equal(order.verdict, 'newer', JSON.stringify(order))
  return order
}

describe('orderConnect', () => {
  it('a connect with no session and nothing ended is newer, proven, and its incarnation carries connected_at', () => {
    const c = client({ connectedAt: T0 + 5 })
    const order = newer(orderConnect(c, undefined, undefined, false))
    assert.equal(order.unproven, false)
    assert.equal(brokerTimeOf(order.incarnation), T0 + 5)
    assert.ok(order.incarnation.endsWith('~emqx@10.0.0.1/10.1.1.1:40000'), order.incarnation)
  })

  it('the live connection told again (same node and peer) is the same, with or without connected_at', () => {
    const held = incarnation(T0)
    const c = client({ connectedAt: T0 })
    assert.deepEqual(orderConnect(c, session(c, held), undefined, false), { verdict: 'same', incarnation: held })
    // ExHook carries no connected_at: the node and peer decide
    assert.deepEqual(orderConnect(client(), session(c, held), undefined, false), { verdict: 'same', incarnation: held })
    // a session whose incarnation has no connected_at (minted from an ExHook call)
    assert.deepEqual(orderConnect(c, session(c, incarnation(undefined)), undefined, false), { verdict: 'same', incarnation: incarnation(undefined) })
    // ExHook v1 carries no peer port: taken as the live connection when the rest matches
    assert.deepEqual(orderConnect(client({ peerPort: undefined }), session(c, held), undefined, false), { verdict: 'same', incarnation: held })
  })

  it('the REST listing of the very connection the session holds is the same too', () => {
    const held = incarnation(T0)
    const c = client({ connectedAt: T0 })
    assert.deepEqual(orderConnect(c, session(c, held), undefined, true), { verdict: 'same', incarnation: held })
  })

  it('the same peer with a later connected_at is a reconnect: newer, proven', () => {
    const c = client({ connectedAt: T0 })
    const order = newer(orderConnect(client({ connectedAt: T0 + 1000 }), session(c, incarnation(T0)), undefined, false))
    assert.equal(order.unproven, false)
    assert.equal(brokerTimeOf(order.incarnation), T0 + 1000)
  })

  it('the same peer with an earlier connected_at is older, and says why', () => {
    const c = client({ connectedAt: T0 })
    const order = orderConnect(client({ connectedAt: T0 - 1000 }), session(c, incarnation(T0)), undefined, false)
    assert.equal(order.verdict, 'older')
    assert.match((order as { why: string }).why, new RegExp(`emqx@10.0.0.1/10.1.1.1:40000 at ${T0 - 1000} is older than the session's connection at ${T0}`))
  })

  it('another connection replacing a live one: newer when connected_at proves it, older when it is earlier', () => {
    const live = client({ connectedAt: T0 })
    const held = session(live, incarnation(T0))
    const other = { node: 'emqx@10.0.0.2', peerPort: 41000 }
    assert.equal(newer(orderConnect(client({ ...other, connectedAt: T0 + 1 }), held, undefined, false)).unproven, false)
    assert.equal(orderConnect(client({ ...other, connectedAt: T0 - 1 }), held, undefined, false).verdict, 'older')
  })

  it('another connection replacing a live one with only arrival to order them is newer but unproven', () => {
    const live = client({ connectedAt: T0 })
    const cases: [string, EmqxClient, SessionRecord][] = [
      ['ExHook: no connected_at', client({ peerPort: 41000 }), session(live, incarnation(T0))],
      ['the session’s connection without connected_at', client({ peerPort: 41000, connectedAt: T0 + 1 }), session(live, incarnation(undefined))],
      ['equal connected_at (EMQX 4 counts seconds)', client({ peerPort: 41000, connectedAt: T0 }), session(live, incarnation(T0))]
    ]
    for (const [why, c, held] of cases) assert.equal(newer(orderConnect(c, held, undefined, false)).unproven, true, why)
  })

  it('the REST listing is newer than what the hub holds even with an earlier connected_at, and proven', () => {
    const live = client({ connectedAt: T0 })
    const order = newer(orderConnect(client({ peerPort: 41000, connectedAt: T0 - 5000 }), session(live, incarnation(T0)), undefined, true))
    assert.equal(order.unproven, false)
    assert.equal(brokerTimeOf(order.incarnation), T0 - 5000)
  })

  it('after the session went offline: a connect is newer and proven unless connected_at says it is older', () => {
    const gone = client({ connectedAt: T0 })
    const offline = session(gone, incarnation(T0), false)
    // the same peer again, after the disconnect: the session is not connected, so not "the same"
    assert.equal(newer(orderConnect(client({ connectedAt: T0 + 1 }), offline, undefined, false)).unproven, false)
    assert.equal(newer(orderConnect(client(), offline, undefined, false)).unproven, false, 'no live connection to replace: nothing to ask EMQX')
    assert.equal(orderConnect(client({ connectedAt: T0 - 1 }), offline, undefined, false).verdict, 'older')
  })

  it('with no session, a retried connect of the connection that ended is the same, not brought back', () => {
    const ended = incarnation(T0)
    assert.deepEqual(orderConnect(client({ connectedAt: T0 }), undefined, ended, false), { verdict: 'same', incarnation: ended })
  })

  it('with no session, what ended orders a connect: another peer at the same time is newer, an earlier one older', () => {
    const ended = incarnation(T0)
    assert.equal(newer(orderConnect(client({ peerPort: 41000, connectedAt: T0 }), undefined, ended, false)).unproven, false)
    assert.equal(newer(orderConnect(client({ node: 'emqx@b', connectedAt: T0 }), undefined, ended, false)).unproven, false)
    assert.equal(newer(orderConnect(client({ connectedAt: T0 + 1 }), undefined, ended, false)).unproven, false, 'the same peer, reconnected')
    assert.equal(orderConnect(client({ peerPort: 41000, connectedAt: T0 - 1 }), undefined, ended, false).verdict, 'older')
    assert.equal(newer(orderConnect(client(), undefined, ended, false)).unproven, false, 'without connected_at nothing proves it older')
  })

  it('the REST listing brings back the connection that ended, as a new incarnation', () => {
    const ended = incarnation(T0)
    const order = newer(orderConnect(client({ connectedAt: T0 }), undefined, ended, true))
    assert.notEqual(order.incarnation, ended)
    assert.ok(order.incarnation > ended)
  })

  it('mints an incarnation that sorts after the newest, even one minted by a clock far ahead', () => {
    const ahead = incarnation(T0, 'emqx@10.0.0.1/10.1.1.1:40000', Date.now() + 3_600_000)
    const fromEnded = newer(orderConnect(client({ peerPort: 41000, connectedAt: T0 + 1 }), undefined, ahead, false))
    assert.ok(fromEnded.incarnation > ahead, `${fromEnded.incarnation} > ${ahead}`)
    const live = client({ connectedAt: T0 })
    const aheadLive = incarnation(T0, 'emqx@10.0.0.1/10.1.1.1:40000', Date.now() + 7_200_000)
    const fromLive = newer(orderConnect(client({ peerPort: 41000 }), session(live, aheadLive), undefined, false))
    assert.ok(fromLive.incarnation > aheadLive, `${fromLive.incarnation} > ${aheadLive}`)
  })

  it('names a connection without a peer port or host by `?`', () => {
    const order = newer(orderConnect(client({ peerHost: null, peerPort: undefined }), undefined, undefined, false))
    assert.ok(order.incarnation.endsWith('~~emqx@10.0.0.1/?:?'), order.incarnation)
  })
})

describe('brokerTimeOf', () => {
  it('reads the connected_at an incarnation minted here carries', () => {
    assert.equal(brokerTimeOf(incarnation(T0)), T0)
    assert.equal(brokerTimeOf(incarnation(0)), 0)
    assert.equal(brokerTimeOf(newIncarnation(`~${(T0 + 7).toString(36)}~emqx@a/h:1`)), T0 + 7)
  })

  it('is undefined when it was not known, or the incarnation was minted elsewhere', () => {
    assert.equal(brokerTimeOf(incarnation(undefined)), undefined)
    assert.equal(brokerTimeOf(newIncarnation('hub-1')), undefined, 'an embedded-mode incarnation')
    assert.equal(brokerTimeOf(newIncarnation('hub~10~x')), undefined, 'a node part with tildes is no tag unless it begins with one')
    assert.equal(brokerTimeOf('not-an-incarnation'), undefined)
    assert.equal(brokerTimeOf('a.b'), undefined)
    assert.equal(brokerTimeOf('a.b.~'), undefined)
    assert.equal(brokerTimeOf('a.b.~!!~emqx@a/h:1'), undefined, 'not base 36')
  })

  it('keeps a connected_at EMQX sent as a fraction or before the epoch as a whole, non-negative number', () => {
    assert.equal(brokerTimeOf(newer(orderConnect(client({ connectedAt: T0 + 0.75 }), undefined, undefined, false)).incarnation), T0)
    assert.equal(brokerTimeOf(newer(orderConnect(client({ connectedAt: -5 }), undefined, undefined, false)).incarnation), 0)
  })
})
