/**
 * One client's queue of outgoing QoS 1/2 messages, oldest first, with what it weighs. Aedes
 * keeps two kinds of message here: those waiting for the client to come back, and those
 * already sent and awaiting its PUBACK/PUBREC/PUBCOMP (in flight). Both count towards the
 * limits, and both can be dropped to make room — an in-flight message that is gone is simply
 * not re-sent on reconnect (see `outgoingUpdate` in aedes-persistence.ts).
 *
 * A message enters the queue when its write begins, so that concurrent enqueues see each
 * other and the limit holds however many are in flight; until its write is durable it is
 * `pending`, and Aedes is not shown it.
 */
import type { BrokerPacket } from './aedes-persistence.js'
import { messageBytes } from './message-bytes.js'

export interface QueueLimits {
  /** Infinity for none. */
  messages: number
  bytes: number
}

export const NO_QUEUE_LIMITS: QueueLimits = { messages: Infinity, bytes: Infinity }

export interface QueuedMessage {
  seq: number
  packet: BrokerPacket
  bytes: number
  /** pending: its write is under way; refused: that write failed (it must not come back). */
  state: 'pending' | 'durable' | 'refused'
}

export class OutgoingQueue {
  private readonly entries: QueuedMessage[] = []
  private weight = 0

  static entry(seq: number, packet: BrokerPacket, state: QueuedMessage['state']): QueuedMessage {
    return { seq, packet, bytes: messageBytes(packet), state }
  }

  get length(): number {
    return this.entries.length
  }

  get bytes(): number {
    return this.weight
  }

  /** The messages Aedes may see and send: those whose writes are durable, oldest first. */
  durable(): QueuedMessage[] {
    return this.entries.filter((e) => e.state === 'durable')
  }

  /** Adds a message newer than every one queued. */
  push(entry: QueuedMessage): void {
    this.entries.push(entry)
    this.weight += entry.bytes
  }

  remove(entry: QueuedMessage): boolean {
    const at = this.entries.indexOf(entry)
    if (at < 0) return false
    this.entries.splice(at, 1)
    this.weight -= entry.bytes
    return true
  }

  replace(entry: QueuedMessage, packet: BrokerPacket): void {
    const bytes = messageBytes(packet)
    if (this.entries.includes(entry)) this.weight += bytes - entry.bytes
    entry.packet = packet
    entry.bytes = bytes
  }

  /**
   * Takes out the oldest messages until the queue is within `limits`, and returns them. A
   * message that alone exceeds the byte limit takes itself out too.
   */
  trim(limits: QueueLimits): QueuedMessage[] {
    const dropped: QueuedMessage[] = []
    while (this.entries.length > 0 && (this.entries.length > limits.messages || this.weight > limits.bytes)) {
      const oldest = this.entries.shift()!
      this.weight -= oldest.bytes
      dropped.push(oldest)
    }
    return dropped
  }

  /** Puts back messages a failed write had taken out, in their order; refused ones stay out. */
  restore(entries: readonly QueuedMessage[]): void {
    for (const entry of entries) {
      if (entry.state === 'refused' || this.entries.includes(entry)) continue
      const at = this.entries.findIndex((e) => e.seq > entry.seq)
      this.entries.splice(at < 0 ? this.entries.length : at, 0, entry)
      this.weight += entry.bytes
    }
  }
}
