/**
 * Guards what one MQTT connection sends, before the parser sees it:
 *
 * - **No packet larger than a limit.** Aedes has no such limit, and mqtt-packet keeps a partial
 *   packet in memory until it is complete, so one client announcing a 256 MB packet could make the
 *   hub hold 256 MB. A packet too large, or a malformed length, closes the connection.
 * - **No more than its rate** of PUBLISH, SUBSCRIBE and UNSUBSCRIBE packets and their bytes
 *   (inbound-rate.ts). At the first such packet over it, what the connection sent from there on
 *   is put back into the socket's buffer and reading stops until the connection is within its
 *   rate again. The buffer then fills, Node stops reading the socket, and TCP holds the device
 *   back: what a device sends too fast waits on its own side, not in the hub's memory.
 *
 * Both read only the framing — each packet's fixed-header byte and its Remaining Length
 * (MQTT 3.1.1 §2.2.3) — and skip the bodies, so the cost is a few comparisons per chunk.
 */
import type { Socket } from 'node:net'
import { admits, charge, currentSecond, freeFrom, heldBy, NOT_RATED, type HeldBy, type InboundLimits, type RateUse } from './inbound-rate.js'

export class PacketTooLargeError extends Error {
  override name = 'PacketTooLargeError'
}

export class MalformedLengthError extends Error {
  override name = 'MalformedLengthError'
}

/** Control packet types held to the rate (MQTT 3.1.1 §2.2.1): PUBLISH, SUBSCRIBE, UNSUBSCRIBE. */
const RATED = new Set([3, 8, 10])

/** What each byte of a Remaining Length is worth, by its place (§2.2.3). */
const LENGTH_PLACES = [1, 128, 128 ** 2, 128 ** 3]

/** What the framing asks of a connection's rate at each rated packet's start. */
export interface RateCheck {
  admits(): boolean
  charge(bytes: number): void
}

export class PacketFraming {
  /** `rated-length`: the length of a packet held to the rate is being read; its bytes are charged once known. */
  private state: 'header' | 'length' | 'rated-length' | 'body' = 'header'
  private length = 0
  private lengthBytes = 0
  private remaining = 0

  constructor(private readonly maxPacketSize: number) {}

  /**
   * Follows the packets in `chunk`; throws at the first one too large or malformed. With a
   * `rate`, stops at the start of the first rated packet it does not admit: returns where
   * (`chunk.length` when it took the whole chunk). The framing is then at that packet's start,
   * and the bytes from there on are to be inspected again.
   */
  inspect(chunk: Buffer, rate?: RateCheck): number {
    let i = 0
    while (i < chunk.length) {
      if (this.state === 'body') {
        const skip = Math.min(this.remaining, chunk.length - i)
        i += skip
        this.remaining -= skip
        if (this.remaining === 0) this.state = 'header'
        continue
      }
      const byte = chunk[i]!
      if (this.state === 'header') {
        const rated = rate !== undefined && RATED.has(byte >> 4)
        if (rated && !rate.admits()) return i
        i++
        this.state = rated ? 'rated-length' : 'length'
        this.length = 0
        this.lengthBytes = 0
        continue
      }
      i++
      this.length += (byte & 0x7f) * LENGTH_PLACES[this.lengthBytes]!
      this.lengthBytes++
      if (byte & 0x80) {
        if (this.lengthBytes === 4) throw new MalformedLengthError('remaining length longer than 4 bytes')
        continue
      }
      const total = 1 + this.lengthBytes + this.length
      if (total > this.maxPacketSize) throw new PacketTooLargeError(`packet of ${total} bytes exceeds the limit of ${this.maxPacketSize}`)
      if (this.state === 'rated-length') rate!.charge(total)
      this.remaining = this.length
      this.state = this.remaining === 0 ? 'header' : 'body'
    }
    return chunk.length
  }
}

/** Where a guarded socket keeps its framing (and its guard): on the socket, so nothing else per connection is needed. */
const FRAMING = Symbol('iothub packet framing')

type FramedSocket = Socket & { [FRAMING]: GuardedFraming }

/**
 * A socket's framing, with the guard that watches it, the socket's own `read`, and the
 * connection's use of its rate (inbound-rate.ts): the fields are the connection's own, so that it
 * carries no other object for its rate.
 */
class GuardedFraming extends PacketFraming implements RateUse, RateCheck {
  rateSecond: number
  rateMessages = 0
  rateBytes = 0
  /** Whether reading is held now, or was before (the log says the first hold; the metric counts each). */
  hold: 'never' | 'now' | 'over' = 'never'

  constructor(
    readonly guard: InboundGuard,
    readonly read: (this: Socket, size?: number) => unknown
  ) {
    super(guard.maxPacketSize)
    this.rateSecond = guard.limits ? currentSecond() : NOT_RATED
  }

  admits(): boolean {
    return admits(this, this.guard.limits!, currentSecond())
  }

  charge(bytes: number): void {
    charge(this, bytes)
  }

  get rated(): boolean {
    return this.rateSecond !== NOT_RATED
  }
}

/**
 * Puts the framing check between each socket it guards and whoever reads it with `read()` (Aedes
 * does). On a violation the socket is destroyed with the error, which Aedes reports as a client
 * error, after `onViolation` is told. One guard serves every connection of a listener: what a
 * connection holds for it is its framing's few numbers — no closure, no bound function.
 */
export class InboundGuard {
  constructor(
    readonly maxPacketSize: number,
    /** Undefined: no rate. */
    readonly limits: InboundLimits | undefined,
    readonly onViolation: (socket: Socket, error: Error) => void,
    /** Told each time a connection's reading is held; `first` the first time for that connection. */
    readonly onHeld: (socket: Socket, by: HeldBy, first: boolean) => void
  ) {}

  guard(socket: Socket): void {
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called on the socket by readFramed
    ;(socket as FramedSocket)[FRAMING] = new GuardedFraming(this, socket.read)
    socket.read = readFramed
  }
}

/**
 * Lifts the rate from a connection: a superuser's (an operator's tool acting for the fleet, which
 * may have to send more than any one device). A hold under way runs out.
 */
export function liftRate(socket: Socket): void {
  const framing = (socket as Partial<FramedSocket>)[FRAMING]
  if (framing) framing.rateSecond = NOT_RATED
}

/** A guarded socket's `read`: the same for every socket, which it is called on. */
function readFramed(this: FramedSocket, size?: number): Buffer | null {
  const framing = this[FRAMING]
  // held: what the connection sent stays in the socket's buffer, and Node stops reading it once
  // that is full; release() asks the reader to read again
  if (framing.hold === 'now') return null
  const chunk = framing.read.call(this, size) as Buffer | null
  if (chunk === null) return null
  let end: number
  try {
    end = framing.inspect(chunk, framing.rated ? framing : undefined)
  } catch (error) {
    framing.guard.onViolation(this, error as Error)
    this.destroy(error as Error)
    return null
  }
  if (end === chunk.length) return chunk
  // over its rate at a packet's start: the packets from there on go back, and reading waits
  this.unshift(chunk.subarray(end))
  hold(this, framing)
  return end === 0 ? null : chunk.subarray(0, end)
}

function hold(socket: FramedSocket, framing: GuardedFraming): void {
  const limits = framing.guard.limits!
  framing.guard.onHeld(socket, heldBy(framing, limits), framing.hold === 'never')
  framing.hold = 'now'
  // to the start of the second in which it may send again: one wake-up a second at most
  setTimeout(release, Math.max(0, freeFrom(framing, limits) * 1000 - performance.now()) + 1, socket).unref()
}

/** The hold is over: the reader (Aedes) is told there is something to read, as Node would tell it. */
function release(socket: FramedSocket): void {
  socket[FRAMING].hold = 'over'
  if (!socket.destroyed) socket.emit('readable')
}
