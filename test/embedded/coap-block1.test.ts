/**
 * RFC 7959 Block1 reassembly on its own, on a clock the test steps: real coap-packet datagrams
 * in, the datagrams the module answers parsed back. What a body is (peer, method, target,
 * Request-Tag or token), 2.31 for each block but the last, the last as one request, the refusals
 * (4.00, 4.02, 4.08, 4.13 with Size1), retransmissions, the bounds on what half-received bodies
 * and remembered answers hold, expiry; and the block option codecs of coap-blocks.ts.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { generate, parse, type ParsedPacket } from 'coap-packet'
import { Block1Reassembly, DEFAULT_BLOCK1_LIMITS, type Block1Limits, type Block1Outcome, type BodyAdmission } from '../../src/embedded/coap/coap-block1.js'
import { BlockOptionError, MAX_BLOCK_SIZE, blockValue, readBlock, sliceBlock, uintValue } from '../../src/embedded/coap/coap-blocks.js'
import { block1, option, readBlock1, requestTag, uint, uintBytes, uri } from '../helpers/coap.js'

const PEER = '10.0.0.1:5683'
const LIFETIME_MS = 247_000 // RFC 7252's EXCHANGE_LIFETIME

/** `admit`: what the gateway says of each block to be stored (by default, every body is taken, owned by its peer). */
function reassembly(limits: Partial<Block1Limits> = {}, admit: BodyAdmission = (_packet, peer) => ({ owner: peer })) {
  const clock = { now: 1_000_000 }
  const r = new Block1Reassembly({ ...DEFAULT_BLOCK1_LIMITS, maxBody: 1024, lifetimeMs: LIFETIME_MS, ...limits }, admit, () => clock.now)
  return { r, clock }
}

interface BlockRequest {
  messageId: number
  /** NUM, M, SZX of the Block1 option (omitted: no Block1). */
  block?: [num: number, more: boolean, szx: number]
  payload?: Buffer
  token?: Buffer
  code?: string
  path?: string[]
  query?: string[]
  tag?: Buffer
  size1?: number
  confirmable?: boolean
  /** A Block1 option value given as bytes, for values the builder cannot make. */
  rawBlock1?: Buffer
}

/** A request as the gateway gets it: generated, then parsed, with its datagram's size. */
function request(spec: BlockRequest): { packet: ParsedPacket; bytes: number } {
  const options = [...uri(spec.path ?? ['telemetry'], spec.query ?? ['clientid=d1'])] as { name: string; value: Buffer }[]
  if (spec.block) options.push(block1(...spec.block))
  if (spec.rawBlock1) options.push({ name: 'Block1', value: spec.rawBlock1 })
  if (spec.size1 !== undefined) options.push({ name: 'Size1', value: uintBytes(spec.size1) })
  if (spec.tag) options.push(requestTag(spec.tag))
  const datagram = generate({
    code: spec.code ?? '0.02',
    confirmable: spec.confirmable ?? true,
    messageId: spec.messageId,
    token: spec.token ?? Buffer.from([0xa1, 0xb2]),
    options,
    payload: spec.payload ?? Buffer.alloc(0)
  }, Number.MAX_SAFE_INTEGER)
  return { packet: parse(datagram), bytes: datagram.length }
}

function send(r: Block1Reassembly, spec: BlockRequest, peer = PEER): Block1Outcome | undefined {
  const { packet, bytes } = request(spec)
  return r.receive(packet, peer, bytes)
}

/** The answer datagram of an outcome, parsed; fails the test when the outcome is not an answer. */
function answerOf(outcome: Block1Outcome | undefined): ParsedPacket & { refused?: string } {
  assert.equal(outcome?.kind, 'answer', `expected an answer, got ${JSON.stringify(outcome?.kind)}`)
  // assert.equal narrowed the outcome to an answer
  return Object.assign(parse(outcome.datagram), { refused: outcome.refused })
}

function requestOf(outcome: Block1Outcome | undefined): { packet: ParsedPacket; block1: Buffer; bytes: number } {
  assert.equal(outcome?.kind, 'request', `expected the reassembled request, got ${JSON.stringify(outcome?.kind)}`)
  return { packet: parse(outcome.datagram), block1: outcome.block1, bytes: outcome.bytes }
}

/** Bytes 0..n-1 of a recognisable body, so a block stored twice or lost shows in the result. */
function body(n: number): Buffer {
  return Buffer.from(Array.from({ length: n }, (_, i) => i % 251))
}

/** Sends `payload` as blocks of 16 bytes (SZX 0) from message id `firstMid`, the last left out unless `finish`. */
function sendBlocks(r: Block1Reassembly, payload: Buffer, firstMid: number, extra: Partial<BlockRequest> = {}, finish = true): Block1Outcome[] {
  const outcomes: Block1Outcome[] = []
  const count = Math.max(1, Math.ceil(payload.length / 16))
  for (let num = 0; num < (finish ? count : count - 1); num++) {
    const more = num < count - 1
    outcomes.push(send(r, { messageId: firstMid + num, block: [num, more, 0], payload: payload.subarray(num * 16, num * 16 + 16), ...extra })!)
  }
  return outcomes
}

describe('Block1Reassembly', () => {
  it('leaves a request without Block1 alone', () => {
    const { r } = reassembly()
    assert.equal(send(r, { messageId: 1, payload: Buffer.from('whole') }), undefined)
  })

  it('answers each block but the last 2.31 on its ACK, with its token and Block1 echoed', () => {
    const { r } = reassembly()
    const token = Buffer.from([1, 2, 3, 4])
    const first = answerOf(send(r, { messageId: 100, token, block: [0, true, 0], payload: body(16) }))
    assert.equal(first.code, '2.31')
    assert.equal(first.ack, true, 'piggybacked on the ACK of a confirmable block')
    assert.equal(first.confirmable, false)
    assert.equal(first.messageId, 100)
    assert.deepEqual(first.token, token)
    assert.deepEqual(readBlock1(first), { num: 0, more: true, size: 16 })
    assert.equal(first.refused, undefined)
    const second = answerOf(send(r, { messageId: 101, token, block: [1, true, 0], payload: body(32).subarray(16) }))
    assert.deepEqual([second.code, second.messageId], ['2.31', 101])
    assert.deepEqual(readBlock1(second), { num: 1, more: true, size: 16 })
  })

  it('turns the last block into one request: its own message id and token, the whole body, no transfer options', () => {
    const { r } = reassembly()
    const payload = body(40)
    const sizes = [0, 1, 2].map((num) => request({ messageId: 10 + num, block: [num, num < 2, 0], payload: payload.subarray(num * 16, num * 16 + 16), tag: Buffer.from([7]), size1: 40 }).bytes)
    const outcomes = [0, 1, 2].map((num) => send(r, { messageId: 10 + num, block: [num, num < 2, 0], payload: payload.subarray(num * 16, num * 16 + 16), tag: Buffer.from([7]), size1: 40 }))
    assert.deepEqual(outcomes.slice(0, 2).map((o) => answerOf(o).code), ['2.31', '2.31'])
    const whole = requestOf(outcomes[2])
    assert.deepEqual(whole.packet.payload, payload)
    assert.equal(whole.packet.messageId, 12)
    assert.deepEqual(whole.packet.token, Buffer.from([0xa1, 0xb2]))
    assert.equal(whole.packet.code, '0.02')
    assert.deepEqual(whole.packet.options.map((o) => String(o.name)), ['Uri-Path', 'Uri-Query'], 'Block1, Size1 and Request-Tag are gone')
    assert.deepEqual(readBlock(whole.block1, 'Block1'), { num: 2, more: false, size: 16 }, 'the final answer carries the last block')
    assert.equal(whole.bytes, sizes[0]! + sizes[1]! + sizes[2]!, 'bytes is what all the datagrams took')
  })

  it('stores no block of a body the gateway would not take: refused with its code and reason, nothing kept of it', () => {
    const asked: string[] = []
    let refusing = true
    const { r } = reassembly({}, (packet) => {
      asked.push(packet.options.filter((o) => o.name === 'Uri-Query').map((o) => o.value.toString()).join('&'))
      return refusing ? { code: '4.01', message: 'no connection with this clientid and token', reason: 'not_authorized' } : { owner: 'd1' }
    })
    const refused = answerOf(send(r, { messageId: 1, block: [0, true, 0], payload: body(16), query: ['clientid=d1', 'token=t'] }))
    assert.deepEqual([refused.code, refused.refused, refused.messageId], ['4.01', 'not_authorized', 1])
    assert.match(refused.payload.toString(), /no connection/)
    // were block 0 stored, block 1 would continue it; it finds nothing (4.08)
    refusing = false
    const next = answerOf(send(r, { messageId: 2, block: [1, true, 0], payload: body(32).subarray(16), query: ['clientid=d1', 'token=t'] }))
    assert.equal(next.code, '4.08')
    assert.deepEqual(asked, ['clientid=d1&token=t', 'clientid=d1&token=t'])
  })

  it('asks of every block it would store, and forgets the body once one is refused (its connection ended meanwhile)', () => {
    let connected = true
    const { r } = reassembly({}, () => (connected ? { owner: 'd1' } : { code: '4.01', message: 'gone', reason: 'not_authorized' }))
    const payload = body(48)
    assert.equal(answerOf(send(r, { messageId: 1, block: [0, true, 0], payload: payload.subarray(0, 16) })).code, '2.31')
    connected = false
    assert.equal(answerOf(send(r, { messageId: 2, block: [1, true, 0], payload: payload.subarray(16, 32) })).code, '4.01')
    connected = true
    // block 1 again, with a new message id: block 0 is gone with the refusal
    assert.equal(answerOf(send(r, { messageId: 3, block: [1, true, 0], payload: payload.subarray(16, 32) })).code, '4.08')
  })

  it('does not ask of a body in one block: it goes on as a request, which the gateway checks whole', () => {
    const { r } = reassembly({}, () => ({ code: '4.01', message: 'never', reason: 'not_authorized' }))
    assert.deepEqual(requestOf(send(r, { messageId: 5, block: [0, false, 2], payload: body(50) })).packet.payload, body(50))
  })

  it('asks of a last block that completes a stored body, and forgets the body when refused', () => {
    let connected = true
    const { r } = reassembly({}, () => (connected ? { owner: 'd1' } : { code: '4.01', message: 'gone', reason: 'not_authorized' }))
    send(r, { messageId: 1, block: [0, true, 0], payload: body(16) })
    connected = false
    assert.equal(answerOf(send(r, { messageId: 2, block: [1, false, 0], payload: body(4) })).code, '4.01')
    connected = true
    assert.equal(answerOf(send(r, { messageId: 3, block: [1, false, 0], payload: body(4) })).code, '4.08', 'the body is gone')
  })

  it('takes a body in one block (NUM 0, no M) as a request of its own', () => {
    const { r } = reassembly()
    const { bytes } = request({ messageId: 5, block: [0, false, 2], payload: body(50) })
    const whole = requestOf(send(r, { messageId: 5, block: [0, false, 2], payload: body(50) }))
    assert.deepEqual(whole.packet.payload, body(50))
    assert.equal(whole.bytes, bytes)
  })

  it('reassembles a body larger than one datagram may be (coap-packet refuses > 1,280 bytes by default)', () => {
    const { r } = reassembly({ maxBody: 4096 })
    const payload = body(3000)
    let outcome: Block1Outcome | undefined
    for (let num = 0; num * 1024 < payload.length; num++) {
      const more = (num + 1) * 1024 < payload.length
      outcome = send(r, { messageId: 200 + num, block: [num, more, 6], payload: payload.subarray(num * 1024, num * 1024 + 1024) })
    }
    assert.deepEqual(requestOf(outcome).packet.payload, payload)
  })

  it('answers a retransmitted block (same message id) as the first time, and stores it once', () => {
    const { r } = reassembly()
    const payload = body(40)
    const [, second] = sendBlocks(r, payload, 300, {}, false)
    const again = send(r, { messageId: 301, block: [1, true, 0], payload: payload.subarray(16, 32) })
    assert.equal(again?.kind, 'answer')
    assert.deepEqual((again as { datagram: Buffer }).datagram, (second as { datagram: Buffer }).datagram, 'the same datagram again')
    const whole = requestOf(send(r, { messageId: 302, block: [2, false, 0], payload: payload.subarray(32) }))
    assert.deepEqual(whole.packet.payload, payload, 'block 1 is in the body once')
  })

  it('answers a retransmitted refusal with the same refusal, not by looking at the block again', () => {
    const { r } = reassembly()
    const payload = body(48)
    // block 1 overtook block 0: refused; then block 0 comes, after which block 1 would continue
    assert.equal(answerOf(send(r, { messageId: 7, block: [1, true, 0], payload: payload.subarray(16, 32) })).code, '4.08')
    assert.equal(answerOf(send(r, { messageId: 8, block: [0, true, 0], payload: payload.subarray(0, 16) })).code, '2.31')
    const again = answerOf(send(r, { messageId: 7, block: [1, true, 0], payload: payload.subarray(16, 32) }))
    assert.deepEqual([again.code, again.messageId], ['4.08', 7], 'the retransmission gets the answer its first copy got')
  })

  it('hands a retransmitted last block on as it came, for node-coap to answer from its cache', () => {
    const { r } = reassembly()
    const payload = body(20)
    const outcomes = sendBlocks(r, payload, 400)
    assert.equal(outcomes[1]!.kind, 'request')
    assert.deepEqual(send(r, { messageId: 401, block: [1, false, 0], payload: payload.subarray(16) }), { kind: 'retransmitted' })
  })

  it('answers the block stored last, sent again with a new message id, 2.31 again without storing it twice', () => {
    const { r } = reassembly()
    const payload = body(40)
    sendBlocks(r, payload, 500, {}, false)
    // its 2.31 was lost and the client's CoAP layer gave up; the application sends block 1 anew
    const again = answerOf(send(r, { messageId: 510, block: [1, true, 0], payload: payload.subarray(16, 32) }))
    assert.deepEqual([again.code, again.messageId], ['2.31', 510])
    assert.deepEqual(readBlock1(again), { num: 1, more: true, size: 16 })
    assert.deepEqual(requestOf(send(r, { messageId: 511, block: [2, false, 0], payload: payload.subarray(32) })).packet.payload, payload)
  })

  it('answers a block after a missing one 4.08 and forgets the body', () => {
    const { r } = reassembly()
    const payload = body(64)
    send(r, { messageId: 600, block: [0, true, 0], payload: payload.subarray(0, 16) })
    const gap = answerOf(send(r, { messageId: 602, block: [2, true, 0], payload: payload.subarray(32, 48) }))
    assert.equal(gap.code, '4.08')
    assert.equal(gap.refused, 'bad_coap_request')
    assert.deepEqual([gap.ack, gap.messageId], [true, 602])
    assert.match(gap.payload.toString(), /^block 2 starts at byte 32/)
    // the body is gone: even the block that was missing no longer continues it
    assert.equal(answerOf(send(r, { messageId: 601, block: [1, true, 0], payload: payload.subarray(16, 32) })).code, '4.08')
  })

  it('answers 4.08 to a block whose body was never begun, and to a block older than the last stored', () => {
    const { r } = reassembly()
    assert.equal(answerOf(send(r, { messageId: 1, block: [1, false, 0], payload: body(5) })).code, '4.08')
    const payload = body(64)
    sendBlocks(r, payload, 10, {}, false) // blocks 0, 1, 2 stored
    assert.equal(answerOf(send(r, { messageId: 20, block: [1, true, 0], payload: payload.subarray(16, 32) })).code, '4.08', 'block 1 after block 2: out of order')
  })

  it('begins a body again at block 0, dropping what the first attempt stored', () => {
    const { r } = reassembly()
    sendBlocks(r, Buffer.alloc(48, 0xee), 700, {}, false)
    const payload = body(20)
    const outcomes = sendBlocks(r, payload, 710)
    assert.deepEqual(requestOf(outcomes[1]).packet.payload, payload, 'nothing of the abandoned attempt is in the body')
  })

  it('tells a block of the same size (SZX) from a different one: a new block size cannot continue at a wrong offset', () => {
    const { r } = reassembly()
    sendBlocks(r, body(64), 800, {}, false) // blocks 0..2 of 16 bytes: 48 bytes received
    // block 1 of 32 bytes would start at byte 32, not 48
    assert.equal(answerOf(send(r, { messageId: 810, block: [1, true, 1], payload: body(32) })).code, '4.08')
  })

  it('answers 4.00 to a block that is not exactly its size (or a last block over it)', () => {
    const { r } = reassembly()
    const short = answerOf(send(r, { messageId: 1, block: [0, true, 0], payload: body(15) }))
    assert.deepEqual([short.code, short.refused], ['4.00', 'bad_coap_request'])
    assert.match(short.payload.toString(), /^block 0 holds 15 bytes/, 'a diagnostic, cut to fit the request')
    assert.equal(answerOf(send(r, { messageId: 2, block: [0, true, 0], payload: body(17) })).code, '4.00')
    assert.equal(answerOf(send(r, { messageId: 3, block: [0, false, 0], payload: body(17) })).code, '4.00', 'a last block may be shorter, not longer')
    assert.equal(requestOf(send(r, { messageId: 4, block: [0, false, 0], payload: body(16) })).packet.payload.length, 16)
  })

  it('answers 4.00 to SZX 7 and 4.02 to a Block1 of more than 3 bytes, and forgets the body', () => {
    const { r } = reassembly()
    const payload = body(48)
    sendBlocks(r, payload, 900, {}, false)
    const szx7 = answerOf(send(r, { messageId: 910, rawBlock1: Buffer.from([0x1f]), payload: body(16) })) // NUM 1, M, SZX 7
    assert.deepEqual([szx7.code, szx7.refused], ['4.00', 'bad_coap_request'])
    assert.equal(answerOf(send(r, { messageId: 911, block: [2, false, 0], payload: payload.subarray(32) })).code, '4.08', 'the body went with the bad block')
    const long = answerOf(send(r, { messageId: 912, rawBlock1: Buffer.from([0, 0, 0, 0x08]), payload: body(16) }))
    assert.deepEqual([long.code, long.refused], ['4.02', 'bad_coap_request'])
  })

  it('refuses a body announced larger than maxBody by Size1 at once: 4.13 with Size1 the limit', () => {
    const { r } = reassembly({ maxBody: 100 })
    const refused = answerOf(send(r, { messageId: 1, block: [0, true, 0], payload: body(16), size1: 101 }))
    assert.deepEqual([refused.code, refused.refused], ['4.13', 'packet_too_large'])
    assert.equal(uint(option(refused, 'Size1')), 100)
    assert.match(refused.payload.toString(), /101 bytes/)
    assert.equal(answerOf(send(r, { messageId: 2, block: [0, true, 0], payload: body(16), size1: 100 })).code, '2.31', 'exactly maxBody is taken')
  })

  it('refuses the block that takes a body past maxBody 4.13, and forgets the body; exactly maxBody is taken', () => {
    const { r } = reassembly({ maxBody: 40 })
    const over = sendBlocks(r, body(41), 1)
    assert.deepEqual(over.slice(0, 2).map((o) => answerOf(o).code), ['2.31', '2.31'])
    const refused = answerOf(over[2])
    assert.deepEqual([refused.code, refused.refused], ['4.13', 'packet_too_large'])
    assert.equal(uint(option(refused, 'Size1')), 40)
    const exact = sendBlocks(r, body(40), 10, { token: Buffer.from([9]) })
    assert.equal(requestOf(exact[2]).packet.payload.length, 40)
  })

  it('never answers a refusal larger than the block it answers (no amplification)', () => {
    const { r } = reassembly({ maxBody: 16 })
    const cases: BlockRequest[] = [
      { messageId: 1, block: [5, true, 0], payload: body(16), token: Buffer.alloc(0), path: [], query: [] },
      { messageId: 2, block: [0, true, 0], payload: body(1), token: Buffer.alloc(0), path: [], query: [] },
      { messageId: 3, block: [0, true, 0], payload: body(16), size1: 1_000_000, token: Buffer.alloc(8), path: [], query: [] },
      { messageId: 4, rawBlock1: Buffer.from([0x0f]), payload: Buffer.alloc(0), path: [], query: [] }
    ]
    for (const spec of cases) {
      const { packet, bytes } = request(spec)
      const outcome = r.receive(packet, PEER, bytes) as { datagram: Buffer }
      assert.ok(outcome.datagram.length <= bytes, `message ${spec.messageId}: ${outcome.datagram.length} bytes answer ${bytes}`)
    }
  })

  it('answers a non-confirmable block with a non-confirmable message of its own id, with the block token', () => {
    const { r } = reassembly()
    const a = answerOf(send(r, { messageId: 42, confirmable: false, block: [0, true, 0], payload: body(16) }))
    const b = answerOf(send(r, { messageId: 43, confirmable: false, block: [1, true, 0], payload: body(32).subarray(16) }))
    assert.deepEqual([a.code, a.ack, a.confirmable], ['2.31', false, false])
    assert.deepEqual(a.token, Buffer.from([0xa1, 0xb2]))
    assert.notEqual(a.messageId, b.messageId, 'each answer is a message of its own')
    assert.equal(b.messageId, (a.messageId + 1) % 0x10000)
  })

  it('ties blocks carrying a new token each by their Request-Tag (RFC 9175, libcoap)', () => {
    const { r } = reassembly()
    const payload = body(40)
    const tag = Buffer.from([0xca, 0xfe])
    const outcomes = [0, 1, 2].map((num) =>
      send(r, { messageId: 1000 + num, token: Buffer.from([num + 1]), tag, block: [num, num < 2, 0], payload: payload.subarray(num * 16, num * 16 + 16) })
    )
    const whole = requestOf(outcomes[2])
    assert.deepEqual(whole.packet.payload, payload)
    assert.deepEqual(whole.packet.token, Buffer.from([3]), 'the request is the last block’s')
  })

  it('keeps bodies apart by Request-Tag, by token without one, by peer, by method and by target', () => {
    const { r } = reassembly()
    const a = body(32)
    const b = Buffer.alloc(32, 0x55)
    const variants: [Partial<BlockRequest>, Partial<BlockRequest>, string?][] = [
      [{ tag: Buffer.from([1]) }, { tag: Buffer.from([2]) }],
      [{ token: Buffer.from([1]) }, { token: Buffer.from([2]) }],
      [{}, {}, '10.0.0.2:5683'],
      [{ code: '0.02' }, { code: '0.03' }],
      [{ path: ['telemetry'] }, { path: ['attributes'] }],
      [{ query: ['clientid=d1'] }, { query: ['clientid=d2'] }]
    ]
    let mid = 2000
    for (const [first, second, otherPeer] of variants) {
      // both bodies begun, then both finished, interleaved: neither takes the other's blocks
      send(r, { messageId: mid++, block: [0, true, 0], payload: a.subarray(0, 16), ...first })
      send(r, { messageId: mid++, block: [0, true, 0], payload: b.subarray(0, 16), ...second }, otherPeer ?? PEER)
      const one = requestOf(send(r, { messageId: mid++, block: [1, false, 0], payload: a.subarray(16), ...first }))
      const two = requestOf(send(r, { messageId: mid++, block: [1, false, 0], payload: b.subarray(16), ...second }, otherPeer ?? PEER))
      assert.deepEqual([one.packet.payload, two.packet.payload], [a, b], JSON.stringify(second))
    }
  })

  it('without a Request-Tag, a block with a new token does not continue the body (RFC 7959 clients keep theirs)', () => {
    const { r } = reassembly()
    send(r, { messageId: 1, token: Buffer.from([1]), block: [0, true, 0], payload: body(16) })
    assert.equal(answerOf(send(r, { messageId: 2, token: Buffer.from([2]), block: [1, false, 0], payload: body(4) })).code, '4.08')
  })

  it('keeps at most maxTransfersPerOwner bodies per owner (here its peer): a newer one forgets the owner’s oldest', () => {
    const { r } = reassembly({ maxTransfersPerOwner: 2 })
    const tags = [1, 2, 3].map((n) => Buffer.from([n]))
    let mid = 1
    for (const tag of tags) send(r, { messageId: mid++, tag, block: [0, true, 0], payload: body(16) })
    send(r, { messageId: mid++, tag: Buffer.from([9]), block: [0, true, 0], payload: body(16) }, '10.0.0.2:5683') // another peer's: not counted
    const finish = (tag: Buffer, peer = PEER) => send(r, { messageId: mid++, tag, block: [1, false, 0], payload: body(4) }, peer)
    assert.equal(answerOf(finish(tags[0]!)).code, '4.08', 'the oldest body of the peer was forgotten')
    assert.equal(finish(tags[1]!)?.kind, 'request')
    assert.equal(finish(tags[2]!)?.kind, 'request')
    assert.equal(finish(Buffer.from([9]), '10.0.0.2:5683')?.kind, 'request')
  })

  it('over maxTransfersPerOwner forgets the owner’s body continued least recently, not the one begun first', () => {
    const { r } = reassembly({ maxTransfersPerOwner: 2 })
    const [a, b, c] = [1, 2, 3].map((n) => Buffer.from([n]))
    let mid = 1
    send(r, { messageId: mid++, tag: a, block: [0, true, 0], payload: body(16) })
    send(r, { messageId: mid++, tag: b, block: [0, true, 0], payload: body(16) })
    send(r, { messageId: mid++, tag: a, block: [1, true, 0], payload: body(16) }) // a goes on: b is now the least recently continued
    send(r, { messageId: mid++, tag: c, block: [0, true, 0], payload: body(16) })
    assert.equal(answerOf(send(r, { messageId: mid++, tag: b, block: [1, false, 0], payload: body(4) })).code, '4.08', 'b was forgotten')
    assert.equal(send(r, { messageId: mid++, tag: a, block: [2, false, 0], payload: body(4) })?.kind, 'request', 'a, begun first but continued since, was kept')
    assert.equal(send(r, { messageId: mid++, tag: c, block: [1, false, 0], payload: body(4) })?.kind, 'request')
  })

  it('bounds an owner whose blocks come from several addresses and ports as one', () => {
    // the gateway's owner is the connection the token names, whatever port each body comes from
    const { r } = reassembly({ maxTransfersPerOwner: 2 }, () => ({ owner: 'connection-1' }))
    const peers = ['10.0.0.1:1001', '10.0.0.1:1002', '10.0.0.7:1003']
    peers.forEach((peer, i) => send(r, { messageId: i + 1, block: [0, true, 0], payload: body(16) }, peer))
    const finish = (peer: string, messageId: number) => send(r, { messageId, block: [1, false, 0], payload: body(4) }, peer)
    assert.equal(answerOf(finish(peers[0]!, 10)).code, '4.08', "the owner's oldest body was forgotten, though it came from another port")
    assert.equal(finish(peers[1]!, 11)?.kind, 'request')
    assert.equal(finish(peers[2]!, 12)?.kind, 'request')
  })

  it('answers a refusal with the wait it brings as Max-Age (RFC 8516)', () => {
    const { r } = reassembly({}, () => ({ code: '4.29', message: 'over 1000 requests a second: ask again in 1 s', reason: 'rate_limited', retryAfter: 1 }))
    const answer = answerOf(send(r, { messageId: 1, block: [0, true, 0], payload: body(16) }))
    assert.deepEqual([answer.code, answer.refused], ['4.29', 'rate_limited'])
    assert.deepEqual(answer.options.filter((o) => o.name === 'Max-Age').map((o) => o.value), [Buffer.from([1])])
  })

  it('keeps what was received through a refusal that says to wait: the block sent again after it continues the body', () => {
    let overRate = false
    const { r } = reassembly({}, () => (overRate ? { code: '4.29', message: 'ask again in 1 s', reason: 'rate_limited', retryAfter: 1 } : { owner: 'd1' }))
    const payload = body(40)
    const part = (num: number) => payload.subarray(num * 16, num * 16 + 16)
    assert.equal(answerOf(send(r, { messageId: 1, block: [0, true, 0], payload: part(0) })).code, '2.31')
    assert.equal(answerOf(send(r, { messageId: 2, block: [1, true, 0], payload: part(1) })).code, '2.31')
    overRate = true
    assert.equal(answerOf(send(r, { messageId: 3, block: [2, false, 0], payload: part(2) })).code, '4.29', 'the last block over the rate')
    assert.equal(answerOf(send(r, { messageId: 4, block: [1, true, 0], payload: part(1) })).code, '4.29', 'a stored block sent again, still over it')
    overRate = false
    // the wait is over: block 2 again, with a message id of its own
    assert.deepEqual(requestOf(send(r, { messageId: 5, block: [2, false, 0], payload: part(2) })).packet.payload, payload)
  })

  it('a body begun again holds its place once', () => {
    const { r } = reassembly({ maxTransfersPerOwner: 2 })
    send(r, { messageId: 1, tag: Buffer.from([1]), block: [0, true, 0], payload: body(16) })
    send(r, { messageId: 2, tag: Buffer.from([1]), block: [0, true, 0], payload: body(16) })
    send(r, { messageId: 3, tag: Buffer.from([2]), block: [0, true, 0], payload: body(16) })
    assert.equal(send(r, { messageId: 4, tag: Buffer.from([1]), block: [1, false, 0], payload: body(1) })?.kind, 'request', 'two bodies, within the limit')
    assert.equal(send(r, { messageId: 5, tag: Buffer.from([2]), block: [1, false, 0], payload: body(1) })?.kind, 'request')
  })

  it('a finished body frees its place: a peer at its limit may begin another', () => {
    const { r } = reassembly({ maxTransfersPerOwner: 1 })
    sendBlocks(r, body(20), 1, { tag: Buffer.from([1]) })
    send(r, { messageId: 10, tag: Buffer.from([2]), block: [0, true, 0], payload: body(16) })
    assert.equal(send(r, { messageId: 11, tag: Buffer.from([2]), block: [1, false, 0], payload: body(4) })?.kind, 'request')
  })

  it('a body forgotten by the bound on all bodies frees its owner’s place too', () => {
    const { r } = reassembly({ maxTransfers: 3, maxTransfersPerOwner: 2 })
    const [a1, a2, a3, b1, b2] = [1, 2, 3, 4, 5].map((n) => Buffer.from([n]))
    const [A, B] = ['10.0.0.1:1', '10.0.0.2:1']
    const begin = (tag: Buffer, peer: string, messageId: number) => send(r, { messageId, tag, block: [0, true, 0], payload: body(16) }, peer)
    begin(a1!, A, 1)
    begin(a2!, A, 2)
    begin(b1!, B, 3)
    send(r, { messageId: 4, tag: a2, block: [1, true, 0], payload: body(16) }, A) // a2 goes on: a1, b1, a2
    begin(b2!, B, 5) // four in all: a1, the least recently continued, is forgotten
    begin(a3!, A, 6) // A holds a2 and a3, within its two; four in all again: b1 goes
    const finish = (tag: Buffer, peer: string, num: number, messageId: number) => send(r, { messageId, tag, block: [num, false, 0], payload: body(4) }, peer)
    assert.equal(finish(a2!, A, 2, 7)?.kind, 'request', 'a2 was kept: A’s set no longer holds a1')
    assert.equal(answerOf(finish(b1!, B, 1, 8)).code, '4.08', 'b1 was the least recently continued')
    assert.equal(finish(b2!, B, 1, 9)?.kind, 'request')
    assert.equal(finish(a3!, A, 1, 10)?.kind, 'request')
    assert.equal(answerOf(finish(a1!, A, 1, 11)).code, '4.08', 'a1 was forgotten')
  })

  it('keeps at most maxTransfers bodies in all: over it, the least recently continued is forgotten', () => {
    const { r } = reassembly({ maxTransfers: 2 })
    const peers = ['10.0.0.1:1', '10.0.0.2:1', '10.0.0.3:1']
    const payload = body(64)
    send(r, { messageId: 1, block: [0, true, 0], payload: payload.subarray(0, 16) }, peers[0])
    send(r, { messageId: 1, block: [0, true, 0], payload: payload.subarray(0, 16) }, peers[1])
    // the first peer continues its body: now the second's is the least recently continued
    send(r, { messageId: 2, block: [1, true, 0], payload: payload.subarray(16, 32) }, peers[0])
    send(r, { messageId: 1, block: [0, true, 0], payload: payload.subarray(0, 16) }, peers[2])
    assert.equal(answerOf(send(r, { messageId: 3, block: [1, false, 0], payload: body(1) }, peers[1])).code, '4.08')
    assert.equal(send(r, { messageId: 3, block: [2, false, 0], payload: body(1) }, peers[0])?.kind, 'request')
    assert.equal(send(r, { messageId: 3, block: [1, false, 0], payload: body(1) }, peers[2])?.kind, 'request')
  })

  it('keeps at most maxBufferedBytes in half-received bodies, forgetting the least recently continued but never the current', () => {
    const { r } = reassembly({ maxBufferedBytes: 64, maxBody: 48 })
    send(r, { messageId: 1, tag: Buffer.from([1]), block: [0, true, 1], payload: body(32) }, '10.0.0.1:1')
    send(r, { messageId: 1, tag: Buffer.from([2]), block: [0, true, 1], payload: body(32) }, '10.0.0.2:1') // 64 bytes: at the bound
    send(r, { messageId: 1, tag: Buffer.from([3]), block: [0, true, 0], payload: body(16) }, '10.0.0.3:1') // 80: the first goes
    assert.equal(answerOf(send(r, { messageId: 2, tag: Buffer.from([1]), block: [1, false, 1], payload: body(1) }, '10.0.0.1:1')).code, '4.08')
    assert.equal(send(r, { messageId: 2, tag: Buffer.from([2]), block: [1, false, 1], payload: body(1) }, '10.0.0.2:1')?.kind, 'request')
    // the bound is never below maxBody: bodies holding up to maxBody in all are kept together
    const { r: small } = reassembly({ maxBufferedBytes: 16, maxBody: 48 })
    sendBlocks(small, body(48), 1, { tag: Buffer.from([1]) }, false) // 32 bytes
    send(small, { messageId: 5, tag: Buffer.from([2]), block: [0, true, 0], payload: body(16) }) // 48 in all
    assert.equal(send(small, { messageId: 10, tag: Buffer.from([1]), block: [2, false, 0], payload: body(16) })?.kind, 'request')
    assert.equal(send(small, { messageId: 11, tag: Buffer.from([2]), block: [1, false, 0], payload: body(1) })?.kind, 'request')
  })

  it('keeps at most maxAnswers answers: an older retransmission is then looked at afresh', () => {
    const { r } = reassembly({ maxAnswers: 2 })
    const payload = body(20)
    sendBlocks(r, payload, 1) // answers kept: message ids 1 and 2 (2 went to node-coap)
    send(r, { messageId: 3, token: Buffer.from([3]), block: [0, false, 0], payload: body(1) }) // ids 2 and 3
    assert.deepEqual(send(r, { messageId: 2, block: [1, false, 0], payload: payload.subarray(16) }), { kind: 'retransmitted' })
    send(r, { messageId: 4, token: Buffer.from([4]), block: [0, false, 0], payload: body(1) }) // ids 3 and 4
    // message 2 is no longer known: its body is long finished, so the block continues nothing
    assert.equal(answerOf(send(r, { messageId: 2, block: [1, false, 0], payload: payload.subarray(16) })).code, '4.08')
  })

  it('forgets a body no block continued for more than lifetimeMs; a block begins its time again', () => {
    const { r, clock } = reassembly()
    const payload = body(48)
    send(r, { messageId: 1, tag: Buffer.from([1]), block: [0, true, 0], payload: payload.subarray(0, 16) })
    send(r, { messageId: 1, tag: Buffer.from([2]), block: [0, true, 0], payload: payload.subarray(0, 16) }, '10.0.0.2:1')
    clock.now += LIFETIME_MS
    assert.equal(answerOf(send(r, { messageId: 2, tag: Buffer.from([1]), block: [1, true, 0], payload: payload.subarray(16, 32) })).code, '2.31', 'exactly lifetimeMs after its last block: kept')
    clock.now += 1
    assert.equal(answerOf(send(r, { messageId: 2, tag: Buffer.from([2]), block: [1, true, 0], payload: payload.subarray(16, 32) }, '10.0.0.2:1')).code, '4.08')
    assert.equal(send(r, { messageId: 3, tag: Buffer.from([1]), block: [2, false, 0], payload: payload.subarray(32) })?.kind, 'request', 'continued in time')
  })

  it('forgets the answers after lifetimeMs: a retransmission that late is looked at afresh', () => {
    const { r, clock } = reassembly()
    const payload = body(20)
    sendBlocks(r, payload, 1)
    clock.now += LIFETIME_MS
    assert.deepEqual(send(r, { messageId: 2, block: [1, false, 0], payload: payload.subarray(16) }), { kind: 'retransmitted' })
    clock.now += 1
    // its body long finished, the last block no longer continues anything
    assert.equal(answerOf(send(r, { messageId: 2, block: [1, false, 0], payload: payload.subarray(16) })).code, '4.08')
  })

  it('starts no timer: expiry happens only as blocks come or expire() is called', () => {
    const timers = () => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
    const before = timers()
    const { r } = reassembly()
    sendBlocks(r, body(48), 1, {}, false)
    sendBlocks(r, body(20), 100, { token: Buffer.from([5]) })
    assert.equal(timers(), before)
  })
})

describe('coap-blocks codecs', () => {
  it('reads NUM, M and SZX from 0 to 3 bytes', () => {
    assert.deepEqual(readBlock(Buffer.alloc(0), 'Block1'), { num: 0, more: false, size: 16 }, 'an empty value is 0')
    assert.deepEqual(readBlock(Buffer.from([0x0e]), 'Block2'), { num: 0, more: true, size: 1024 })
    assert.deepEqual(readBlock(Buffer.from([0x12]), 'Block1'), { num: 1, more: false, size: 64 })
    assert.deepEqual(readBlock(Buffer.from([0xff, 0xfe]), 'Block1'), { num: 0xfff, more: true, size: 1024 })
    assert.deepEqual(readBlock(Buffer.from([0xff, 0xff, 0xf6]), 'Block2'), { num: 0xfffff, more: false, size: 1024 }, 'the largest NUM, 2^20 - 1')
  })

  it('refuses SZX 7 with 4.00 and a value over 3 bytes with 4.02, naming the option', () => {
    assert.throws(() => readBlock(Buffer.from([0x07]), 'Block2'), (e: unknown) => e instanceof BlockOptionError && e.code === '4.00' && /Block2 SZX 7/.test(e.message))
    assert.throws(() => readBlock(Buffer.from([0, 0, 0, 0]), 'Block1'), (e: unknown) => e instanceof BlockOptionError && e.code === '4.02' && /Block1.*not 4/.test(e.message))
  })

  it('writes a block value readBlock reads back, in as few bytes as it takes', () => {
    for (const [num, more, size] of [[0, false, 16], [0, true, 1024], [15, true, 32], [16, false, 256], [4095, true, 512], [0xfffff, false, 1024]] as const) {
      const value = blockValue(num, more, size)
      assert.deepEqual(readBlock(value, 'Block1'), { num, more, size }, `${num} ${more} ${size}`)
      assert.deepEqual(value, uintBytes(num * 16 + (more ? 8 : 0) + Math.log2(size) - 4))
    }
    assert.equal(blockValue(0, false, 16).length, 0, 'NUM 0, no M, SZX 0 is the empty value')
  })

  it('writes unsigned option values in the fewest bytes (0 is empty)', () => {
    const cases: [number, number[]][] = [[0, []], [1, [1]], [255, [255]], [256, [1, 0]], [65535, [255, 255]], [65536, [1, 0, 0]], [0xffffff, [255, 255, 255]], [0x1000000, [1, 0, 0, 0]], [0xffffffff, [255, 255, 255, 255]]]
    for (const [n, bytes] of cases) assert.deepEqual([...uintValue(n)], bytes, String(n))
  })

  it('slices a payload into blocks: the last says no more, a block past the end is none, block 0 always exists', () => {
    const payload = body(40)
    assert.deepEqual(sliceBlock(payload, { num: 0, size: 16 }), { block: payload.subarray(0, 16), more: true })
    assert.deepEqual(sliceBlock(payload, { num: 2, size: 16 }), { block: payload.subarray(32), more: false })
    assert.equal(sliceBlock(payload, { num: 3, size: 16 }), null)
    assert.deepEqual(sliceBlock(body(32), { num: 1, size: 16 }), { block: body(32).subarray(16), more: false }, 'a payload of whole blocks ends without M')
    assert.equal(sliceBlock(body(32), { num: 2, size: 16 }), null, 'no empty block after whole blocks')
    assert.deepEqual(sliceBlock(Buffer.alloc(0), { num: 0, size: 16 }), { block: Buffer.alloc(0), more: false })
    assert.equal(MAX_BLOCK_SIZE, 1024)
  })
})
