/**
 * Refuses MQTT packets larger than a limit before the parser buffers them. Aedes has no such
 * limit, and mqtt-packet keeps a partial packet in memory until it is complete, so one client
 * announcing a 256 MB packet could make the hub hold 256 MB.
 *
 * It reads only the framing — each packet's fixed-header byte and its Remaining Length
 * (MQTT 3.1.1 §2.2.3) — and skips the body, so the cost is a few comparisons per chunk.
 */
import type { Socket } from 'node:net'

export class PacketTooLargeError extends Error {
  override name = 'PacketTooLargeError'
}

export class MalformedLengthError extends Error {
  override name = 'MalformedLengthError'
}

export class PacketFraming {
  private state: 'header' | 'length' | 'body' = 'header'
  private length = 0
  private multiplier = 1
  private lengthBytes = 0
  private remaining = 0

  constructor(private readonly maxPacketSize: number) {}

  /** Follows the packets in `chunk`; throws at the first one too large or malformed. */
  inspect(chunk: Buffer): void {
    let i = 0
    while (i < chunk.length) {
      if (this.state === 'body') {
        const skip = Math.min(this.remaining, chunk.length - i)
        i += skip
        this.remaining -= skip
        if (this.remaining === 0) this.state = 'header'
        continue
      }
      const byte = chunk[i++]!
      if (this.state === 'header') {
        this.state = 'length'
        this.length = 0
        this.multiplier = 1
        this.lengthBytes = 0
        continue
      }
      this.length += (byte & 0x7f) * this.multiplier
      this.multiplier *= 128
      this.lengthBytes++
      if (byte & 0x80) {
        if (this.lengthBytes === 4) throw new MalformedLengthError('remaining length longer than 4 bytes')
        continue
      }
      const total = 1 + this.lengthBytes + this.length
      if (total > this.maxPacketSize) throw new PacketTooLargeError(`packet of ${total} bytes exceeds the limit of ${this.maxPacketSize}`)
      this.remaining = this.length
      this.state = this.remaining === 0 ? 'header' : 'body'
    }
  }
}

/** Where a guarded socket keeps its framing (and its guard): on the socket, so nothing else per connection is needed. */
const FRAMING = Symbol('iothub packet framing')

type FramedSocket = Socket & { [FRAMING]: GuardedFraming }

/** A socket's framing, with the guard that watches it and the socket's own `read`. */
class GuardedFraming extends PacketFraming {
  constructor(
    readonly guard: PacketSizeGuard,
    readonly read: (this: Socket, size?: number) => unknown
  ) {
    super(guard.maxPacketSize)
  }
}

/**
 * Puts the framing check between each socket it guards and whoever reads it with `read()` (Aedes
 * does). On a violation the socket is destroyed with the error, which Aedes reports as a client
 * error, after `onViolation` is told. One guard serves every connection of a listener: what a
 * connection holds for it is its framing's few numbers — no closure, no bound function.
 */
export class PacketSizeGuard {
  constructor(
    readonly maxPacketSize: number,
    readonly onViolation: (socket: Socket, error: Error) => void
  ) {}

  guard(socket: Socket): void {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called on the socket by readFramed
    ;(socket as FramedSocket)[FRAMING] = new GuardedFraming(this, socket.read)
    socket.read = readFramed
  }
}

/** A guarded socket's `read`: the same for every socket, which it is called on. */
function readFramed(this: FramedSocket, size?: number): Buffer | null {
  const framing = this[FRAMING]
  const chunk = framing.read.call(this, size) as Buffer | null
  if (chunk === null) return null
  try {
    framing.inspect(chunk)
    return chunk
  } catch (error) {
    framing.guard.onViolation(this, error as Error)
    this.destroy(error as Error)
    return null
  }
}
