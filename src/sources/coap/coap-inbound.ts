/**
 * What the gateway does with a datagram before node-coap's server sees it. node-coap's server
 * listens on its socket with one 'message' listener; the gateway puts this filter in its place
 * (`CoapInbound.install`) and hands node-coap what it should handle:
 *
 * - a datagram that is not CoAP is counted (`malformed_packet`) and handed on: node-coap answers it;
 * - a request still being handled is not handled again when a copy of it (a retransmission: the
 *   same message id from the same peer) arrives. node-coap de-duplicates only requests it has
 *   answered, from its cache of answers, so a retransmitted connect arriving while the first was
 *   being stored made a second connection whose token replaced the first's. The copy is dropped
 *   (the client sends it again, and by then the answer is cached), or, once the handler has gone
 *   past node-coap's piggyback delay and sent an empty ACK, answered with an empty ACK again,
 *   which node-coap's cache cannot do: it files that ACK under a key no retransmission matches;
 * - a request carrying Block1 goes to the Block1 reassembly (coap-block1.ts): a block is answered
 *   here, on the socket; a whole body goes on to node-coap as one request.
 */
import type { RemoteInfo, Socket } from 'node:dgram'
import { generate, parse, type ParsedPacket } from 'coap-packet'
import type { RejectReason } from '../../observability/metrics.js'
import type { Block1Reassembly } from './coap-block1.js'

type Listener = (message: Buffer, rinfo: RemoteInfo) => void

/** The request the handler was given, as node-coap's IncomingMessage has it. */
export interface InboundRequest {
  rsinfo: { address: string; port: number }
  _packet: { messageId?: number }
}

export class CoapInbound {
  /** Requests being handled, by exchange (peer and message id): whether the empty ACK went already. */
  private readonly inProgress = new Map<string, () => boolean>()
  /** Requests answered after an empty ACK, by exchange, oldest first: when. */
  private readonly answeredSeparately = new Map<string, number>()
  /** The reassembled request being handed to node-coap, while it is (node-coap calls the handler synchronously). */
  private reassembled: { exchange: string; block1: Buffer } | undefined

  private constructor(
    private readonly socket: Socket,
    private readonly nodeCoap: Listener,
    private readonly block1: Block1Reassembly,
    private readonly reject: (reason: RejectReason) => void,
    private readonly lifetimeMs: number,
    private readonly maxRemembered = 16_384
  ) {}

  /** Puts the filter between node-coap's server and the socket it listens on. */
  static install(socket: Socket, block1: Block1Reassembly, reject: (reason: RejectReason) => void, lifetimeMs: number): CoapInbound {
    const listeners = socket.listeners('message') as Listener[]
    // node-coap 1.5's server.listen adds exactly one; another version may do otherwise, and the
    // filter would then leave requests unfiltered: better to stop here
    if (listeners.length !== 1) throw new Error(`expected node-coap's one 'message' listener on the CoAP socket, found ${listeners.length}`)
    const inbound = new CoapInbound(socket, listeners[0]!, block1, reject, lifetimeMs)
    socket.removeListener('message', listeners[0]!)
    socket.on('message', (message: Buffer, rinfo: RemoteInfo) => inbound.receive(message, rinfo))
    return inbound
  }

  /**
   * The handler has a request: copies of it are not handled until `finished`. `emptyAckSent`
   * tells whether node-coap has acknowledged it already (its answer then goes separately).
   * Returns the Block1 its answer carries when it is a reassembled body (RFC 7959 §2.3).
   */
  started(req: InboundRequest, emptyAckSent: () => boolean): Buffer | undefined {
    const exchange = exchangeOf(req)
    this.inProgress.set(exchange, emptyAckSent)
    return this.reassembled?.exchange === exchange ? this.reassembled.block1 : undefined
  }

  /** The handler answered the request: node-coap answers copies from its cache (or, if it went separately, this filter does). */
  finished(req: InboundRequest): void {
    const exchange = exchangeOf(req)
    const emptyAckSent = this.inProgress.get(exchange)
    this.inProgress.delete(exchange)
    if (!emptyAckSent?.()) return
    this.answeredSeparately.set(exchange, Date.now())
    if (this.answeredSeparately.size > this.maxRemembered) this.answeredSeparately.delete(this.answeredSeparately.keys().next().value!)
  }

  /** Forgets what is older than EXCHANGE_LIFETIME: no copy of it can arrive any more. */
  expire(at = Date.now()): void {
    this.block1.expire(at)
    for (const [exchange, answeredAt] of this.answeredSeparately) {
      if (answeredAt >= at - this.lifetimeMs) break
      this.answeredSeparately.delete(exchange)
    }
  }

  private receive(message: Buffer, rinfo: RemoteInfo): void {
    let packet: ParsedPacket
    try {
      packet = parse(message)
    } catch {
      // node-coap answers a datagram it cannot parse itself, without calling the handler
      this.reject('malformed_packet')
      return this.nodeCoap(message, rinfo)
    }
    // responses, ACKs and RSTs (to the gateway's notifications), and pings, are node-coap's
    if (!packet.code.startsWith('0.') || packet.code === '0.00' || packet.ack || packet.reset) return this.nodeCoap(message, rinfo)
    const peer = peerOf(rinfo)
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
    const outcome = this.block1.receive(packet, peer)
    if (!outcome || outcome.kind === 'retransmitted') return this.nodeCoap(message, rinfo)
    if (outcome.kind === 'answer') {
      if (outcome.refused) this.reject(outcome.refused)
      this.send(outcome.datagram, rinfo)
      return
    }
    this.reassembled = { exchange, block1: outcome.block1 }
    try {
      this.nodeCoap(outcome.datagram, rinfo)
    } finally {
      this.reassembled = undefined
    }
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

function peerOf(rinfo: { address: string; port: number }): string {
  return `[${rinfo.address}]:${rinfo.port}`
}

function exchangeOf(req: InboundRequest): string {
  return `${peerOf(req.rsinfo)} ${req._packet.messageId}`
}
