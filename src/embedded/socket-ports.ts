/**
 * The local port of an accepted MQTT connection, as the listener that accepted it knows it.
 * Asking the socket (`socket.localPort`) makes Node ask the kernel and keep the answer on the
 * socket, an object per connection for its whole life, to learn a number every connection of
 * one listener shares.
 */
import type { Socket } from 'node:net'

const LOCAL_PORT = Symbol('iothub local port')

type StampedSocket = Socket & { [LOCAL_PORT]?: number }

/** Notes the port of the listener that accepted `socket`. */
export function stampLocalPort(socket: Socket, port: number): void {
  ;(socket as StampedSocket)[LOCAL_PORT] = port
}

/** The accepting listener's port; the socket's own answer for a socket no listener stamped. */
export function localPortOf(socket: Socket): number | null {
  return (socket as StampedSocket)[LOCAL_PORT] ?? socket.localPort ?? null
}
