/**
 * What the gateway does with a datagram before node-coap's server sees it. node-coap's server
 * listens on its socket with one 'message' listener; the gateway puts this filter in its place
 * (`CoapInbound.install`) and hands node-coap what it should handle:
 *
 * - a datagram that is no well-formed CoAP message (coap-datagram.ts) is counted
 *   (`malformed_packet`) and never reaches node-coap, whose answer to it was a 5.00 carrying its
 *   parser's error text: it is ignored, or, when Confirmable, rejected with a 4-byte Reset
 *   (RFC 7252 §4.2); so is a Confirmable message with a code of a reserved class, and an Empty
 *   Confirmable message (a CoAP ping, §4.3) gets its Reset too;
 * - a request still being handled is not handled again when a copy of it (a retransmission: the
 *   same message id from the same peer) arrives. node-coap de-duplicates only requests it has
 *   answered, from its cache of answers, so a retransmitted connect arriving while the first was
 *   being stored made a second connection whose token replaced the first's. The copy is dropped
 *   (the client sends it again, and by then the answer is cached), or, once the handler has gone
 *   past node-coap's piggyback delay and sent an empty ACK, answered with an empty ACK again,
 *   which node-coap's cache cannot do: it files that ACK under a key no retransmission matches;
 * - a request carrying Block1 goes to the Block1 reassembly (coap-block1.ts): a block is answered
 *   here, on the socket; a whole body goes on to node-coap as one request;
 * - an ACK or a Reset is reported (`replied`) before node-coap sees it: the gateway learns so
 *   which of its confirmable notifications were answered.
 *
 * node-coap also refuses some well-formed requests itself (Observe on a POST, an error thrown
 * while it handles one), with a 5.00 carrying the error's text, sent to the wrong address (the
 * peer's port on this host) and with a message id and token of its own. Those refusals are
 * answered here instead: the code alone, on the request's message id and token — never larger
 * than the request, never internal text — and counted (`bad_coap_request`).
 */
import type { RemoteInfo, Socket } from 'node:dgram'
import type { IncomingMessage, Server } from 'coap'
import { generate, parse, type ParsedPacket } from 'coap-packet'
import { StampQueue } from '../../collections/stamp-queue.js'
import type { RejectReason } from '../../observability/metrics.js'
import type { Block1Reassembly } from './coap-block1.js'
import { checkDatagram, resetFor } from './coap-datagram.js'
import { answerRefusals, interceptDatagrams, requestPacket, serverSocket, type DatagramListener } from './coap-internals.js'

/** What the filter tells the gateway. */
export interface InboundHooks {
  /** A datagram or request refused here, to be counted. */
  reject(reason: RejectReason): void
  /** `peer` answered the gateway's message `messageId` with an ACK or a Reset. */
  replied(peer: string, messageId: number): void
  /** node-coap refused a request with `code`; `why` is its own text, kept out of the answer. */
  refused(code: string, why: string): void
}

/** Response classes 1, 6 and 7 are reserved (RFC 7252 §12.1). */
const RESERVED_CLASSES: ReadonlySet<string> = new Set(['1', '6', '7'])

export class CoapInbound {
  /** Requests being handled, by exchange (peer and message id): whether the empty ACK went already. */
  private readonly inProgress = new Map<string, () => boolean>()
  /** Requests answered after an empty ACK, by exchange, oldest first: when. */
  private readonly answeredSeparately = new Map<string, number>()
  /** Those exchanges by when they were answered (collections/stamp-queue.ts), oldest first. */
  private readonly answeredSeparatelyOrder = new StampQueue<string>((exchange) => this.answeredSeparately.get(exchange))
  /** The request being handed to node-coap, while it is (node-coap calls the handler synchronously). */
  private dispatching: { packet: ParsedPacket; rinfo: RemoteInfo; bytes: number; block1?: Buffer } | undefined

  private constructor(
    private readonly socket: Socket,
    private readonly nodeCoap: DatagramListener,
    private readonly block1: Block1Reassembly,
    private readonly hooks: InboundHooks,
    private readonly lifetimeMs: number,
    private readonly maxRemembered = 16_384
  ) {}

  /** Puts the filter between node-coap's server and the socket it listens on, and answers node-coap's refusals. */
  static install(server: Server, block1: Block1Reassembly, hooks: InboundHooks, lifetimeMs: number): CoapInbound {
    // the filter runs on datagrams to come, by when `inbound` is made
    const nodeCoap = interceptDatagrams(server, (message, rinfo) => inbound.receive(message, rinfo))
    const inbound = new CoapInbound(serverSocket(server), nodeCoap, block1, hooks, lifetimeMs)
    answerRefusals(server, (code, why) => inbound.refuse(code, why))
    return inbound
  }

  /**
   * The handler has a request: copies of it are not handled until `finished`. `emptyAckSent`
   * tells whether node-coap has acknowledged it already (its answer then goes separately).
   * Returns the size of the datagram(s) it came in (an answer to it must be no larger), and the
   * Block1 its answer carries when it is a reassembled body (RFC 7959 §2.3).
   */
  started(req: IncomingMessage, emptyAckSent: () => boolean): { requestBytes: number; block1?: Buffer } {
    const exchange = exchangeOf(req.rsinfo, requestPacket(req).messageId)
    this.inProgress.set(exchange, emptyAckSent)
    const dispatching = this.dispatching
    if (!dispatching || exchangeOf(dispatching.rinfo, dispatching.packet.messageId) !== exchange) return { requestBytes: 0 }
    return { requestBytes: dispatching.bytes, block1: dispatching.block1 }
  }

  /** The handler answered the request: node-coap answers copies from its cache (or, if it went separately, this filter does). */
  finished(req: IncomingMessage): void {
    const exchange = exchangeOf(req.rsinfo, requestPacket(req).messageId)
    const emptyAckSent = this.inProgress.get(exchange)
    this.inProgress.delete(exchange)
    if (!emptyAckSent?.()) return
    const at = Date.now()
    this.answeredSeparately.set(exchange, at)
    // queued once: while it is remembered, its copies are not handled again (receive)
    this.answeredSeparatelyOrder.push(exchange, at)
    if (this.answeredSeparately.size > this.maxRemembered) this.answeredSeparatelyOrder.deleteOldestFrom(this.answeredSeparately)
  }

  /** Forgets what is older than EXCHANGE_LIFETIME: no copy of it can arrive any more. */
  expire(at = Date.now()): void {
    this.block1.expire(at)
    this.answeredSeparatelyOrder.deleteStampedBefore(at - this.lifetimeMs, this.answeredSeparately)
  }

  private receive(message: Buffer, rinfo: RemoteInfo): void {
    const check = checkDatagram(message)
    if (check.kind !== 'message') {
      this.hooks.reject('malformed_packet')
      if (check.kind === 'reset') this.send(resetFor(check.messageId), rinfo)
      return
    }
    let packet: ParsedPacket
    try {
      packet = parse(message)
    } catch {
      // well formed, yet coap-packet cannot read it (no such datagram is known): as a format error
      this.hooks.reject('malformed_packet')
      return
    }
    const peer = peerOf(rinfo)
    if (packet.ack || packet.reset) {
      // answers to the gateway's own messages (notifications): node-coap stops retransmitting them
      this.hooks.replied(peer, packet.messageId)
      return this.dispatch(message, rinfo, packet)
    }
    if (packet.code === '0.00' || RESERVED_CLASSES.has(packet.code[0]!)) {
      // §4.2, §4.3: a Confirmable Empty message (a ping) or one of a reserved class is rejected
      // with a Reset; a Non-confirmable one is ignored (an Empty one is a format error, §4.3)
      if (packet.code !== '0.00' || !packet.confirmable) this.hooks.reject('malformed_packet')
      if (packet.confirmable) this.send(resetFor(packet.messageId), rinfo)
      return
    }
    // responses (node-coap ignores those it did not ask for)
    if (!packet.code.startsWith('0.')) return this.dispatch(message, rinfo, packet)
    const exchange = `${peer} ${packet.messageId}`
    const emptyAckSent = this.inProgress.get(exchange)
    if (emptyAckSent) {
      // a copy of a request being handled: an ACK now would stop the answer being piggybacked on
      // the ACK to come, so nothing unless node-coap has sent its empty ACK (lost, as the copy says)
      if (packet.confirmable && emptyAckSent()) this.emptyAck(packet, rinfo)
      return
    }
    if (this.answeredSeparately.has(exchange)) {
      if (packet.confirmable) this.emptyAck(packet, rinfo) // its answer is node-coap's to send again
      return
    }
    const outcome = this.block1.receive(packet, peer, message.length)
    if (!outcome || outcome.kind === 'retransmitted') return this.dispatch(message, rinfo, packet)
    if (outcome.kind === 'answer') {
      if (outcome.refused) this.hooks.reject(outcome.refused)
      this.send(outcome.datagram, rinfo)
      return
    }
    this.dispatch(outcome.datagram, rinfo, packet, outcome.bytes, outcome.block1)
  }

  /** Hands a datagram to node-coap; `bytes` is what the peer sent for it (all the blocks of a body). */
  private dispatch(datagram: Buffer, rinfo: RemoteInfo, packet: ParsedPacket, bytes = datagram.length, block1?: Buffer): void {
    this.dispatching = { packet, rinfo, bytes, block1 }
    try {
      this.nodeCoap(datagram, rinfo)
    } finally {
      this.dispatching = undefined
    }
  }

  /**
   * Answers a request node-coap refused, in its place: `code` alone, piggybacked on the ACK of a
   * Confirmable request, with the request's token. node-coap refuses while it is handed a
   * request, so the request is the one being dispatched; at any other time nothing is sent.
   */
  private refuse(code: string, why: Buffer): void {
    this.hooks.refused(code, why.toString('utf8'))
    const request = this.dispatching
    if (!request) return
    this.hooks.reject('bad_coap_request')
    const { packet, rinfo } = request
    const answer = packet.confirmable
      ? { code, messageId: packet.messageId, token: packet.token, ack: true, confirmable: false }
      : { code, token: packet.token, confirmable: false }
    this.send(generate(answer), rinfo)
  }

  private emptyAck(packet: ParsedPacket, rinfo: RemoteInfo): void {
    this.send(generate({ code: '0.00', ack: true, messageId: packet.messageId }), rinfo)
  }

  private send(datagram: Buffer, rinfo: RemoteInfo): void {
    // with a callback, a failed send is not an 'error' on the socket (node-coap's server would
    // re-emit it, with no listener); an answer lost so is like one lost on the way: the client
    // retransmits, and is answered again from what was kept
    this.socket.send(datagram, rinfo.port, rinfo.address, () => undefined)
  }
}

/** How the filter and the gateway name a peer. */
export function peerOf(rinfo: { address: string; port: number }): string {
  return `[${rinfo.address}]:${rinfo.port}`
}

/** A request's exchange: its peer and message id (RFC 7252 §4.5). */
function exchangeOf(rinfo: { address: string; port: number }, messageId: number | undefined): string {
  return `${peerOf(rinfo)} ${messageId}`
}
