/**
 * Server-sent events as written on the wire (WHATWG HTML, "Server-sent events"). An event is sent
 * as the default `message` type, its own `type` inside the JSON, so one `onmessage` sees them all.
 */
/** The frame of the event numbered `seq` whose JSON is `json` (one line: JSON escapes newlines in strings). */
export function eventFrame(seq: number, json: string): string {
  return `id: ${seq}\ndata: ${json}\n\n`
}

/** Frames as one buffer, encoded in place: no joined string is made only to be encoded. */
export function encodeFrames(frames: readonly string[]): Buffer {
  let length = 0
  for (const f of frames) length += Buffer.byteLength(f)
  const bytes = Buffer.allocUnsafe(length)
  let at = 0
  for (const f of frames) at += bytes.write(f, at)
  return bytes
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
