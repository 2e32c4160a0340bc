/**
 * The diagnostic payload of an error answer (RFC 7252 §5.5.2), cut so the answer is never larger
 * than the request it answers. The gateway's UDP port is open to anyone, and a request's source
 * address can be forged: an answer larger than its request would let a few bytes sent to the hub
 * become many bytes sent to someone else. The text is cut at a character boundary; when no room
 * is left there is no payload (a diagnostic is optional).
 */

/**
 * What an error answer holds besides its diagnostic: the 4-byte header, the payload marker, and
 * the options it may carry — Observe (an observe stream's answer), Block1 or Size1 — up to 8 bytes.
 */
const OVERHEAD_BYTES = 4 + 1 + 8

/** At most the start of `message` that lets an answer echoing a token of `tokenLength` bytes fit in `requestBytes`. */
export function diagnostic(message: string, requestBytes: number, tokenLength: number): Buffer | undefined {
  const room = requestBytes - OVERHEAD_BYTES - tokenLength
  if (room <= 0) return undefined
  const text = Buffer.from(message)
  if (text.length <= room) return text
  let end = room
  // not in the middle of a UTF-8 sequence: back to the first byte of the character cut
  while (end > 0 && (text[end]! & 0xc0) === 0x80) end--
  return end > 0 ? text.subarray(0, end) : undefined
}
