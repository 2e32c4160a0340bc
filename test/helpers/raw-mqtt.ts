/**
 * MQTT 3.1.1 packets built byte by byte, and a raw TCP client that sends them and decodes what
 * the broker answers — for tests that need to send what a well-behaved client library refuses
 * to (non-UTF-8 strings, invalid wildcards, oversized or malformed packets).
 *
 * Strings are given as `string` (encoded as UTF-8) or as `Buffer` (sent as-is, so invalid
 * UTF-8 can be sent).
 */
import { connect, type Socket } from 'node:net'

export type MqttString = string | Buffer

/** Packet types (MQTT 3.1.1 §2.2.1), the high nibble of the fixed header's first byte. */
export const PacketType = {
  CONNECT: 1,
  CONNACK: 2,
  PUBLISH: 3,
  PUBACK: 4,
  SUBSCRIBE: 8,
  SUBACK: 9,
  UNSUBSCRIBE: 10,
  UNSUBACK: 11,
  PINGREQ: 12,
  PINGRESP: 13,
  DISCONNECT: 14
} as const

/** Remaining Length (§2.2.3): 7 bits a byte, high bit = more bytes follow. */
export function encodeRemainingLength(length: number): Buffer {
  if (length < 0 || length > 268_435_455) throw new RangeError(`remaining length ${length} out of range`)
  const bytes: number[] = []
  do {
    let byte = length % 128
    length = Math.floor(length / 128)
    if (length > 0) byte |= 0x80
    bytes.push(byte)
  } while (length > 0)
  return Buffer.from(bytes)
}

/** A UTF-8 string field (§1.5.3): two-byte big-endian length, then the bytes. */
export function encodeString(value: MqttString): Buffer {
  const bytes = typeof value === 'string' ? Buffer.from(value, 'utf8') : value
  const length = Buffer.alloc(2)
  length.writeUInt16BE(bytes.length)
  return Buffer.concat([length, bytes])
}

/** Fixed header + body. */
export function frame(firstByte: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([firstByte]), encodeRemainingLength(body.length), body])
}

function uint16(value: number): Buffer {
  const b = Buffer.alloc(2)
  b.writeUInt16BE(value)
  return b
}

export interface ConnectOptions {
  clientId: MqttString
  username?: MqttString
  password?: MqttString
  clean?: boolean
  keepalive?: number
  will?: { topic: MqttString; payload: Buffer | string; qos?: number; retain?: boolean }
}

/** CONNECT (§3.1), protocol "MQTT" level 4. */
export function connectPacket(o: ConnectOptions): Buffer {
  let flags = 0
  if (o.clean ?? true) flags |= 0x02
  if (o.password !== undefined) flags |= 0x40
  if (o.username !== undefined) flags |= 0x80
  if (o.will) flags |= 0x04 | ((o.will.qos ?? 0) << 3) | (o.will.retain ? 0x20 : 0)
  const parts = [encodeString('MQTT'), Buffer.from([4, flags]), uint16(o.keepalive ?? 30), encodeString(o.clientId)]
  if (o.will) parts.push(encodeString(o.will.topic), encodeString(typeof o.will.payload === 'string' ? Buffer.from(o.will.payload) : o.will.payload))
  if (o.username !== undefined) parts.push(encodeString(o.username))
  if (o.password !== undefined) parts.push(encodeString(o.password))
  return frame(0x10, Buffer.concat(parts))
}

/** SUBSCRIBE (§3.8): the fixed header's flags must be 0b0010. */
export function subscribePacket(messageId: number, subscriptions: { topic: MqttString; qos: number }[]): Buffer {
  const parts = [uint16(messageId)]
  for (const s of subscriptions) parts.push(encodeString(s.topic), Buffer.from([s.qos]))
  return frame(0x82, Buffer.concat(parts))
}

/** UNSUBSCRIBE (§3.10): the fixed header's flags must be 0b0010. */
export function unsubscribePacket(messageId: number, topics: MqttString[]): Buffer {
  return frame(0xa2, Buffer.concat([uint16(messageId), ...topics.map(encodeString)]))
}

/** PUBLISH (§3.3); a messageId only for QoS > 0. */
export function publishPacket(o: { topic: MqttString; payload?: Buffer | string; qos?: number; messageId?: number }): Buffer {
  const qos = o.qos ?? 0
  const parts = [encodeString(o.topic)]
  if (qos > 0) parts.push(uint16(o.messageId ?? 1))
  parts.push(typeof o.payload === 'string' ? Buffer.from(o.payload) : (o.payload ?? Buffer.alloc(0)))
  return frame(0x30 | (qos << 1), Buffer.concat(parts))
}

/** Bytes of a QoS 0 PUBLISH whose whole packet (fixed header included) is `total` bytes long. */
export function publishOfTotalSize(topic: string, total: number): Buffer {
  // body = 2 + topic + payload; header = 1 + bytes of the remaining length
  for (let lengthBytes = 1; lengthBytes <= 4; lengthBytes++) {
    const body = total - 1 - lengthBytes
    if (body < 2 + topic.length) continue
    if (encodeRemainingLength(body).length !== lengthBytes) continue
    const packet = publishPacket({ topic, payload: Buffer.alloc(body - 2 - Buffer.byteLength(topic), 0x61) })
    if (packet.length !== total) throw new Error(`built ${packet.length} bytes, wanted ${total}`)
    return packet
  }
  throw new Error(`no PUBLISH of exactly ${total} bytes on ${topic}`)
}

export const PINGREQ = Buffer.from([0xc0, 0x00])
export const DISCONNECT = Buffer.from([0xe0, 0x00])

/** One packet as received: its type, the fixed header's flags, and its body. */
export interface RawPacket {
  type: number
  flags: number
  body: Buffer
}

/** Incremental decoder of the broker's packets (which are well-formed). */
class Decoder {
  private buffer = Buffer.alloc(0)

  push(chunk: Buffer): RawPacket[] {
    this.buffer = Buffer.concat([this.buffer, chunk])
    const packets: RawPacket[] = []
    for (;;) {
      if (this.buffer.length < 2) break
      let length = 0
      let multiplier = 1
      let i = 1
      let complete = false
      while (i < this.buffer.length && i <= 4) {
        const byte = this.buffer[i++]!
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        if ((byte & 0x80) === 0) {
          complete = true
          break
        }
      }
      if (!complete || this.buffer.length < i + length) break
      const first = this.buffer[0]!
      packets.push({ type: first >> 4, flags: first & 0x0f, body: this.buffer.subarray(i, i + length) })
      this.buffer = this.buffer.subarray(i + length)
    }
    return packets
  }
}

export function connackReturnCode(p: RawPacket): number {
  return p.body[1]!
}

export function subackGranted(p: RawPacket): { messageId: number; granted: number[] } {
  return { messageId: p.body.readUInt16BE(0), granted: [...p.body.subarray(2)] }
}

export function publishTopic(p: RawPacket): string {
  const length = p.body.readUInt16BE(0)
  return p.body.subarray(2, 2 + length).toString('utf8')
}

/** A TCP connection to the broker that sends raw bytes and collects decoded packets. */
export class RawMqttClient {
  private readonly received: RawPacket[] = []
  private readonly waiters = new Set<() => void>()
  private readonly decoder = new Decoder()
  /** Resolves when the socket is closed, by either side. */
  readonly closed: Promise<void>
  isClosed = false

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received.push(...this.decoder.push(chunk))
      this.notify()
    })
    // the broker may reset the connection while we still write: that is what some tests expect
    socket.on('error', () => undefined)
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true
        this.notify()
        resolve()
      })
    )
  }

  /** `localAddress`: another loopback address (127.0.0.2, …) to connect from, as another host would. */
  static open(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawMqttClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ port, host, ...(localAddress ? { localAddress } : {}) }, () => {
        socket.off('error', reject)
        resolve(new RawMqttClient(socket))
      })
      socket.once('error', reject)
    })
  }

  /** Connects, sends CONNECT, and waits up to `connackWithinMs` for the CONNACK; returns its return code. */
  static async connect(port: number, options: ConnectOptions, localAddress?: string, connackWithinMs = 3000): Promise<{ client: RawMqttClient; returnCode: number }> {
    const client = await RawMqttClient.open(port, '127.0.0.1', localAddress)
    client.send(connectPacket(options))
    const connack = await client.next(PacketType.CONNACK, connackWithinMs)
    return { client, returnCode: connackReturnCode(connack) }
  }

  private notify(): void {
    for (const waiter of [...this.waiters]) waiter()
  }

  send(bytes: Buffer | readonly number[]): void {
    if (this.socket.destroyed) return
    this.socket.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes))
  }

  /** Every packet received so far (not consumed by `next`). */
  get packets(): readonly RawPacket[] {
    return this.received
  }

  /** Takes the first received packet of `type`, waiting up to `ms` for it. */
  next(type: number, ms = 3000): Promise<RawPacket> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const at = this.received.findIndex((p) => p.type === type)
        if (at >= 0) {
          done()
          resolve(this.received.splice(at, 1)[0]!)
        } else if (this.isClosed) {
          done()
          reject(new Error(`connection closed before a packet of type ${type} arrived`))
        }
      }
      const timer = setTimeout(() => {
        done()
        reject(new Error(`no packet of type ${type} within ${ms} ms`))
      }, ms)
      const done = () => {
        clearTimeout(timer)
        this.waiters.delete(check)
      }
      this.waiters.add(check)
      check()
    })
  }

  /** True when the connection is closed within `ms`, false when it is still open then. */
  async closesWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms)
    })
    const result = await Promise.race([this.closed.then(() => true as const), timeout])
    clearTimeout(timer)
    return result
  }

  /** Sends PINGREQ and waits for PINGRESP: proves the connection is open and served. */
  async ping(ms = 2000): Promise<void> {
    this.send(PINGREQ)
    await this.next(PacketType.PINGRESP, ms)
  }

  destroy(): void {
    this.socket.destroy()
  }
}
