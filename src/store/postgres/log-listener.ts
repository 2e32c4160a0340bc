/**
 * Listens for the change log's notifications on a connection of its own (a pooled one would be
 * handed to others) and tells the follower there is more to read. Notifications only wake it:
 * the follower reads from the last entry it applied, so one lost while the connection was down
 * costs nothing but the wait — on every (re)connect, and every POLL_MS besides, it reads anyway.
 */
import pg from 'pg'

const RECONNECT_MS = 1000
const POLL_MS = 5000

export class LogListener {
  private client: pg.Client | null = null
  private reconnectTimer: NodeJS.Timeout | undefined
  private pollTimer: NodeJS.Timeout | undefined
  private stopped = false
  private started = false
  lastError: Error | null = null

  constructor(
    private readonly connectionString: string,
    private readonly channel: string,
    /** There may be news, up to `head` when the notification said. */
    private readonly wake: (head?: number) => void
  ) {}

  start(): void {
    if (this.started) return
    this.started = true
    this.pollTimer = setInterval(() => this.wake(), POLL_MS)
    this.pollTimer.unref()
    void this.connect()
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.reconnectTimer)
    clearInterval(this.pollTimer)
    const client = this.client
    this.client = null
    await client?.end().catch(() => undefined)
  }

  private async connect(): Promise<void> {
    if (this.stopped) return
    const client = new pg.Client({ connectionString: this.connectionString, keepAlive: true })
    const lost = (error?: Error): void => {
      if (this.client !== client) return
      this.client = null
      this.lastError = error ?? new Error('the change log listener connection ended')
      client.end().catch(() => undefined)
      this.retry()
    }
    client.on('error', lost)
    client.on('end', () => lost())
    client.on('notification', (message) => {
      const head = Number(message.payload)
      this.wake(Number.isFinite(head) ? head : undefined)
    })
    this.client = client
    try {
      await client.connect()
      await client.query(`LISTEN ${pg.escapeIdentifier(this.channel)}`)
      if (this.stopped) return void client.end().catch(() => undefined)
      this.lastError = null
      // what was committed while nobody listened
      this.wake()
    } catch (error) {
      lost(error as Error)
    }
  }

  private retry(): void {
    if (this.stopped || this.reconnectTimer) return
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined
      void this.connect()
    }, RECONNECT_MS)
    this.reconnectTimer.unref()
  }
}
