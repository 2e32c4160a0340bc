/**
 * Whether a datagram is a well-formed CoAP message (RFC 7252 §3), checked before anything
 * answers it. coap-packet's parser is lenient — it takes a token or an option value that runs
 * past the end of the datagram as a shorter one, and reserved token lengths as RFC 8974's
 * extended tokens — and node-coap answered what it could not parse with a 5.00 carrying the
 * parser's error text: a few bytes in, eighty out, on a UDP port anyone can send to with a
 * forged source address. So what is not well formed is never answered with more than it
 * brought:
 *
 * - fewer than 4 bytes, or a version other than 1: silently ignored (§3: "Messages with unknown
 *   version numbers MUST be silently ignored"; a shorter datagram is no message at all);
 * - a message format error in a Confirmable message: rejected with a Reset (§4.2), which is 4
 *   bytes, as long as the smallest message;
 * - a message format error in any other message: silently ignored (§4.2, §4.3).
 */
import { generate } from 'coap-packet'

export type DatagramCheck =
  | { kind: 'message' }
  /** Not answered at all. */
  | { kind: 'ignore'; why: string }
  /** A Confirmable message with a format error: answered with a Reset of its message id. */
  | { kind: 'reset'; messageId: number; why: string }

const VERSION = 1
const TYPE_CONFIRMABLE = 0
/** The payload marker (§3). */
const PAYLOAD_MARKER = 0xff
/** The extended-length nibbles of an option's delta and length (§3.1); 15 is reserved. */
const ONE_BYTE = 13
const TWO_BYTES = 14

export function checkDatagram(datagram: Buffer): DatagramCheck {
  if (datagram.length < 4) return { kind: 'ignore', why: `${datagram.length} bytes: shorter than a CoAP header` }
  const first = datagram[0]!
  if (first >> 6 !== VERSION) return { kind: 'ignore', why: `version ${first >> 6}` }
  const formatError = formatErrorOf(datagram)
  if (formatError === undefined) return { kind: 'message' }
  const confirmable = ((first >> 4) & 3) === TYPE_CONFIRMABLE
  return confirmable ? { kind: 'reset', messageId: datagram.readUInt16BE(2), why: formatError } : { kind: 'ignore', why: formatError }
}

/** The Reset rejecting message `messageId` (§4.2): an Empty message, 4 bytes. */
export function resetFor(messageId: number): Buffer {
  return generate({ code: '0.00', reset: true, confirmable: false, ack: false, messageId })
}

/** What makes a datagram of version 1 no well-formed message, if anything. */
function formatErrorOf(datagram: Buffer): string | undefined {
  const tokenLength = datagram[0]! & 0x0f
  // §3: "Lengths 9-15 are reserved, MUST NOT be sent, and MUST be processed as a message format error"
  if (tokenLength > 8) return `token length ${tokenLength} is reserved`
  const code = datagram[1]!
  // §4.1: an Empty message is the 4-byte header alone
  if (code === 0) return tokenLength === 0 && datagram.length === 4 ? undefined : 'an Empty message with a token or bytes after its header'
  let at = 4 + tokenLength
  if (at > datagram.length) return 'the token runs past the end'
  while (at < datagram.length) {
    const byte = datagram[at]!
    if (byte === PAYLOAD_MARKER) {
      // §3: "a marker followed by a zero-length payload MUST be processed as a message format error"
      return at + 1 === datagram.length ? 'a payload marker with no payload' : undefined
    }
    at++
    const delta = extended(byte >> 4, datagram, at)
    if (delta === undefined) return 'an option delta of 15, or one that runs past the end'
    at += delta.bytes
    const length = extended(byte & 0x0f, datagram, at)
    if (length === undefined) return 'an option length of 15, or one that runs past the end'
    at += length.bytes
    if (at + length.value > datagram.length) return 'an option value runs past the end'
    at += length.value
  }
  return undefined
}

/** An option delta or length from its nibble and the extended bytes after it (§3.1); undefined when malformed. */
function extended(nibble: number, datagram: Buffer, at: number): { value: number; bytes: number } | undefined {
  if (nibble < ONE_BYTE) return { value: nibble, bytes: 0 }
  if (nibble === ONE_BYTE) return at + 1 <= datagram.length ? { value: datagram[at]! + 13, bytes: 1 } : undefined
  if (nibble === TWO_BYTES) return at + 2 <= datagram.length ? { value: datagram.readUInt16BE(at) + 269, bytes: 2 } : undefined
  return undefined // RESERVED (15): a format error, unless it is the payload marker, read before
}
