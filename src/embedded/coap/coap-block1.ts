/**
 * RFC 7959 Block1: request bodies sent block-wise, reassembled by the gateway before node-coap's
 * server sees the request (coap-inbound.ts hands every request carrying Block1 here).
 *
 * node-coap 1.5 reassembles Block1 itself, but keyed by token and client: that works for a
 * client that keeps one token for all the blocks of a body (node-coap's own), not for one that
 * follows RFC 9175 — libcoap 4.3 sends each block with a new token and ties the blocks together
 * with a Request-Tag — whose blocks node-coap takes for bodies of their own, refusing the last
 * with 5.00 "Byte offset not the next in line...". Its reassembly has no bound either, on the
 * size of a body nor on the number of bodies a peer may leave half sent.
 *
 * Here a body is the blocks of one peer (address and port) with the same method, Uri-Path and
 * Uri-Query, and the same Request-Tag, or, without one, the same token (RFC 7959 clients that
 * keep it). Each block but the last is stored and answered 2.31 Continue, piggybacked on its ACK
 * with its own token, Block1 echoed. The last block becomes one request: its own packet (token,
 * message id) without Block1, Size1 and Request-Tag, the whole body as payload, so node-coap and
 * the gateway's handler see an ordinary request, and its answer reaches the client as the
 * answer to its last block. A block that does not continue its body (one missing, out of order,
 * or a body forgotten) is answered 4.08 Request Entity Incomplete; a body over `maxBody` bytes
 * — or announced so by Size1 — 4.13 with Size1 holding the limit (RFC 7959 §2.9.3).
 *
 * A retransmitted block (same peer, same message id) is answered again as it was the first
 * time, not stored twice; a retransmitted last block goes to node-coap as it came, which answers
 * it from its cache of answers (keyed by message id and token, as the reassembled request was).
 * The answers kept are bounded, so the block stored last, sent again, is also known by its
 * number: 2.31 again, not a 4.08 that would end a transfer going well.
 *
 * A block is stored only for a body the gateway would take (`admit`, asked of every block that
 * would be stored, and of a last block that completes a stored body): a peer without a
 * connection's token, or sending to a resource or topic it may not publish to, is refused at its
 * first block as it would be at its whole request, and holds no buffer. A refusal that says to
 * wait (the connection over its rate: 4.29 with Max-Age) keeps what was received, so the block
 * sent again after the wait continues the body; any other forgets it. The last block of a body in
 * one block needs no asking: it goes on as a request, which the gateway checks. What
 * the gateway admits has an owner (its connection), and the bodies half received are bounded per
 * owner, whichever addresses and ports its blocks come from.
 */
import { randomInt } from 'node:crypto'
import { generate, type NamedOption, type ParsedPacket } from 'coap-packet'
import { StampQueue } from '../../collections/stamp-queue.js'
import type { RejectReason } from '../../observability/metrics.js'
import { BlockOptionError, blockValue, readBlock, uintValue, type Block } from './coap-blocks.js'
import { diagnostic } from './coap-diagnostic.js'

/** RFC 9175's Request-Tag: coap-packet names options it does not know by their number. */
const REQUEST_TAG = '292'

/** The options that say what a request is for: with its method, they tell one body from another. */
const TARGET_OPTIONS: ReadonlySet<string> = new Set(['Uri-Host', 'Uri-Port', 'Uri-Path', 'Uri-Query'])

/** Options about the block-wise transfer itself, which the reassembled request no longer has. */
const TRANSFER_OPTIONS: ReadonlySet<string> = new Set(['Block1', 'Size1', REQUEST_TAG])

export interface Block1Limits {
  /** The largest body taken, in bytes (the gateway's publish limit). */
  maxBody: number
  /** A body with no block for this long is forgotten; an answer is repeated for this long (EXCHANGE_LIFETIME). */
  lifetimeMs: number
  /** Bodies one owner (the gateway: a connection) may have half received; a newer one makes its oldest forgotten. */
  maxTransfersPerOwner: number
  /** Bodies half received in all, and the bytes they hold; over either, the least recently continued is forgotten. */
  maxTransfers: number
  maxBufferedBytes: number
  /** Answers kept for retransmitted blocks; over this the oldest go. */
  maxAnswers: number
}

/** Why the gateway would not take a body; the block is answered `code`, counted as `reason`. */
export interface BodyRefusal {
  code: string
  message: string
  reason: RejectReason
  /** Seconds to wait before asking again: the answer's Max-Age (RFC 8516). */
  retryAfter?: number
}

/** The gateway would take the body: whose it is, for the bounds per owner. */
export interface BodyAdmitted {
  owner: string
}

/** Whether the gateway would take the body `packet` (from `peer`) is a block of. */
export type BodyAdmission = (packet: ParsedPacket, peer: string) => BodyAdmitted | BodyRefusal

export const DEFAULT_BLOCK1_LIMITS: Omit<Block1Limits, 'maxBody' | 'lifetimeMs'> = {
  maxTransfersPerOwner: 4,
  maxTransfers: 4096,
  maxBufferedBytes: 64 * 1024 * 1024,
  maxAnswers: 16_384
}

export type Block1Outcome =
  /** Send this datagram to the peer: 2.31 Continue, a refusal (`refused` says why, to count), or the answer a retransmitted block had. */
  | { kind: 'answer'; datagram: Buffer; refused?: RejectReason }
  /** The body is whole: node-coap gets this datagram instead of the last block; the final answer carries `block1`; `bytes` is what all the blocks took. */
  | { kind: 'request'; datagram: Buffer; block1: Buffer; bytes: number }
  /** A retransmitted last block: node-coap gets it as it came and answers it from its cache. */
  | { kind: 'retransmitted' }

/** A body being received. */
interface Transfer {
  /** Whose body it is (what `admit` said). */
  owner: string
  parts: Buffer[]
  bytes: number
  /** The size of the datagrams the blocks came in. */
  datagramBytes: number
  /** The last block stored: its number and size. */
  last: { num: number; size: number }
  lastBlockAt: number
  /** Which block of all it stored last (Block1Reassembly's count): its place among the bodies. */
  lastBlock: number
}

export class Block1Reassembly {
  /** By body. */
  private readonly transfers = new Map<string, Transfer>()
  /**
   * The bodies by the last block that continued them (collections/stamp-queue.ts), least
   * recently first: stamped with a count of blocks, not their time, which two blocks can share.
   */
  private readonly transferOrder = new StampQueue<string>((key) => this.transfers.get(key)?.lastBlock)
  private blocksStored = 0
  /** Each owner's bodies, at most `maxTransfersPerOwner` + 1 (for a moment): what `bound` looks through. */
  private readonly transfersByOwner = new Map<string, Set<string>>()
  private bufferedBytes = 0
  /** By peer and message id: what each block was answered (nothing: it went to node-coap). */
  private readonly answered = new Map<string, { at: number; datagram?: Buffer }>()
  /** The answered exchanges by when they were answered (collections/stamp-queue.ts), oldest first. */
  private readonly answeredOrder = new StampQueue<string>((exchange) => this.answered.get(exchange)?.at)
  /** Message ids of the answers to non-confirmable blocks (the gateway's own, RFC 7252 §4.4). */
  private messageId = randomInt(0x10000)

  constructor(
    private readonly limits: Block1Limits,
    private readonly admit: BodyAdmission,
    private readonly now: () => number = Date.now
  ) {}

  /**
   * What to do with a request from `peer`, which came in a datagram of `bytes`; undefined when it
   * carries no Block1 (not this module's).
   */
  receive(packet: ParsedPacket, peer: string, bytes: number): Block1Outcome | undefined {
    const option = packet.options.find((o) => o.name === 'Block1')
    if (!option) return undefined
    const at = this.now()
    this.expire(at)
    const exchange = `${peer} ${packet.messageId}`
    const seen = this.answered.get(exchange)
    if (seen) return seen.datagram ? { kind: 'answer', datagram: seen.datagram } : { kind: 'retransmitted' }
    const outcome = this.block(packet, peer, option.value, at, bytes)
    this.answered.set(exchange, { at, datagram: outcome.kind === 'answer' ? outcome.datagram : undefined })
    this.answeredOrder.push(exchange, at)
    if (this.answered.size > this.limits.maxAnswers) this.answeredOrder.deleteOldestFrom(this.answered)
    return outcome
  }

  /** Forgets the bodies no block continued, and the answers older than the lifetime. */
  expire(at = this.now()): void {
    const deadline = at - this.limits.lifetimeMs
    for (let key = this.transferOrder.oldest(); key !== undefined && this.transfers.get(key)!.lastBlockAt < deadline; key = this.transferOrder.oldest()) {
      this.forget(key)
    }
    this.answeredOrder.deleteStampedBefore(deadline, this.answered)
  }

  private block(packet: ParsedPacket, peer: string, value: Buffer, at: number, bytes: number): Block1Outcome {
    const key = transferKey(packet, peer)
    let block: Block
    try {
      block = readBlock(value, 'Block1')
    } catch (error) {
      if (!(error instanceof BlockOptionError)) throw error
      this.forget(key)
      return this.refuse(packet, bytes, error.code, error.message, 'bad_coap_request')
    }
    // asked of a block to be stored, and of a last block that completes a stored body
    let owner: string | undefined
    if (block.more || this.transfers.has(key)) {
      const admission = this.admit(packet, peer)
      if (!('owner' in admission)) {
        if (admission.retryAfter === undefined) {
          this.forget(key)
          return this.refuse(packet, bytes, admission.code, admission.message, admission.reason)
        }
        // to be asked again after a wait (over the rate): what was received stays, so the same
        // block, sent again then, continues the body
        return this.refuse(packet, bytes, admission.code, admission.message, admission.reason, [{ name: 'Max-Age', value: uintValue(admission.retryAfter) }])
      }
      owner = admission.owner
    }
    const size1 = packet.options.find((o) => o.name === 'Size1')
    // RFC 7959 §4: Size1 lets the client say how large the body will be, so it is refused at once
    if (size1 && size1.value.length <= 4 && readUint(size1.value) > this.limits.maxBody) {
      this.forget(key)
      return this.tooLarge(packet, bytes, `a body of ${readUint(size1.value)} bytes is larger than the ${this.limits.maxBody} taken`)
    }
    // RFC 7959 §2.3: every block but the last holds exactly the size its SZX says
    const length = packet.payload.length
    if (block.more ? length !== block.size : length > block.size) {
      this.forget(key)
      return this.refuse(packet, bytes, '4.00', `block ${block.num} holds ${length} bytes: a Block1 of ${block.size} bytes needs ${block.more ? 'exactly' : 'at most'} that many`, 'bad_coap_request')
    }
    const offset = block.num * block.size
    let transfer = this.transfers.get(key)
    if (block.num === 0) {
      // a body begun again (or begun while an older one with the same tag was left unfinished)
      if (transfer) this.forget(key)
      transfer = undefined
    } else if (transfer && block.more && block.num === transfer.last.num && block.size === transfer.last.size) {
      // the block stored last, again with a message id of its own or after its answer left the
      // answers kept: its 2.31 was lost (the next block would have followed it), so it gets
      // another, and is not stored twice
      return this.continue(packet, block)
    } else if (!transfer || transfer.bytes !== offset) {
      const received = transfer?.bytes ?? 0
      this.forget(key)
      return this.refuse(packet, bytes, '4.08', `block ${block.num} starts at byte ${offset} but ${received} bytes of this body were received: send it again from block 0`, 'bad_coap_request')
    }
    if (offset + length > this.limits.maxBody) {
      this.forget(key)
      return this.tooLarge(packet, bytes, `the body is larger than the ${this.limits.maxBody} bytes taken`)
    }
    if (!block.more) {
      const body = transfer ? Buffer.concat([...transfer.parts, packet.payload]) : packet.payload
      const received = (transfer?.datagramBytes ?? 0) + bytes
      if (transfer) this.forget(key)
      const request = { ...packet, options: packet.options.filter((o) => !TRANSFER_OPTIONS.has(String(o.name))), payload: body }
      // coap-packet refuses to generate more than 1,280 bytes unless told the most it may
      return { kind: 'request', datagram: generate(request, Number.MAX_SAFE_INTEGER), block1: blockValue(block.num, false, block.size), bytes: received }
    }
    if (!transfer) {
      // a block to be stored was admitted above, which named its owner
      if (owner === undefined) throw new Error('a block stored without an owner')
      transfer = { owner, parts: [], bytes: 0, datagramBytes: 0, last: block, lastBlockAt: at, lastBlock: 0 }
      const owned = this.transfersByOwner.get(owner)
      if (owned) owned.add(key)
      else this.transfersByOwner.set(owner, new Set([key]))
    }
    transfer.parts.push(packet.payload)
    transfer.bytes += length
    transfer.datagramBytes += bytes
    transfer.last = { num: block.num, size: block.size }
    transfer.lastBlockAt = at
    transfer.lastBlock = ++this.blocksStored
    this.bufferedBytes += length
    this.transfers.set(key, transfer)
    // queued again at the back, its older occurrence left behind to be passed over
    this.transferOrder.push(key, transfer.lastBlock)
    this.transferOrder.keepNear(this.transfers.size)
    this.bound(key, transfer.owner)
    return this.continue(packet, block)
  }

  /** 2.31 Continue: the block is stored, the next may come; Block1 echoes the block's. */
  private continue(packet: ParsedPacket, block: Block): Block1Outcome {
    return { kind: 'answer', datagram: this.answer(packet, '2.31', [{ name: 'Block1', value: blockValue(block.num, true, block.size) }]) }
  }

  /**
   * Keeps what half-received bodies hold bounded, so no owner (nor many) can take the memory: an
   * owner's oldest body goes when it has too many, and the least recently continued of all when
   * there are too many or they hold too much. Their next block is answered 4.08.
   */
  private bound(current: string, owner: string): void {
    const owned = this.transfersByOwner.get(owner)
    if (owned && owned.size > this.limits.maxTransfersPerOwner) {
      // the owner's body a block continued least recently: a look through the owner's own few
      let oldest: string | undefined
      let oldestBlock = Infinity
      for (const key of owned) {
        const lastBlock = this.transfers.get(key)!.lastBlock
        if (key === current || lastBlock >= oldestBlock) continue
        oldest = key
        oldestBlock = lastBlock
      }
      if (oldest !== undefined) this.forget(oldest)
    }
    const maxBytes = Math.max(this.limits.maxBufferedBytes, this.limits.maxBody)
    while (this.transfers.size > this.limits.maxTransfers || this.bufferedBytes > maxBytes) {
      const oldest = this.transferOrder.oldest()
      if (oldest === undefined || oldest === current) break // the only one left, and within maxBody
      this.forget(oldest)
    }
  }

  private forget(key: string): void {
    const transfer = this.transfers.get(key)
    if (!transfer) return
    this.transfers.delete(key)
    this.bufferedBytes -= transfer.bytes
    const owned = this.transfersByOwner.get(transfer.owner)
    owned?.delete(key)
    if (owned?.size === 0) this.transfersByOwner.delete(transfer.owner)
  }

  private tooLarge(packet: ParsedPacket, bytes: number, message: string): Block1Outcome {
    // RFC 7959 §2.9.3: Size1 in a 4.13 tells the largest body the server takes
    const datagram = this.answer(packet, '4.13', [{ name: 'Size1', value: uintValue(this.limits.maxBody) }], diagnostic(message, bytes, packet.token.length))
    return { kind: 'answer', datagram, refused: 'packet_too_large' }
  }

  private refuse(packet: ParsedPacket, bytes: number, code: string, message: string, reason: RejectReason, options: NamedOption[] = []): Block1Outcome {
    return { kind: 'answer', datagram: this.answer(packet, code, options, diagnostic(message, bytes, packet.token.length)), refused: reason }
  }

  /** An answer to a block: piggybacked on its ACK when it is confirmable, else a non-confirmable message; with its token. */
  private answer(request: ParsedPacket, code: string, options: NamedOption[], payload?: Buffer): Buffer {
    const messageId = request.confirmable ? request.messageId : (this.messageId = (this.messageId + 1) % 0x10000)
    return generate({ code, messageId, token: request.token, confirmable: false, ack: request.confirmable, options, payload })
  }
}

/** Which body a block belongs to (see the module's comment). */
function transferKey(packet: ParsedPacket, peer: string): string {
  const tags = packet.options.filter((o) => String(o.name) === REQUEST_TAG)
  // RFC 9175 §3.4: a Request-Tag tells bodies apart; without one, the token does (RFC 7959)
  const body = tags.length > 0 ? `tag ${tags.map((o) => o.value.toString('hex')).join(',')}` : `token ${packet.token.toString('hex')}`
  const target = packet.options.filter((o) => TARGET_OPTIONS.has(String(o.name))).map((o) => `${o.name}=${o.value.toString('hex')}`)
  return `${peer} ${packet.code} ${body} ${target.join('&')}`
}

function readUint(value: Buffer): number {
  return value.length === 0 ? 0 : value.readUIntBE(0, value.length)
}
