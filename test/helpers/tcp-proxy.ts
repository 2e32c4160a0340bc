/**
 * A TCP proxy in front of a real server, to make outages on demand:
 *
 * - `cut()`: every connection is destroyed, new ones are closed as soon as they arrive (the
 *   server went away, or refuses).
 * - `freeze()`: connections stay open but no byte moves either way, and new ones are accepted
 *   and left waiting (a network partition). What was sent meanwhile is held, not lost, and
 *   delivered on `restore()` — as TCP retransmits once a partition heals — and a side that
 *   closed meanwhile is closed on the other side only after that, so late bytes really arrive.
 * - `restore()`: back to forwarding.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'

type Mode = 'open' | 'cut' | 'frozen'

interface Side {
  socket: Socket
  /** Held while frozen: bytes, then `null` once the side ended. */
  held: (Buffer | null)[]
}

interface Pair {
  client: Side
  server: Side | null
  closed: boolean
}

export class TcpProxy {
  private readonly listener: Server
  private readonly pairs = new Set<Pair>()
  private mode: Mode = 'open'
  port = 0

  private constructor(
    private readonly targetHost: string,
    private readonly targetPort: number
  ) {
    this.listener = createServer((socket) => this.accept(socket))
  }

  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetHost, targetPort)
    await new Promise<void>((resolve) => proxy.listener.listen(0, '127.0.0.1', resolve))
    proxy.port = (proxy.listener.address() as AddressInfo).port
    return proxy
  }

  /** Connections currently open through the proxy. */
  get connections(): number {
    return this.pairs.size
  }

  cut(): void {
    this.mode = 'cut'
    for (const pair of this.pairs) this.close(pair)
  }

  freeze(): void {
    this.mode = 'frozen'
    for (const pair of this.pairs) {
      pair.client.socket.pause()
      pair.server?.socket.pause()
    }
  }

  restore(): void {
    this.mode = 'open'
    for (const pair of [...this.pairs]) {
      if (!pair.server) this.dial(pair)
      else this.flush(pair)
    }
  }

  async stop(): Promise<void> {
    for (const pair of this.pairs) this.close(pair)
    await new Promise<void>((resolve) => this.listener.close(() => resolve()))
  }

  private accept(socket: Socket): void {
    socket.on('error', () => undefined)
    if (this.mode === 'cut') {
      socket.destroy()
      return
    }
    const pair: Pair = { client: { socket, held: [] }, server: null, closed: false }
    this.pairs.add(pair)
    this.relay(pair, pair.client, () => pair.server)
    socket.on('close', () => {
      if (this.mode !== 'frozen') this.close(pair)
    })
    if (this.mode === 'frozen') socket.pause()
    else this.dial(pair)
  }

  private dial(pair: Pair): void {
    if (pair.closed) return
    const socket = connect(this.targetPort, this.targetHost)
    socket.on('error', () => undefined)
    const server: Side = { socket, held: [] }
    pair.server = server
    this.relay(pair, server, () => pair.client)
    socket.on('close', () => {
      if (this.mode !== 'frozen') this.close(pair)
    })
    socket.once('connect', () => this.flush(pair))
    if (this.mode === 'frozen') socket.pause()
  }

  /** Forwards what `from` reads to the other side, or holds it while frozen or not yet dialled. */
  private relay(pair: Pair, from: Side, other: () => Side | null): void {
    from.socket.on('data', (chunk: Buffer) => {
      const to = other()
      if (this.mode !== 'open' || !to || to.socket.connecting) from.held.push(chunk)
      else to.socket.write(chunk)
    })
    from.socket.on('end', () => {
      const to = other()
      if (this.mode !== 'open' || !to || to.socket.connecting) from.held.push(null)
      else to.socket.end()
    })
  }

  /** Delivers what was held, then lets bytes flow again. */
  private flush(pair: Pair): void {
    const server = pair.server
    if (!server || server.socket.connecting || pair.closed) return
    for (const [from, to] of [
      [pair.client, server],
      [server, pair.client]
    ] as const) {
      for (const chunk of from.held.splice(0)) {
        if (chunk === null) to.socket.end()
        else to.socket.write(chunk)
      }
      from.socket.resume()
    }
    // a side that closed while frozen: its bytes are delivered above, now it closes for good
    if (pair.client.socket.destroyed || server.socket.destroyed) {
      const survivor = pair.client.socket.destroyed ? server.socket : pair.client.socket
      survivor.end()
      this.pairs.delete(pair)
      pair.closed = true
    }
  }

  private close(pair: Pair): void {
    if (pair.closed) return
    pair.closed = true
    this.pairs.delete(pair)
    pair.client.socket.destroy()
    pair.server?.socket.destroy()
  }
}
