/**
 * RFC 7959 block options: Block2 for the gateway's notifications (§2.6, block-wise transfer with
 * Observe), and the codec Block1 shares with it (coap-block1.ts reassembles request bodies).
 *
 * node-coap 1.5 cuts an ordinary response of 1,024 bytes or more into blocks itself (its server's
 * OutMessage.end), but not a notification: ObserveWriteStream sends each payload whole, and
 * nothing larger than one datagram gets through. So a large notification carries its first
 * block (Block2 NUM 0 with the M bit, Size2 and an ETag), and the device fetches the others with
 * GETs carrying Block2, answered from the representation that notification started. These are
 * the option codecs and the slicing for that; the gateway does the exchanges.
 */

/** The largest block (SZX 6). SZX 7 is reserved in RFC 7959 (RFC 8323's BERT, CoAP over TCP only). */
export const MAX_BLOCK_SIZE = 1024

/** A block a request asks for: its number, counted in blocks of `size` bytes. */
export interface BlockRequest {
  num: number
  size: number
}

/** A block option a request carries but that cannot be served; `code` is the CoAP answer. */
export class BlockOptionError extends Error {
  constructor(
    readonly code: '4.00' | '4.02',
    message: string
  ) {
    super(message)
  }
}

/** A block option as read: NUM, the M bit, and the size SZX stands for. */
export interface Block extends BlockRequest {
  more: boolean
}

/**
 * Reads a request's Block1 or Block2 value (RFC 7959 §2.2): an unsigned integer of 0–3 bytes
 * holding NUM, then the M bit (which a server ignores in a Block2 request, §2.4), then SZX in the
 * low 3 bits.
 */
export function readBlock(value: Buffer, name: 'Block1' | 'Block2'): Block {
  // RFC 7252 §5.4.3: a value of a length outside the option's range is an unrecognized option,
  // and both block options are critical, so a request holding one is answered 4.02
  if (value.length > 3) throw new BlockOptionError('4.02', `a ${name} option holds at most 3 bytes, not ${value.length}`)
  const n = value.length === 0 ? 0 : value.readUIntBE(0, value.length)
  const szx = n & 7
  // RFC 7959 §2.2: SZX 7 "MUST lead to a 4.00 Bad Request response code upon reception in a request"
  if (szx === 7) throw new BlockOptionError('4.00', `${name} SZX 7 is reserved: block sizes are 16 to 1024 bytes (SZX 0 to 6)`)
  return { num: n >>> 4, more: (n & 8) !== 0, size: 2 ** (szx + 4) }
}

/** The Block1 or Block2 value of a block: NUM, M (`more`: blocks follow), SZX of `size`. */
export function blockValue(num: number, more: boolean, size: number): Buffer {
  return uintValue(num * 16 + (more ? 8 : 0) + (Math.log2(size) - 4))
}

/** An unsigned integer option value in as few bytes as it takes (RFC 7252 §3.2; 0 is empty). */
export function uintValue(n: number): Buffer {
  const length = n === 0 ? 0 : Math.ceil(Math.log2(n + 1) / 8)
  const value = Buffer.alloc(length)
  if (length > 0) value.writeUIntBE(n, 0, length)
  return value
}

/**
 * Block `num` of `payload` in blocks of `size` bytes, and whether more follow; null when it
 * starts past the end (block 0 always exists, even of an empty payload).
 */
export function sliceBlock(payload: Buffer, { num, size }: BlockRequest): { block: Buffer; more: boolean } | null {
  const start = num * size
  if (num > 0 && start >= payload.length) return null
  const end = Math.min(start + size, payload.length)
  return { block: payload.subarray(start, end), more: end < payload.length }
}
