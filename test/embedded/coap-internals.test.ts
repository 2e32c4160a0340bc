/**
 * What src/embedded/coap/coap-internals.ts relies on in node-coap, checked against the installed
 * version with a real server and real datagrams (a raw coap-packet peer on UDP): each field
 * exists and means what the function takes it to mean. An upgrade of coap that changes one fails
 * here, with a message naming the function to revisit.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createSocket, Socket } from 'node:dgram'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { describe, it, type TestContext } from 'node:test'
import * as coap from 'coap'
import type { IncomingMessage, ObserveWriteStream, OutgoingMessage, Server } from 'coap'
import { generate, parse, type NamedOption, type Packet, type ParsedPacket } from 'coap-packet'
import {
  answerRefusals,
  endStreamWith,
  endUnaltered,
  interceptDatagrams,
  lastObserveNumber,
  nextNotificationConfirmable,
  piggybackTimedOut,
  replaceStreamOptions,
  requestPacket,
  roundExchangeLifetime,
  serverSocket,
  watchStreamSends,
  type DatagramListener,
  type SentMessage
} from '../../src/embedded/coap/coap-internals.js'
import { block2, observe, option, uint, uri } from '../helpers/coap.js'

const COAP_VERSION = (createRequire(import.meta.url)('coap/package.json') as { version: string }).version

/** How long a test waits for a datagram on loopback: generous, for a loaded machine. */
const DEADLINE_MS = 10_000

interface Exchange {
  req: IncomingMessage
  res: OutgoingMessage | ObserveWriteStream
  /** piggybackTimedOut(res) as the handler was called, before any timer could run. */
  timedOutAtStart: boolean
}

/** The requests a server's handler was given, in order, for a test to take one at a time. */
class Requests {
  private readonly arrived: Exchange[] = []
  private waiting: ((exchange: Exchange) => void) | undefined

  readonly handler = (req: IncomingMessage, res: OutgoingMessage | ObserveWriteStream): void => {
    const exchange = { req, res, timedOutAtStart: res instanceof coap.ObserveWriteStream ? false : piggybackTimedOut(res) }
    const waiting = this.waiting
    this.waiting = undefined
    if (waiting) waiting(exchange)
    else this.arrived.push(exchange)
  }

  get count(): number {
    return this.arrived.length
  }

  next(): Promise<Exchange> {
    const first = this.arrived.shift()
    if (first) return Promise.resolve(first)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no request reached the handler')), DEADLINE_MS)
      this.waiting = (exchange) => {
        clearTimeout(timer)
        resolve(exchange)
      }
    })
  }
}

/** A node-coap server on a free port, closed when the test ends. */
async function listening(ctx: TestContext, options: coap.CoapServerOptions = {}): Promise<{ server: Server; port: number; requests: Requests }> {
  const requests = new Requests()
  const server = coap.createServer({ reuseAddr: false, ...options }, requests.handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  ctx.after(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { server, port: serverSocket(server).address().port, requests }
}

/**
 * A CoAP peer speaking raw datagrams: it acknowledges each confirmable message it gets (so the
 * server stops retransmitting) and keeps every datagram, to be waited for by what it holds.
 */
class Peer {
  private readonly socket = createSocket('udp4')
  private messageId = 30_000
  readonly received: ParsedPacket[] = []
  private readonly waiting = new Set<() => void>()

  constructor(
    ctx: TestContext,
    private readonly port: number
  ) {
    ctx.after(() => this.socket.close())
    this.socket.on('message', (message) => {
      const packet = parse(message)
      if (packet.confirmable) this.socket.send(generate({ code: '0.00', ack: true, messageId: packet.messageId }), this.port, '127.0.0.1')
      this.received.push(packet)
      for (const check of this.waiting) check()
    })
  }

  nextMessageId(): number {
    return this.messageId++
  }

  send(packet: Packet): Promise<void> {
    return new Promise((resolve) => this.socket.send(generate(packet), this.port, '127.0.0.1', () => resolve()))
  }

  /** The first datagram received, or to come, that `match` picks. */
  next(what: string, match: (packet: ParsedPacket) => boolean): Promise<ParsedPacket> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.received.find(match)
        if (!found) return
        this.waiting.delete(check)
        clearTimeout(timer)
        resolve(found)
      }
      const timer = setTimeout(() => {
        this.waiting.delete(check)
        reject(new Error(`no datagram came: ${what}`))
      }, DEADLINE_MS)
      this.waiting.add(check)
      check()
    })
  }

  /** What came with this token. */
  withToken(token: Buffer): ParsedPacket[] {
    return this.received.filter((p) => p.token.equals(token))
  }
}

/** A peer's confirmable GET of /{path}, with a fresh token. */
function get(peer: Peer, path: string[], options: NamedOption[] = [], confirmable = true): { token: Buffer; messageId: number; packet: Packet } {
  const token = randomBytes(4)
  const messageId = peer.nextMessageId()
  return { token, messageId, packet: { code: '0.01', confirmable, messageId, token, options: [...options, ...uri(path, [])] } }
}

function names(packet: ParsedPacket): string[] {
  return packet.options.map((o) => String(o.name))
}

/** An observation the server holds: the stream, and the request's token and message id. */
async function observed(ctx: TestContext, confirmable = true): Promise<{ peer: Peer; requests: Requests; stream: ObserveWriteStream; token: Buffer; messageId: number }> {
  const { port, requests } = await listening(ctx)
  const peer = new Peer(ctx, port)
  const request = get(peer, ['observed'], [observe(0)], confirmable)
  await peer.send(request.packet)
  const { res } = await requests.next()
  assert.ok(res instanceof coap.ObserveWriteStream, `node-coap ${COAP_VERSION} answers a GET with Observe 0 with an ObserveWriteStream`)
  return { peer, requests, stream: res, token: request.token, messageId: request.messageId }
}

describe(`coap-internals: what node-coap ${COAP_VERSION} does that the gateway relies on`, () => {
  it('requestPacket: the message id, token, type and options, in order, of the datagram a request came in', async (ctx) => {
    const { port, requests } = await listening(ctx)
    const peer = new Peer(ctx, port)
    const token = randomBytes(4)
    const messageId = peer.nextMessageId()
    await peer.send({ code: '0.02', confirmable: true, messageId, token, options: uri(['ps', 'a'], ['clientid=x', 't=y']), payload: Buffer.from('p') })
    const first = await requests.next()
    const packet = requestPacket(first.req)
    first.res.end()
    assert.deepEqual([packet.messageId, packet.token.toString('hex'), packet.confirmable, packet.reset], [messageId, token.toString('hex'), true, false], 'requestPacket: req._packet no longer holds the request’s message id, token and type')
    assert.deepEqual(
      packet.options.map((o) => [String(o.name), Buffer.from(o.value).toString('utf8')]),
      [['Uri-Path', 'ps'], ['Uri-Path', 'a'], ['Uri-Query', 'clientid=x'], ['Uri-Query', 't=y']],
      'requestPacket: req._packet.options no longer lists the request’s options by name, in order'
    )
    // a Non-confirmable request without a token
    await peer.send({ code: '0.01', confirmable: false, messageId: peer.nextMessageId(), options: uri(['b'], []) })
    const second = await requests.next()
    const bare = requestPacket(second.req)
    second.res.end()
    assert.deepEqual([bare.confirmable, bare.token.length], [false, 0], 'requestPacket: a NON request without a token is not read as one')
  })

  it('requestPacket: a Reset matching no message of the server reaches the handler, with reset set', async (ctx) => {
    const { port, requests } = await listening(ctx)
    const peer = new Peer(ctx, port)
    await peer.send({ code: '0.00', reset: true, confirmable: false, ack: false, messageId: peer.nextMessageId() })
    const { req } = await requests.next()
    // the gateway ignores such a request by this flag; were it not set, it would route a Reset
    assert.equal(requestPacket(req).reset, true, 'requestPacket: req._packet.reset no longer marks a Reset handed to the handler')
  })

  it('serverSocket: the bound UDP socket requests arrive on; refused before listen', async (ctx) => {
    assert.throws(() => serverSocket(coap.createServer()), /serverSocket/, 'serverSocket: an unbound server has a socket')
    const { server, port, requests } = await listening(ctx)
    const socket = serverSocket(server)
    assert.ok(socket instanceof Socket)
    assert.ok(port > 0, 'serverSocket: server._sock is not bound to the port asked for (0: any)')
    const peer = new Peer(ctx, port)
    const request = get(peer, ['here'])
    await peer.send(request.packet)
    const { req, res } = await requests.next()
    res.end()
    assert.equal(requestPacket(req).messageId, request.messageId, 'serverSocket: a request sent to its port did not reach the server')
  })

  it('interceptDatagrams: node-coap listens with one listener, which hands a datagram to the handler before it returns', async (ctx) => {
    const { server, port, requests } = await listening(ctx)
    assert.equal(serverSocket(server).listenerCount('message'), 1, "interceptDatagrams: node-coap's listen no longer adds exactly one 'message' listener")
    const peer = new Peer(ctx, port)
    const dropped = get(peer, ['dropped'])
    const kept = get(peer, ['kept'])
    const seen: number[] = []
    const handledDuringDispatch: boolean[] = []
    let dispatching = false
    const nodeCoap: DatagramListener = interceptDatagrams(server, (message, rinfo) => {
      const messageId = message.readUInt16BE(2)
      seen.push(messageId)
      if (messageId === dropped.messageId) return
      dispatching = true
      try {
        nodeCoap(message, rinfo)
      } finally {
        dispatching = false
      }
    })
    server.on('request', () => handledDuringDispatch.push(dispatching))
    await peer.send(dropped.packet)
    await peer.send(kept.packet)
    const { req, res } = await requests.next()
    res.end()
    await peer.next('the answer to the request handed on', (p) => p.token.equals(kept.token))
    assert.deepEqual(seen, [dropped.messageId, kept.messageId], 'interceptDatagrams: the filter did not see every datagram')
    assert.equal(requestPacket(req).messageId, kept.messageId)
    assert.equal(requests.count, 0, 'interceptDatagrams: a datagram the filter kept back reached node-coap')
    assert.deepEqual(handledDuringDispatch, [true], "interceptDatagrams: node-coap's listener no longer calls the handler before it returns")
  })

  it('answerRefusals: what node-coap refuses itself goes to the replacement, while the request is handed on, and node-coap sends nothing', async (ctx) => {
    const { server, port, requests } = await listening(ctx)
    const peer = new Peer(ctx, port)
    let dispatching = false
    const nodeCoap: DatagramListener = interceptDatagrams(server, (message, rinfo) => {
      dispatching = true
      try {
        nodeCoap(message, rinfo)
      } finally {
        dispatching = false
      }
    })
    const refusals: { code: string; why: string; dispatching: boolean }[] = []
    answerRefusals(server, (code, why) => refusals.push({ code, why: why.toString('utf8'), dispatching }))
    const observePost = get(peer, ['x'], [observe(0)])
    await peer.send({ ...observePost.packet, code: '0.02' })
    const fetch = get(peer, ['x'])
    await peer.send({ ...fetch.packet, code: '0.05' }) // FETCH without Content-Format
    const plain = get(peer, ['x'])
    await peer.send(plain.packet)
    const { res } = await requests.next()
    res.end()
    // any refusal node-coap sent itself went before this answer, on the same socket
    await peer.next('the answer to the plain GET', (p) => p.token.equals(plain.token))
    assert.deepEqual(
      refusals.map((r) => [r.code, r.dispatching]),
      [['5.00', true], ['4.15', true]],
      'answerRefusals: node-coap no longer refuses Observe on a POST and a FETCH without Content-Format through _sendError, while it is handed the request'
    )
    assert.match(refusals[0]!.why, /Observe/, 'answerRefusals: the text is not node-coap’s reason')
    assert.deepEqual(peer.received.map((p) => p.token.toString('hex')), [plain.token.toString('hex')], 'answerRefusals: node-coap still sent a refusal of its own')
  })

  it('piggybackTimedOut: false until node-coap sends its empty ACK, then true; endUnaltered then answers separately', async (ctx) => {
    const { port, requests } = await listening(ctx, { piggybackReplyMs: 10 })
    const peer = new Peer(ctx, port)
    const request = get(peer, ['slow'])
    await peer.send(request.packet)
    const { res, timedOutAtStart } = await requests.next()
    assert.ok(!(res instanceof coap.ObserveWriteStream))
    assert.equal(timedOutAtStart, false, 'piggybackTimedOut: true for an answer that can still ride on the ACK')
    await peer.next('the empty ACK sent past the piggyback delay', (p) => p.ack && p.code === '0.00' && p.messageId === request.messageId)
    assert.equal(piggybackTimedOut(res), true, 'piggybackTimedOut: res._packet.ack no longer cleared when node-coap sends the empty ACK')
    endUnaltered(res, Buffer.from('late'))
    const answer = await peer.next('the separate answer', (p) => p.token.equals(request.token))
    assert.deepEqual(
      [answer.code, answer.confirmable, answer.ack, answer.payload.toString('utf8')],
      ['2.05', true, false, 'late'],
      'endUnaltered: an answer past the piggyback delay no longer goes as a confirmable message of its own'
    )
    assert.notEqual(answer.messageId, request.messageId, 'endUnaltered: the separate answer reuses the request’s message id')
  })

  it('endUnaltered: sends the payload and options as given, where the server’s own end cuts by the request’s Block2', async (ctx) => {
    const { port, requests } = await listening(ctx)
    const peer = new Peer(ctx, port)
    // Block2 NUM 1 of 1,024: node-coap's end takes the payload for the whole representation and,
    // with nothing past the first block, answers 4.02
    const request = get(peer, ['block'], [block2(1, 6)])
    await peer.send(request.packet)
    const { res } = await requests.next()
    assert.ok(!(res instanceof coap.ObserveWriteStream))
    const block = Buffer.alloc(100, 7)
    res.code = '2.05'
    res.setOption('Block2', block2(1, 6).value)
    endUnaltered(res, block)
    const answer = await peer.next('the answer', (p) => p.token.equals(request.token))
    assert.deepEqual(
      [answer.code, answer.ack, answer.messageId, names(answer), answer.payload.equals(block)],
      ['2.05', true, request.messageId, ['Block2'], true],
      'endUnaltered: OutgoingMessage.prototype.end no longer sends exactly what it is given (piggybacked on the ACK)'
    )
  })

  it('watchStreamSends: called after each message of an observe stream, with the message id generate drew', async (ctx) => {
    const { peer, stream, token, messageId } = await observed(ctx)
    const sent: SentMessage[] = []
    watchStreamSends(stream, (message) => sent.push(message))
    stream.write('first') // the answer to the observe, on its ACK
    const first = await peer.next('the first notification', (p) => p.token.equals(token) && p.payload.toString() === 'first')
    nextNotificationConfirmable(stream)
    stream.write('second')
    const second = await peer.next('the second notification', (p) => p.token.equals(token) && p.payload.toString() === 'second')
    assert.deepEqual([first.ack, first.messageId], [true, messageId])
    assert.deepEqual(
      sent,
      [
        { confirmable: false, ack: true, messageId },
        { confirmable: true, ack: false, messageId: second.messageId }
      ],
      'watchStreamSends: stream._send is no longer called with the packet sent, its message id set'
    )
  })

  it('nextNotificationConfirmable: the next write goes confirmable with a new message id, even on a NON observation', async (ctx) => {
    const { peer, stream, token, messageId } = await observed(ctx, false)
    stream.write('first')
    const first = await peer.next('the first notification', (p) => p.token.equals(token) && p.payload.toString() === 'first')
    assert.equal(first.confirmable, false, 'test premise: a NON observation’s notifications are NON')
    nextNotificationConfirmable(stream)
    stream.write('second')
    const second = await peer.next('the second notification', (p) => p.token.equals(token) && p.payload.toString() === 'second')
    assert.deepEqual([second.confirmable, second.ack], [true, false], 'nextNotificationConfirmable: stream._packet’s confirmable and ack no longer make the next message a CON')
    assert.ok(second.messageId !== messageId && second.messageId !== first.messageId, 'nextNotificationConfirmable: the notification reuses a message id')
  })

  it('replaceStreamOptions: options on the stream’s packet go with each later write until dropped', async (ctx) => {
    const { peer, stream, token } = await observed(ctx)
    const notified = (payload: string) => peer.next(`the notification "${payload}"`, (p) => p.token.equals(token) && p.payload.toString() === payload)
    stream.write('a')
    await notified('a')
    const etag = Buffer.from([1, 2, 3, 4])
    replaceStreamOptions(stream, new Set(['ETag', 'Block2']), [
      { name: 'ETag', value: etag },
      { name: 'Block2', value: block2(0, 6).value }
    ])
    stream.write('b')
    const b = await notified('b')
    stream.write('c')
    const c = await notified('c')
    replaceStreamOptions(stream, new Set(['ETag', 'Block2']))
    stream.write('d')
    const d = await notified('d')
    assert.deepEqual([option(b, 'ETag'), uint(option(b, 'Block2'))], [etag, 6], 'replaceStreamOptions: options added to stream._packet are not sent with the next write')
    assert.deepEqual(option(c, 'ETag'), etag, 'replaceStreamOptions: stream._packet’s options no longer stay from one write to the next')
    assert.deepEqual(names(d).sort(), ['Observe'], 'replaceStreamOptions: dropped options are still sent')
  })

  it('lastObserveNumber: the Observe number the last write sent', async (ctx) => {
    const { peer, stream, token } = await observed(ctx)
    const numbers: [number, number | undefined][] = []
    for (const payload of ['a', 'b', 'c']) {
      stream.write(payload)
      const notification = await peer.next(`the notification "${payload}"`, (p) => p.token.equals(token) && p.payload.toString() === payload)
      numbers.push([lastObserveNumber(stream), uint(option(notification, 'Observe'))])
    }
    assert.deepEqual(numbers, [[1, 1], [2, 2], [3, 3]], 'lastObserveNumber: stream._counter is no longer the Observe number of the last write')
  })

  it('endStreamWith: one message with exactly this code, options and payload, no Observe, and nothing more as the stream ends', async (ctx) => {
    const { peer, requests, stream, token, messageId } = await observed(ctx)
    const etag = Buffer.from([9, 9, 9, 9])
    const payload = Buffer.alloc(64, 1)
    endStreamWith(stream, '2.05', [{ name: 'ETag', value: etag }, block2(2, 2)], payload)
    if (!stream.writableFinished) await once(stream, 'finish')
    // anything the stream's finish sent went before the answer to this request
    const after = get(peer, ['after'])
    await peer.send(after.packet)
    ;(await requests.next()).res.end()
    await peer.next('the answer to a later request', (p) => p.token.equals(after.token))
    const sent = peer.withToken(token)
    assert.equal(sent.length, 1, `endStreamWith: the stream sent ${sent.length} messages (its finish sends an empty one when stream._counter is 0)`)
    const answer = sent[0]!
    assert.deepEqual(
      [answer.code, answer.ack, answer.messageId, names(answer), option(answer, 'ETag'), answer.payload.equals(payload)],
      ['2.05', true, messageId, ['ETag', 'Block2'], etag, true],
      'endStreamWith: stream._send no longer sends the packet as given, on the observe’s ACK'
    )
  })

  it('roundExchangeLifetime: createServer reads EXCHANGE_LIFETIME as it makes the server, and needs it in whole ms', (ctx) => {
    ctx.after(() => coap.defaultTiming())
    coap.updateTiming({ ackTimeout: 0.02, ackRandomFactor: 1.5, maxRetransmit: 4, maxLatency: 1 })
    assert.ok(!Number.isInteger(coap.parameters.exchangeLifetime * 1000), 'test premise: a 20 ms ACK_TIMEOUT leaves a fraction of a ms')
    assert.throws(() => coap.createServer(), /ttl/, 'roundExchangeLifetime: node-coap now takes a fractional EXCHANGE_LIFETIME: the rounding may go')
    const before = coap.parameters.exchangeLifetime
    roundExchangeLifetime()
    assert.ok(Number.isInteger(coap.parameters.exchangeLifetime) && coap.parameters.exchangeLifetime >= before)
    assert.doesNotThrow(() => coap.createServer().close(), 'roundExchangeLifetime: a server is still refused once EXCHANGE_LIFETIME is rounded')
  })
})
