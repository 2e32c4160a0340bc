/**
 * Server-sent events read from a fetch body (an EventSource cannot send the Authorization
 * header): text in, one message out per block, as the HTML standard's parsing rules say —
 * lines end in \n, \r\n or \r; `:` starts a comment; a block ends at an empty line.
 */
export interface SseMessage {
  /** The `event:` field, `message` when there is none. */
  event: string
  data: string
  /** The `id:` field of this block, if it had one. */
  id?: string
}

export class SseParser {
  private buffer = ''
  private event = ''
  private data: string[] = []
  private id: string | undefined
  private sawField = false

  /** Feeds text as it arrives (any split); returns the messages it completed. */
  push(text: string): SseMessage[] {
    this.buffer += text
    const messages: SseMessage[] = []
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/)
      if (end < 0) break
      // a \r at the very end may be the first half of \r\n: wait for the next chunk
      if (this.buffer[end] === '\r' && end === this.buffer.length - 1) break
      const line = this.buffer.slice(0, end)
      this.buffer = this.buffer.slice(end + (this.buffer.startsWith('\r\n', end) ? 2 : 1))
      const message = this.line(line)
      if (message) messages.push(message)
    }
    return messages
  }

  private line(line: string): SseMessage | undefined {
    if (line === '') {
      const message = this.sawField && (this.data.length > 0 || this.id !== undefined) ? { event: this.event || 'message', data: this.data.join('\n'), ...(this.id !== undefined ? { id: this.id } : {}) } : undefined
      this.event = ''
      this.data = []
      this.id = undefined
      this.sawField = false
      return message
    }
    if (line.startsWith(':')) return undefined
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    this.sawField = true
    if (field === 'data') this.data.push(value)
    else if (field === 'event') this.event = value
    else if (field === 'id' && !value.includes('\0')) this.id = value
    return undefined
  }
}
