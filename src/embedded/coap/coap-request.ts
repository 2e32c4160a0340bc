/**
 * What a CoAP request says, read as EMQX 5's CoAP gateway reads it: the Uri-Path segments, and
 * the Uri-Query options split on their first `=` (so a password may hold `+`, `&` or `=`), with
 * EMQX's short names (`c` clientid, `t` token, `u` username, `p` password, `q` qos, `r` retain).
 */
import type { IncomingMessage } from 'coap'
import { requestPacket, type RequestPacket } from './coap-internals.js'

const SHORT_NAMES: Record<string, string> = { c: 'clientid', t: 'token', u: 'username', p: 'password', q: 'qos', r: 'retain' }

export interface CoapRequest {
  /** The Uri-Path segments, each decoded. */
  path: string[]
  query: Map<string, string>
}

export function readCoapRequest(req: IncomingMessage): CoapRequest {
  return readPacketRequest(requestPacket(req))
}

/** The same, of a packet node-coap has not seen (a block of a body, coap-block1.ts). */
export function readPacketRequest(packet: Pick<RequestPacket, 'options'>): CoapRequest {
  const path: string[] = []
  const query = new Map<string, string>()
  for (const option of packet.options) {
    const value = Buffer.isBuffer(option.value) ? option.value.toString('utf8') : String(option.value)
    if (option.name === 'Uri-Path') path.push(value)
    else if (option.name === 'Uri-Query') {
      const eq = value.indexOf('=')
      const key = eq < 0 ? value : value.slice(0, eq)
      query.set(SHORT_NAMES[key] ?? key, eq < 0 ? '' : value.slice(eq + 1))
    }
  }
  return { path, query }
}

/** A request's QoS: the `qos` query if given, else CON means 1 and NON 0 (EMQX's `coap` default). */
export function qosOf(query: Map<string, string>, confirmable: boolean): 0 | 1 | 2 | null {
  const raw = query.get('qos')
  if (raw === undefined) return confirmable ? 1 : 0
  return raw === '0' || raw === '1' || raw === '2' ? (Number(raw) as 0 | 1 | 2) : null
}
