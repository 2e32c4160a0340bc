/**
 * Every reach into node-coap (and the packets coap-packet makes for it) past its documented API,
 * in one place. The gateway needs a few fields that are public in node-coap's JavaScript and its
 * types but private by their leading underscore, and some behaviour no document promises: how
 * its server takes datagrams off its socket, refuses requests, acknowledges them, and sends on
 * an observe stream. coap is pinned to an exact version in package.json (1.5.0), and
 * test/embedded/coap-internals.test.ts pins each behaviour relied on here against a real server
 * and real datagrams, so an upgrade that changes one fails there, naming the function, rather
 * than somewhere in a gateway test.
 *
 * Only this file touches these fields; everything else calls the functions below.
 */
import type { RemoteInfo, Socket } from 'node:dgram'
import { Socket as DgramSocket } from 'node:dgram'
import * as coap from 'coap'
import type { IncomingMessage, ObserveWriteStream, OutgoingMessage, Server } from 'coap'
import type { NamedOption, Option, Packet } from 'coap-packet'

/**
 * Rounds node-coap's process-wide EXCHANGE_LIFETIME (`coap.parameters.exchangeLifetime`, in
 * seconds) up to a whole number of milliseconds. node-coap 1.5's createServer sizes its answer
 * cache with a ttl of exchangeLifetime × 1000, which its lru-cache refuses unless it is an
 * integer, and updateTiming leaves a fraction for most ACK_TIMEOUTs (2.47 s for 20 ms). Called
 * after updateTiming, before createServer, which reads the value then.
 */
export function roundExchangeLifetime(): void {
  coap.parameters.exchangeLifetime = Math.ceil(coap.parameters.exchangeLifetime)
}

/** A listener of a dgram socket's 'message' event. */
export type DatagramListener = (message: Buffer, rinfo: RemoteInfo) => void

/** What the gateway reads of a request's packet, with coap-packet's defaults filled in. */
export interface RequestPacket {
  messageId: number | undefined
  /** Empty when the request has none. */
  token: Buffer
  confirmable: boolean
  /** A Reset: node-coap hands one to the handler as a request when it matches no message it sent. */
  reset: boolean
  options: readonly (Option | NamedOption)[]
}

/**
 * The packet a request came in (`req._packet`, the message coap-packet parsed): node-coap's
 * IncomingMessage exposes its path, query and payload, but not its token, message id, type or
 * option list in order, which the gateway needs to read EMQX's queries (repeated Uri-Query), to
 * tell CON from NON (the default QoS), to answer blocks of the right observation (the token),
 * to know an exchange (the message id), and to ignore a Reset that node-coap passes on as a
 * request.
 */
export function requestPacket(req: IncomingMessage): RequestPacket {
  const packet = req._packet
  return {
    messageId: packet.messageId,
    token: packet.token ?? Buffer.alloc(0),
    confirmable: packet.confirmable === true,
    reset: packet.reset === true,
    options: packet.options ?? []
  }
}

/**
 * The UDP socket a listening server reads and sends on (`server._sock`, which node-coap 1.5's
 * listen creates and binds before its callback): the gateway enlarges its receive buffer, reads
 * the port it was bound to (port 0 in tests), and filters what arrives on it.
 */
export function serverSocket(server: Server): Socket {
  const socket = server._sock
  if (!(socket instanceof DgramSocket)) throw new Error('node-coap server has no UDP socket: serverSocket is called before listen, or node-coap keeps it elsewhere')
  return socket
}

/**
 * Puts `filter` in place of node-coap's server on its socket, and returns node-coap's own
 * listener, for the filter to hand it what it should handle. node-coap 1.5's listen adds exactly
 * one 'message' listener, which handles a datagram synchronously: it calls the request handler
 * (or refuses the request, see `answerRefusals`) before it returns. The inbound filter relies on
 * both: a request is the one being handed on while the handler runs. Another version may add
 * more listeners, and the filter would then leave requests unfiltered: better to stop here.
 */
export function interceptDatagrams(server: Server, filter: DatagramListener): DatagramListener {
  const socket = serverSocket(server)
  const listeners = socket.listeners('message') as DatagramListener[]
  if (listeners.length !== 1) throw new Error(`expected node-coap's one 'message' listener on the CoAP socket, found ${listeners.length}`)
  const nodeCoap = listeners[0]!
  socket.removeListener('message', nodeCoap)
  socket.on('message', filter)
  return nodeCoap
}

/**
 * Makes `refuse` answer what node-coap refuses itself (`server._sendError`: Observe on a method
 * other than GET or FETCH, a FETCH without Content-Format, an error thrown while it handles a
 * request). node-coap 1.5 sends those as a 5.00 (or 4.15) carrying its error's text, to the
 * peer's port on this host, with a message id and token of its own; it calls `_sendError` while
 * the datagram is being handed to it, so `refuse` knows the request from what is being handed on.
 * `why` is node-coap's own text, kept out of the answer.
 */
export function answerRefusals(server: Server, refuse: (code: string, why: Buffer) => void): void {
  server._sendError = (payload: Buffer, _rsinfo: unknown, _packet: unknown, code = '5.00') => refuse(code, payload)
}

/**
 * Whether node-coap's piggyback delay (`piggybackReplyMs`) has passed for this answer to a
 * confirmable request: node-coap 1.5 then sends an empty ACK and clears `res._packet.ack`, and
 * the answer goes later as a confirmable message of its own. Copies of the request that arrive
 * after that must be acknowledged again (coap-inbound.ts), which node-coap does not do.
 */
export function piggybackTimedOut(res: OutgoingMessage): boolean {
  return res._packet.ack === false
}

/** What a message node-coap sent on an observe stream was, read after it went. */
export interface SentMessage {
  confirmable: boolean
  ack: boolean
  /** Drawn by coap-packet's generate as the message went, when the stream's packet had none. */
  messageId: number | undefined
}

/**
 * Calls `sent` after each message node-coap sends on an observe stream (`stream._send`, which
 * node-coap 1.5 calls with the packet it then generates: generate sets the message id it draws
 * on that packet, so it is known once `_send` returns). The gateway follows each confirmable
 * notification's message id so that one never acknowledged ends the observation.
 */
export function watchStreamSends(stream: ObserveWriteStream, sent: (message: SentMessage) => void): void {
  const send = stream._send.bind(stream)
  stream._send = (message: ObserveWriteStream, packet: Packet) => {
    send(message, packet)
    sent({ confirmable: packet.confirmable === true, ack: packet.ack === true, messageId: packet.messageId })
  }
}

/**
 * Makes the next message written on an observe stream a confirmable one with a new message id
 * (`stream._packet`'s confirmable and ack). node-coap 1.5 sends notifications as the observe
 * request was sent (CON or NON) and resets its packet after each: this is called before each
 * write, so a silent observer is noticed by RFC 7252's retransmission.
 */
export function nextNotificationConfirmable(stream: ObserveWriteStream): void {
  stream._packet.confirmable = true
  stream._packet.ack = false
}

/**
 * Drops the options named in `drop` from an observe stream's packet and adds `add`
 * (`stream._packet.options`): node-coap 1.5 keeps a stream's options from one message to the
 * next, so the block options of a large notification would stay on the next one. (The stream's
 * own setOption renames options and replaces only one name at a time.)
 */
export function replaceStreamOptions(stream: ObserveWriteStream, drop: ReadonlySet<string>, add: readonly NamedOption[] = []): void {
  const packet = stream._packet
  packet.options = [...(packet.options ?? []).filter((o) => !drop.has(String(o.name))), ...add]
}

/**
 * The Observe number node-coap gave the last message written on the stream (`stream._counter`:
 * 1.5's write increments it, wrapping at 2^24 - 1 to 1, then sends it as the Observe option).
 * The gateway answers the blocks of a notification with its number, as node-coap's client
 * needs to take the reassembled payload as new.
 */
export function lastObserveNumber(stream: ObserveWriteStream): number {
  return stream._counter
}

/**
 * Sends one message on an observe stream's exchange with exactly this code, options and payload,
 * then ends the stream. The stream's write would add its next Observe number; `stream._send`
 * (node-coap 1.5's server's sender: it generates the packet and sends it, caching it as the
 * exchange's answer) sends as given. The counter is set so that the stream's finish, which sends
 * an empty message when `_counter` is 0 (nothing written), sends nothing more.
 */
export function endStreamWith(stream: ObserveWriteStream, code: string, options: readonly NamedOption[], payload: Buffer): void {
  stream._send(stream, { ...stream._packet, code, options: [...options], payload })
  stream._counter = 1
  stream.end()
}

/**
 * Ends a server's answer with exactly this payload (with the options set on it before). The
 * server's answers are node-coap 1.5's OutMessage, whose end cuts the payload again by the
 * request's Block2 option (taking it for the whole representation) and sets an ETag of its own;
 * its base class OutgoingMessage's end sends what it is given (and, past the piggyback delay,
 * as a separate response).
 */
export function endUnaltered(res: OutgoingMessage, payload: Buffer): void {
  ;(coap.OutgoingMessage.prototype.end as (this: OutgoingMessage, payload: Buffer) => void).call(res, payload)
}
