/**
 * Closes a connection that cannot keep up with what is sent to it. Aedes delivers a message to
 * every subscriber before it takes the next one off its (bounded) delivery queue, and a delivery
 * to a socket whose buffer is full waits for it to drain: one device that stops reading, while
 * another publishes to it, would hold up every other device's pushes and pings. Aedes' own
 * `drainTimeout` bounds how long a full socket may wait; this bounds how much may pile up.
 */
import type { Socket } from 'node:net'

export function guardSlowConsumer(socket: Socket, maxBufferedBytes: number, onSlow: (buffered: number) => void): void {
  // called on the socket rather than bound to it: a bound function is heap every connection keeps
  // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with .call(socket)
  const write = socket.write as (this: Socket, chunk: unknown, encoding?: unknown, callback?: unknown) => boolean
  let tripped = false
  // fixed arity, no rest arguments: this runs for every piece of every packet sent
  socket.write = ((chunk: unknown, encoding?: unknown, callback?: unknown): boolean => {
    const accepted = write.call(socket, chunk, encoding, callback)
    if (!tripped && socket.writableLength > maxBufferedBytes) {
      tripped = true
      // not from inside the write: Aedes is in the middle of writing a packet to this socket
      process.nextTick(() => onSlow(socket.writableLength))
    }
    return accepted
  })
}
