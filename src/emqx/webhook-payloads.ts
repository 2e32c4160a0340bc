/**
 * EMQX's WebHook bodies turned into hook calls. Two families, told apart by their first field:
 *
 * - EMQX 4 `emqx_web_hook` (`action`): `client_connected` { node, clientid, username,
 *   ipaddress, keepalive, proto_ver, connected_at }, `client_disconnected` { node, clientid,
 *   username, reason }, `session_subscribed` { node, clientid, username, topic, opts: { qos } },
 *   `session_unsubscribed` { node, clientid, username, topic }, `session_terminated` { node,
 *   clientid, reason }, `message_publish` { from_client_id, topic, payload }.
 * - EMQX 5 rule-engine events sent by a WebHook action (`event`): `client.connected` {
 *   clientid, username, mountpoint, peername "host:port", sockname, proto_name, proto_ver,
 *   keepalive, clean_start, expiry_interval, connected_at, node }, `client.disconnected` {
 *   clientid, username, reason, peername, node }, `session.subscribed` / `session.unsubscribed`
 *   { clientid, username, peerhost, topic, qos, node }, and a message (`SELECT * FROM "#"`,
 *   no `event`… or `event: "message.publish"`) { clientid, topic, payload }.
 *
 * Anything else throws WebhookPayloadError naming what is wrong; nothing is half-read.
 */
import type { QoS } from '../domain/session.js'
import type { EmqxClient } from './emqx-client.js'
import type { HookCall } from './hook-call.js'

export class WebhookPayloadError extends Error {
  override name = 'WebhookPayloadError'
}

type Body = Record<string, unknown>

export function hookCallOfWebhook(body: unknown): HookCall {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new WebhookPayloadError('body must be a JSON object')
  const b = body as Body
  if (typeof b.action === 'string') return fromV4(b.action, b)
  if (typeof b.event === 'string') return fromV5(b.event, b)
  throw new WebhookPayloadError('body has neither "action" (EMQX 4 web_hook) nor "event" (EMQX 5 rule event)')
}

function fromV4(action: string, b: Body): HookCall {
  switch (action) {
    case 'client_connected':
      return {
        hook: 'client.connected',
        client: {
          ...v4Client(b),
          keepalive: optionalInt(b, 'keepalive'),
          protoVer: optionalInt(b, 'proto_ver'),
          connectedAt: epochMillis(b, 'connected_at')
        }
      }
    case 'client_disconnected':
      return { hook: 'client.disconnected', client: v4Client(b), reason: str(b, 'reason') }
    case 'session_subscribed': {
      const opts = b.opts === undefined ? {} : object(b, 'opts')
      return { hook: 'session.subscribed', client: v4Client(b), subscriptions: [{ topic: str(b, 'topic'), qos: qos(opts, 'qos') }] }
    }
    case 'session_unsubscribed':
      return { hook: 'session.unsubscribed', client: v4Client(b), topics: [str(b, 'topic')] }
    case 'session_terminated':
      return { hook: 'session.terminated', client: v4Client(b), reason: optionalStr(b, 'reason') ?? 'normal' }
    case 'message_publish':
      return { hook: 'message.publish', from: str(b, 'from_client_id'), topic: str(b, 'topic'), payload: payloadOf(b) }
    default:
      throw new WebhookPayloadError(`action "${action}" is not one the hub takes (client_connected, client_disconnected, session_subscribed, session_unsubscribed, session_terminated, message_publish)`)
  }
}

function fromV5(event: string, b: Body): HookCall {
  switch (event) {
    case 'client.connected':
      return {
        hook: 'client.connected',
        client: {
          ...v5Client(b, 'peername'),
          mountpoint: optionalStr(b, 'mountpoint') ?? undefined,
          keepalive: optionalInt(b, 'keepalive'),
          protoVer: optionalInt(b, 'proto_ver'),
          cleanStart: optionalBool(b, 'clean_start'),
          expiryInterval: optionalInt(b, 'expiry_interval'),
          connectedAt: epochMillis(b, 'connected_at')
        }
      }
    case 'client.disconnected':
      return { hook: 'client.disconnected', client: v5Client(b, 'peername'), reason: str(b, 'reason') }
    case 'session.subscribed':
      return { hook: 'session.subscribed', client: v5Client(b, 'peerhost'), subscriptions: [{ topic: str(b, 'topic'), qos: qos(b, 'qos') }] }
    case 'session.unsubscribed':
      return { hook: 'session.unsubscribed', client: v5Client(b, 'peerhost'), topics: [str(b, 'topic')] }
    case 'message.publish':
      return { hook: 'message.publish', from: str(b, 'clientid'), topic: str(b, 'topic'), payload: payloadOf(b) }
    default:
      throw new WebhookPayloadError(`event "${event}" is not one the hub takes (client.connected, client.disconnected, session.subscribed, session.unsubscribed, message.publish)`)
  }
}

const NO_DETAILS = {
  mountpoint: undefined,
  protocol: undefined,
  sockPort: undefined,
  protoVer: undefined,
  keepalive: undefined,
  cleanStart: undefined,
  expiryInterval: undefined,
  connectedAt: undefined
} satisfies Partial<EmqxClient>

function v4Client(b: Body): EmqxClient {
  return { ...NO_DETAILS, node: str(b, 'node'), clientId: str(b, 'clientid'), username: optionalStr(b, 'username'), peerHost: optionalStr(b, 'ipaddress'), peerPort: undefined }
}

/** `peername` is "host:port" (IPv6 hosts keep their colons: the port is after the last one). */
function v5Client(b: Body, peerField: 'peername' | 'peerhost'): EmqxClient {
  const peer = optionalStr(b, peerField)
  let peerHost = peer
  let peerPort: number | undefined
  if (peer !== null && peerField === 'peername') {
    const colon = peer.lastIndexOf(':')
    const digits = peer.slice(colon + 1)
    // decimal digits only: Number() would also take "" (as 0), hex, exponents and spaces
    const port = /^\d{1,5}$/.test(digits) ? Number(digits) : NaN
    if (colon <= 0 || !(port <= 65535)) throw new WebhookPayloadError(`"peername" must be host:port, got "${peer}"`)
    peerHost = peer.slice(0, colon).replace(/^\[(.*)\]$/, '$1')
    peerPort = port
  }
  return { ...NO_DETAILS, node: str(b, 'node'), clientId: str(b, 'clientid'), username: optionalStr(b, 'username'), peerHost, peerPort }
}

function str(b: Body, field: string): string {
  const value = b[field]
  if (typeof value !== 'string' || value.length === 0) throw new WebhookPayloadError(`"${field}" must be a non-empty string`)
  return value
}

/** EMQX sends `undefined` (the atom, as text) or null for a missing username. */
function optionalStr(b: Body, field: string): string | null {
  const value = b[field]
  if (value === undefined || value === null || value === 'undefined' || value === '') return null
  if (typeof value !== 'string') throw new WebhookPayloadError(`"${field}" must be a string`)
  return value
}

function optionalInt(b: Body, field: string): number | undefined {
  const value = b[field]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new WebhookPayloadError(`"${field}" must be a whole number`)
  return value
}

function optionalBool(b: Body, field: string): boolean | undefined {
  const value = b[field]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'boolean') throw new WebhookPayloadError(`"${field}" must be true or false`)
  return value
}

/** EMQX 5 sends milliseconds; EMQX 4's web_hook seconds in some releases: told apart by size. */
function epochMillis(b: Body, field: string): number | undefined {
  const value = optionalInt(b, field)
  if (value === undefined) return undefined
  return value < 100_000_000_000 ? value * 1000 : value
}

function qos(b: Body, field: string): QoS {
  const value = b[field] ?? 0
  if (value !== 0 && value !== 1 && value !== 2) throw new WebhookPayloadError(`"${field}" must be 0, 1 or 2`)
  return value
}

function object(b: Body, field: string): Body {
  const value = b[field]
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new WebhookPayloadError(`"${field}" must be an object`)
  return value as Body
}

/** The payload as text (EMQX's default), or base64 when the body says `payload_encoding: base64`. */
function payloadOf(b: Body): Buffer {
  const value = b.payload
  if (typeof value !== 'string') throw new WebhookPayloadError('"payload" must be a string')
  return b.payload_encoding === 'base64' ? Buffer.from(value, 'base64') : Buffer.from(value, 'utf8')
}
