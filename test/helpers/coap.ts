/**
 * CoAP devices for tests, over real UDP datagrams: node-coap's client (`coapCall`,
 * `coapObserve`), a raw client speaking coap-packet datagrams (`RawCoap`), and the option
 * builders and readers the tests share. Whatever opens a socket or starts a timer takes the test
 * context and closes it in the context's `after`, so a test that fails half-way cannot leave a
 * socket or an interval behind to hang the run.
 */
import { randomBytes } from 'node:crypto'
import { createSocket } from 'node:dgram'
import type { TestContext } from 'node:test'
import * as coap from 'coap'
import { generate as generatePacket, parse as parsePacket, type NamedOption, type Packet, type ParsedPacket } from 'coap-packet'
import type { TestHub } from './hub.js'

/** How long a test waits for an answer on loopback: generous, for a loaded machine. */
const ANSWER_DEADLINE_MS = 10_000

export interface Answer {
  code: string
  payload: string
  /** The answer's Max-Age option, when it has one (seconds). */
  maxAge?: number
}

/** One confirmable request by node-coap's client; resolves with its answer. */
export function coapCall(port: number, method: 'GET' | 'POST' | 'PUT' | 'DELETE', pathname: string, query: string, payload?: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = coap.request({ hostname: '127.0.0.1', port, method, pathname, query, confirmable: true, agent: false })
    req.on('response', (res: coap.IncomingMessage) => {
      const maxAge = res.headers['Max-Age']
      resolve({ code: res.code, payload: res.payload.toString('utf8'), ...(typeof maxAge === 'number' ? { maxAge } : {}) })
    })
    req.on('error', reject)
    req.end(payload)
  })
}

export interface Observation {
  code: string
  /** Each notification's payload, the first answer excluded. */
  notifications: string[]
  stream: coap.ObserveReadStream
}

/** An observation by node-coap's client, closed when the test ends. */
export function coapObserve(ctx: TestContext, port: number, pathname: string, query: string): Promise<Observation> {
  return new Promise((resolve, reject) => {
    const req = coap.request({ hostname: '127.0.0.1', port, method: 'GET', pathname, query, observe: 0, confirmable: true, agent: false })
    req.on('response', (res: coap.IncomingMessage) => {
      const notifications: string[] = []
      let first = true
      res.on('data', (chunk: Buffer) => {
        if (first) first = false
        else notifications.push(chunk.toString('utf8'))
      })
      const stream = res as unknown as coap.ObserveReadStream
      ctx.after(() => stream.close())
      resolve({ code: res.code, notifications, stream })
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * A device connected over CoAP whose heartbeat goes every 300 ms (enough for a hub's 1 s
 * heartbeat), until the test ends, when it also closes its connection.
 */
export async function keptAlive(ctx: TestContext, t: TestHub, port: number, id: string): Promise<{ d: { id: string; token: string }; token: string }> {
  const d = await t.createDevice({ id })
  const connected = await coapCall(port, 'POST', '/mqtt/connection', `clientid=${id}&username=${id}&password=${d.token}`)
  if (connected.code !== '2.01') throw new Error(`${id} not connected: ${connected.code} ${connected.payload}`)
  const token = connected.payload
  const heartbeat = setInterval(() => void coapCall(port, 'PUT', '/mqtt/connection', `clientid=${id}&token=${token}`).catch(() => undefined), 300)
  ctx.after(async () => {
    clearInterval(heartbeat)
    await coapCall(port, 'DELETE', '/mqtt/connection', `clientid=${id}&token=${token}`).catch(() => undefined)
  })
  return { d, token }
}

/**
 * A device speaking raw CoAP datagrams, as an RFC 7959 client does: each request gets its own
 * token, confirmable messages from the gateway (notifications) are acknowledged, and packets that
 * answer no request are kept in `notifications`. A confirmable or non-confirmable message of the
 * gateway's that arrives again (it retransmits one whose ACK was late) is acknowledged again but
 * kept once (RFC 7252 §4.5), so what a test counts does not depend on the machine's load.
 * Its socket closes when the test ends.
 */
export class RawCoap {
  private readonly socket = createSocket('udp4')
  private messageId = 20_000
  private closed = false
  /** Requests awaiting their answer, by token: how to hand it over, or to give up at `close`. */
  private readonly waiting = new Map<string, { answer: (packet: ParsedPacket) => void; closed: () => void }>()
  /** Message ids of the gateway's own messages (not ACKs) received. */
  private readonly seen = new Set<number>()
  readonly notifications: ParsedPacket[] = []
  /** Every packet received but empty ACKs and repeated messages, answers included, in order. */
  readonly received: ParsedPacket[] = []
  /** The message ids of the empty ACKs received. */
  readonly emptyAcks: number[] = []

  constructor(
    ctx: TestContext,
    private readonly port: number
  ) {
    ctx.after(() => this.close())
    this.socket.on('message', (message) => {
      const packet = parsePacket(message)
      if (packet.confirmable) this.socket.send(generatePacket({ code: '0.00', ack: true, messageId: packet.messageId }), this.port, '127.0.0.1')
      if (packet.code === '0.00') {
        if (packet.ack) this.emptyAcks.push(packet.messageId)
        return // an empty ACK: the answer follows separately
      }
      if (!packet.ack) {
        if (this.seen.has(packet.messageId)) return
        this.seen.add(packet.messageId)
      }
      this.received.push(packet)
      const key = packet.token.toString('hex')
      const waiter = this.waiting.get(key)
      if (waiter) {
        this.waiting.delete(key)
        waiter.answer(packet)
      } else {
        this.notifications.push(packet)
      }
    })
  }

  /** A confirmable GET of /{path} with the given query and extra options; resolves with its answer. */
  get(path: string[], query: string[], options: NamedOption[] = [], token = randomBytes(4)): Promise<ParsedPacket> {
    return this.send({ code: '0.01', confirmable: true, messageId: this.nextMessageId(), token, options: [...options, ...uri(path, query)] })
  }

  /** A fresh message id, for `send`. */
  nextMessageId(): number {
    return this.messageId++
  }

  /**
   * Sends a request as it is (message id and token included) and resolves with the first answer
   * carrying its token; `answer: false` only sends it (a retransmission whose answer, if any,
   * shows in `received`).
   */
  send(packet: Packet & { token: Buffer; messageId: number }, answer?: true): Promise<ParsedPacket>
  send(packet: Packet & { token: Buffer; messageId: number }, answer: false): Promise<void>
  async send(packet: Packet & { token: Buffer; messageId: number }, answer = true): Promise<ParsedPacket | void> {
    const key = packet.token.toString('hex')
    const answered = answer
      ? new Promise<ParsedPacket>((resolve, reject) => {
          const timer = setTimeout(() => {
            this.waiting.delete(key)
            reject(new Error(`no answer to message ${packet.messageId}`))
          }, ANSWER_DEADLINE_MS)
          this.waiting.set(key, {
            answer: (p) => {
              clearTimeout(timer)
              resolve(p)
            },
            // no timer outlives the socket
            closed: () => {
              clearTimeout(timer)
              reject(new Error(`closed before an answer to message ${packet.messageId}`))
            }
          })
        })
      : undefined
    await this.sendRaw(generatePacket(packet))
    return answered
  }

  /** Sends bytes as they are, CoAP or not. */
  sendRaw(datagram: Buffer): Promise<void> {
    return new Promise<void>((resolve) => this.socket.send(datagram, this.port, '127.0.0.1', () => resolve()))
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    for (const waiter of this.waiting.values()) waiter.closed()
    this.waiting.clear()
    this.socket.close()
  }
}

/** Uri-Path and Uri-Query options of `/{path}?{query}`. */
export function uri(path: string[], query: string[]): NamedOption[] {
  return [...path.map((p) => ({ name: 'Uri-Path' as const, value: Buffer.from(p) })), ...query.map((q) => ({ name: 'Uri-Query' as const, value: Buffer.from(q) }))]
}

/** An Observe option: 0 registers, 1 deregisters (RFC 7641 §2). */
export function observe(value: 0 | 1): NamedOption {
  return { name: 'Observe', value: value === 0 ? Buffer.alloc(0) : Buffer.from([1]) }
}

/** A Block1 option value (RFC 7959 §2.2): NUM, the M bit (more blocks follow), SZX (size = 2^(SZX+4)). */
export function block1(num: number, more: boolean, szx: number): NamedOption {
  return { name: 'Block1', value: uintBytes(num * 16 + (more ? 8 : 0) + szx) }
}

export function readBlock1(packet: ParsedPacket): { num: number; more: boolean; size: number } | undefined {
  const n = uint(option(packet, 'Block1'))
  return n === undefined ? undefined : { num: Math.floor(n / 16), more: (n & 8) !== 0, size: 2 ** ((n & 7) + 4) }
}

/** A Block2 option value (RFC 7959 §2.2): NUM, then the M bit, then SZX (size = 2^(SZX+4)). */
export function block2(num: number, szx: number): NamedOption {
  const n = num * 16 + szx
  const bytes = n < 0x100 ? 1 : n < 0x10000 ? 2 : 3
  const value = Buffer.alloc(bytes)
  value.writeUIntBE(n, 0, bytes)
  return { name: 'Block2', value }
}

export function readBlock2(packet: ParsedPacket): { num: number; more: boolean; size: number } | undefined {
  const n = uint(option(packet, 'Block2'))
  return n === undefined ? undefined : { num: Math.floor(n / 16), more: (n & 8) !== 0, size: 2 ** ((n & 7) + 4) }
}

/** An unsigned integer option value in as few bytes as it takes (0 is empty). */
export function uintBytes(n: number): Buffer {
  const bytes: number[] = []
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256)
  return Buffer.from(bytes)
}

/** RFC 9175's Request-Tag, option 292: coap-packet knows it by number only. */
export function requestTag(tag: Buffer): { name: string; value: Buffer } {
  return { name: '292', value: tag }
}

export function option(packet: ParsedPacket, name: string): Buffer | undefined {
  return packet.options.find((o) => o.name === name)?.value
}

export function uint(value: Buffer | undefined): number | undefined {
  return value === undefined ? undefined : value.reduce((n, byte) => n * 256 + byte, 0)
}
