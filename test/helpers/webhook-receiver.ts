/**
 * A webhook receiver for tests: a real HTTP server that records each POST (its raw body, whether
 * the `x-iothub-signature` is right for it, when it came), and can be taken down — answering 503,
 * or not listening at all — and brought back on the same port.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface ReceivedBatch {
  body: string
  signatureValid: boolean
  /** Epoch ms at arrival. */
  at: number
  events: { seq: number; type: string; deviceId: string; clientId?: string | null }[]
}

export class WebhookReceiver {
  readonly batches: ReceivedBatch[] = []
  /** Requests answered while failing (503) and those refused while closed are not recorded. */
  refused = 0
  private mode: 'up' | 'failing' = 'up'
  private server: Server
  private port = 0
  private readonly waiters: (() => void)[] = []

  private constructor(private readonly secret: string) {
    this.server = this.makeServer()
  }

  static async start(secret: string): Promise<WebhookReceiver> {
    const receiver = new WebhookReceiver(secret)
    await receiver.listen()
    return receiver
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hooks/iothub`
  }

  /** Every event received, in arrival order (repeats included). */
  get events(): ReceivedBatch['events'] {
    return this.batches.flatMap((b) => b.events)
  }

  /** Answers 503 to every POST from now on. */
  fail(): void {
    this.mode = 'failing'
  }

  /** Stops listening: connections are refused. */
  async close(): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  /** Listens again on the same port, answering 200. */
  async up(): Promise<void> {
    this.mode = 'up'
    if (!this.server.listening) {
      this.server = this.makeServer()
      await this.listen()
    }
  }

  /** Resolves once `check` holds, looked at after every batch received; rejects after `ms`. */
  async until(check: (r: WebhookReceiver) => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms
    while (!check(this)) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what} (${this.events.length} events received)`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500))
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  private makeServer(): Server {
    return createServer((req, res) => void this.handle(req, res))
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, '127.0.0.1', () => {
        this.port = (this.server.address() as AddressInfo).port
        resolve()
      })
    })
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    if (this.mode === 'failing') {
      this.refused++
      res.writeHead(503).end()
      return
    }
    const raw = Buffer.concat(chunks)
    const expected = Buffer.from(`sha256=${createHmac('sha256', this.secret).update(raw).digest('hex')}`)
    const given = Buffer.from(String(req.headers['x-iothub-signature'] ?? ''))
    const signatureValid = given.length === expected.length && timingSafeEqual(given, expected)
    const body = raw.toString('utf8')
    this.batches.push({ body, signatureValid, at: Date.now(), events: JSON.parse(body) as ReceivedBatch['events'] })
    res.writeHead(204).end()
    for (const wake of this.waiters.splice(0)) wake()
  }
}
