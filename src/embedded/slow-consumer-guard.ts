/**
 * Closes a connection that cannot keep up with what is sent to it. Aedes delivers a message to
 * every subscriber before it takes the next one off its (bounded) delivery queue, and a delivery
 * to a socket whose buffer is full waits for it to drain: one device that stops reading, while
 * another publishes to it, would hold up every other device's pushes and pings. Aedes' own
 * `drainTimeout` bounds how long a full socket may wait; this bounds how much may pile up.
 */
import type { Socket } from 'node:net'

/** What a guarded socket keeps: its guard and its own `write` (a shared function, not a copy). */
const GUARD = Symbol('iothub slow-consumer guard')
const WRITE = Symbol('iothub unguarded write')
/** Set once the socket was found slow: `onSlow` is told once. */
const TRIPPED = Symbol('iothub slow consumer')

type WriteFn = (this: Socket, chunk: unknown, encoding?: unknown, callback?: unknown) => boolean
type GuardedSocket = Socket & { [GUARD]: SlowConsumerGuard; [WRITE]: WriteFn; [TRIPPED]?: true }

/**
 * One guard serves every connection of a broker: a guarded socket's `write` is one function for
 * all of them, and what it needs is kept on the socket — no closure per connection, which each
 * would keep for its whole life.
 */
export class SlowConsumerGuard {
  constructor(
    readonly maxBufferedBytes: number,
    /** Told once per socket, outside the write that found it slow. */
    readonly onSlow: (socket: Socket, buffered: number) => void
  ) {}

  guard(socket: Socket): void {
    const guarded = socket as GuardedSocket
    guarded[GUARD] = this
    // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with .call(socket)
    guarded[WRITE] = socket.write as WriteFn
    socket.write = writeGuarded
  }
}

/** A guarded socket's `write`. Fixed arity, no rest arguments: this runs for every piece of every packet sent. */
function writeGuarded(this: GuardedSocket, chunk: unknown, encoding?: unknown, callback?: unknown): boolean {
  const accepted = this[WRITE].call(this, chunk, encoding, callback)
  if (this.writableLength > this[GUARD].maxBufferedBytes && this[TRIPPED] !== true) {
    this[TRIPPED] = true
    // not from inside the write: Aedes is in the middle of writing a packet to this socket
    process.nextTick(tellSlow, this)
  }
  return accepted
}

function tellSlow(socket: GuardedSocket): void {
  socket[GUARD].onSlow(socket, socket.writableLength)
}
