/**
 * Server-sent events as written on the wire (WHATWG HTML, "Server-sent events"). An event is sent
 * as the default `message` type, its own `type` inside the JSON, so one `onmessage` sees them all.
 */

/**
 * The frames of events (each its `seq` and its JSON: one line, as JSON escapes newlines inside
 * strings), `id: <seq>\ndata: <json>\n\n` each, as one buffer, written piece by piece: the
 * JSON strings are flat as JSON.stringify made them, while a frame string or a joined batch would
 * first be flattened into a copy only to be encoded.
 */
export function encodeFrames(events: readonly { seq: number; json: string }[]): Buffer {
  let length = 0
  for (const e of events) length += FRAME_OVERHEAD + digits(e.seq) + Buffer.byteLength(e.json)
  const bytes = Buffer.allocUnsafe(length)
  let at = 0
  for (const e of events) {
    at += bytes.write(`id: ${e.seq}\ndata: `, at, 'latin1')
    at += bytes.write(e.json, at, 'utf8')
    at += bytes.write('\n\n', at, 'latin1')
  }
  return bytes
}

/** Bytes of a frame besides its id's digits and its JSON: `id: `, `\ndata: ` and `\n\n`. */
const FRAME_OVERHEAD = 4 + 7 + 2

/** Decimal digits of a sequence number (a positive integer). */
function digits(n: number): number {
  let count = 1
  for (let power = 10; power <= n; power *= 10) count++
  return count
}

/**
 * A comment that keeps proxies from closing an idle stream. With `position`, it also moves the
 * consumer's last event id past the events its filter skipped (a block with an id and no data
 * dispatches nothing but sets the id), so a resume does not read them again.
 */
export function heartbeatFrame(position?: number): string {
  return position === undefined ? ': heartbeat\n\n' : `: heartbeat\nid: ${position}\n\n`
}

/** The last message before the hub closes a stream: why, and the sequence to resume after. */
export function closingFrame(error: string, message: string, resumeAfter: number): string {
  return `event: error\nid: ${resumeAfter}\ndata: ${JSON.stringify({ error, message, resumeAfter })}\n\n`
}
