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

/**
 * Puts the framing check between the socket and whoever reads it with `read()` (Aedes does).
 * On a violation the socket is destroyed with the error, which Aedes reports as a client error.
 */
export function guardPacketSize(socket: Socket, maxPacketSize: number, onViolation: (error: Error) => void): void {
  const framing = new PacketFraming(maxPacketSize)
  const read = socket.read.bind(socket)
  socket.read = (size?: number) => {
    const chunk = read(size) as Buffer | null
    if (chunk === null) return null
    try {
      framing.inspect(chunk)
      return chunk
    } catch (error) {
      onViolation(error as Error)
      socket.destroy(error as Error)
      return null
    }
  }
}
