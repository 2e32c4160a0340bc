/**
 * A server-sent events client for tests: node:http, and the parsing rules of WHATWG HTML's "Server-sent
 * events" (fields, comments, the last event id a block without data still sets), so a test reads
 * a stream as an EventSource would.
 */

import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http'

export interface SseMessage {
  /** The last event id after this message (what an EventSource would send as Last-Event-ID). */
  lastEventId: string
  /** `message` unless the block named another type. */
  event: string
  data: string
}

export interface SseOptions {
  authorization?: string
  lastEventId?: string
  /** Read nothing until `resume()`: a consumer that does not keep up (its socket fills). */
  paused?: boolean
}

/** An open stream: messages as they arrive, comments, and the id a reconnect would resume after. */
export class SseStream {
  readonly messages: SseMessage[] = []
  readonly comments: string[] = []
  lastEventId = ''
  ended = false
  private readonly waiters: (() => void)[] = []
  private buffer = ''
  private data: string[] = []
  private eventType = ''
  private idBuffer: string | undefined

  private constructor(
    private readonly res: IncomingMessage,
    private readonly req: ClientRequest
  ) {
    const decoder = new TextDecoder()
    res.on('data', (chunk: Buffer) => this.feed(decoder.decode(chunk, { stream: true })))
    const end = () => {
      this.ended = true
      this.wake()
    }
    res.once('end', end)
    res.once('close', end)
    res.once('error', end)
  }

  /**
   * Opens `url`; a status other than 200 comes back with its JSON body and no stream. (node:http
   * rather than fetch: a paused response stops reading its socket, as a slow reader does, where
   * fetch would go on buffering the body in memory.)
   */
  static open(url: string, options: SseOptions = {}): Promise<{ status: number; body?: unknown; stream?: SseStream }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(url, {
        headers: {
          accept: 'text/event-stream',
          ...(options.authorization ? { authorization: options.authorization } : {}),
          ...(options.lastEventId !== undefined ? { 'last-event-id': options.lastEventId } : {})
        }
      })
      req.once('error', reject)
      req.once('response', (res) => {
        if (res.statusCode !== 200) {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => (text += chunk))
          res.once('end', () => {
            let body: unknown = text
            try {
              body = JSON.parse(text)
            } catch {
              // not JSON
            }
            resolve({ status: res.statusCode ?? 0, body })
          })
          return
        }
        const stream = new SseStream(res, req)
        stream.lastEventId = options.lastEventId ?? ''
        if (options.paused) res.pause()
        else stream.resume()
        resolve({ status: 200, stream })
      })
      req.end()
    })
  }

  /** Resolves once `check` holds of what arrived, or rejects after `ms` (or when the stream ends first). */
  async until(check: (s: SseStream) => boolean, ms = 20_000, what = 'the stream'): Promise<void> {
    const deadline = Date.now() + ms
    while (!check(this)) {
      if (this.ended) throw new Error(`${what}: the stream ended first (${this.messages.length} messages)`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${what}: timed out after ${ms} ms (${this.messages.length} messages)`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000))
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  /** The parsed JSON of each `message` event that arrived. */
  events<T = { seq: number; type: string }>(): T[] {
    return this.messages.filter((m) => m.event === 'message').map((m) => JSON.parse(m.data) as T)
  }

  close(): void {
    this.req.destroy()
  }

  /** Starts reading (a stream opened paused). */
  resume(): void {
    this.res.resume()
  }

  private feed(text: string): void {
    this.buffer += text
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer)
      if (!match) break
      // a lone \r at the end may be the first half of \r\n: wait for more
      if (match[0] === '\r' && match.index === this.buffer.length - 1) break
      const line = this.buffer.slice(0, match.index)
      this.buffer = this.buffer.slice(match.index + match[0].length)
      this.line(line)
    }
    this.wake()
  }

  private line(line: string): void {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) {
      this.comments.push(line.slice(1).trim())
      return
    }
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') this.data.push(value)
    else if (field === 'event') this.eventType = value
    else if (field === 'id' && !value.includes('\0')) this.idBuffer = value
  }

  private dispatch(): void {
    if (this.idBuffer !== undefined) this.lastEventId = this.idBuffer
    this.idBuffer = undefined
    const data = this.data
    const event = this.eventType || 'message'
    this.data = []
    this.eventType = ''
    if (data.length === 0) return
    this.messages.push({ lastEventId: this.lastEventId, event, data: data.join('\n') })
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }
}
