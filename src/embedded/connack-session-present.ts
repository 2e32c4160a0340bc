/**
 * Sets the CONNACK's session-present flag from the session the hub kept, not from Aedes' guess.
 *
 * Aedes answers "session present" only when the resumed session has subscriptions
 * (`sessionPresent = subs.length > 0`). A persistent session kept without any (a device that
 * connected, published and left, or unsubscribed from everything) is present all the same
 * [MQTT-3.2.2-2]; a device told otherwise throws away its in-flight state. Aedes offers no hook
 * between deciding and writing the CONNACK, so the flag byte is set on its way to the socket:
 * the CONNACK is the first packet written to a connection, and its third byte holds the flag.
 */
import type { Socket } from 'node:net'

const CONNACK_FIRST_BYTE = 0x20
const FLAGS_OFFSET = 2
const CONNACK_LENGTH = 4

/** From now until the CONNACK has been written, `present()` decides its session-present flag. */
export function patchConnackSessionPresent(socket: Socket, present: () => boolean): void {
  // called on the socket rather than bound to it, and put back as it was once the CONNACK is out:
  // nothing of this patch is kept for the connection's life
  // eslint-disable-next-line @typescript-eslint/unbound-method -- always called with .call(socket)
  const write = socket.write as (this: Socket, ...args: unknown[]) => boolean
  let offset = 0
  let isConnack = false
  socket.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
    if (!Buffer.isBuffer(chunk) || chunk.length === 0) return write.call(socket, chunk, ...rest)
    let out = chunk
    if (offset === 0) isConnack = chunk[0] === CONNACK_FIRST_BYTE
    if (isConnack && offset <= FLAGS_OFFSET && offset + chunk.length > FLAGS_OFFSET && present()) {
      out = Buffer.from(chunk)
      out[FLAGS_OFFSET - offset] = 0x01
    }
    offset += chunk.length
    if (!isConnack || offset >= CONNACK_LENGTH) socket.write = write // done: no cost on later writes
    return write.call(socket, out, ...rest)
  })
}
