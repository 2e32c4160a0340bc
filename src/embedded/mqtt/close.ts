/**
 * A connection's end: the socket closing records `disconnected`, with the reason seen on the
 * way out (a kick, a takeover, a keepalive timeout, a socket error, the client's DISCONNECT, the
 * hub stopping); and the errors Aedes reports on the way, each counted under its reason.
 */
import type { Aedes, Client } from 'aedes'
import type { DisconnectReason } from '../../domain/session.js'
import type { RejectReason } from '../../observability/metrics.js'
import { sentDisconnect } from '../aedes-internals.js'
import { MalformedLengthError, PacketTooLargeError } from '../inbound-guard.js'
import type { MqttContext } from './mqtt-context.js'

export class CloseHandler {
  constructor(private readonly ctx: MqttContext) {}

  /** Listens to what Aedes says of connections going wrong. */
  listen(aedes: Aedes): void {
    const { ctx } = this
    aedes.on('keepaliveTimeout', (client) => ctx.endsBecause(client, 'keepalive_timeout'))
    aedes.on('clientError', (client, error) => {
      const reason = classifyClientError(error)
      ctx.endsBecause(client, reason === 'slow_consumer' ? 'slow_consumer' : 'socket_error')
      if (reason) ctx.reject(reason, client, error.message)
    })
    aedes.on('connectionError', (_client, error) => {
      if (isFramingError(error)) return // counted where it was detected
      ctx.deps.metrics.reject(classifyClientError(error) ?? 'malformed_packet')
      ctx.deps.log.debug({ err: error.message }, 'connection refused before CONNECT')
    })
  }

  /** The socket closed: the connection's end is recorded (if its connect was). */
  closed(client: Client): void {
    const state = this.ctx.clients.get(client)
    if (!state) return
    state.release?.()
    const incarnation = state.incarnation
    if (!incarnation) return
    const reason: DisconnectReason =
      state.endReason ?? (sentDisconnect(client) ? 'client_disconnect' : this.ctx.stopping ? 'server_shutdown' : 'socket_error')
    state.ended = this.ctx.track(this.ctx.deps.registry.apply({ kind: 'disconnected', clientId: client.id, incarnation, at: Date.now(), reason })).then(
      () => undefined,
      (error: Error) => this.ctx.deps.log.error({ clientId: client.id, err: error.message }, 'disconnect not stored')
    )
  }

  /** Resolves once the end of `client`'s connection is recorded (at once if it never connected). */
  async whenEnded(client: Client): Promise<void> {
    const state = this.ctx.clients.get(client)
    if (!state?.incarnation) return
    // `ended` is set by the socket's first close listener (the broker's), before any added later
    if (!state.ended) await new Promise<void>((resolve) => client.conn.once('close', () => resolve()))
    await state.ended
  }
}

/** Errors of the inbound guard's framing, which counts them itself. */
function isFramingError(error: Error): boolean {
  return error instanceof PacketTooLargeError || error instanceof MalformedLengthError
}

/** Maps the errors Aedes and mqtt-packet raise on bad input to our reject reasons. */
export function classifyClientError(error: Error): RejectReason | null {
  const m = error.message
  if (isFramingError(error)) return null
  if (m === 'connect did not arrive in time') return 'connect_timeout'
  if (m === 'drain timeout') return 'slow_consumer' // Aedes' drainTimeout: the socket stayed full
  if (m === 'Client queue limit reached') return 'packets_before_connack'
  if (m.includes('too many levels')) return 'topic_too_deep'
  if (m.includes('is only allowed') || m.includes('is not allowed in PUBLISH') || m.includes('empty topic')) return 'bad_topic'
  if (/invalid|malformed|cannot parse|unknown command|protocol/i.test(m)) return 'malformed_packet'
  return null
}
