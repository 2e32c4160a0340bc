/**
 * How many retained messages, and how many bytes of them, each device and the whole hub hold,
 * against their limits. A device's retained messages are those it published (its own
 * namespace); what superusers and the hub itself retain counts towards the hub-wide limits
 * only. A message replacing another is measured after the old one is freed, so a device at its
 * limit can still update the topics it has.
 */

export interface RetainedLimits {
  /** Per device; Infinity for none. */
  messagesPerDevice: number
  bytesPerDevice: number
  /** Hub-wide. */
  messages: number
  bytes: number
}

export const NO_RETAINED_LIMITS: RetainedLimits = { messagesPerDevice: Infinity, bytesPerDevice: Infinity, messages: Infinity, bytes: Infinity }

/** One retained message as the quota sees it. */
export interface RetainedSize {
  /** The device that published it; undefined for a superuser or the hub. */
  owner: string | undefined
  bytes: number
}

export interface Usage {
  messages: number
  bytes: number
}

export class RetainedQuota {
  private readonly byOwner = new Map<string, Usage>()
  private readonly hub: Usage = { messages: 0, bytes: 0 }

  constructor(private readonly limits: RetainedLimits) {}

  /** Which limit `next`, replacing `previous` on its topic, would exceed; undefined when it fits. */
  exceeded(next: RetainedSize, previous: RetainedSize | undefined): string | undefined {
    const freed = (owner: string | undefined): Usage =>
      previous !== undefined && previous.owner === owner ? { messages: 1, bytes: previous.bytes } : { messages: 0, bytes: 0 }
    if (next.owner !== undefined) {
      const device = this.usage(next.owner)
      const mine = freed(next.owner)
      if (device.messages - mine.messages + 1 > this.limits.messagesPerDevice) return `the device's ${this.limits.messagesPerDevice} retained messages`
      if (device.bytes - mine.bytes + next.bytes > this.limits.bytesPerDevice) return `the device's ${this.limits.bytesPerDevice} bytes of retained messages`
    }
    const all = previous === undefined ? { messages: 0, bytes: 0 } : { messages: 1, bytes: previous.bytes }
    if (this.hub.messages - all.messages + 1 > this.limits.messages) return `the hub's ${this.limits.messages} retained messages`
    if (this.hub.bytes - all.bytes + next.bytes > this.limits.bytes) return `the hub's ${this.limits.bytes} bytes of retained messages`
    return undefined
  }

  take(size: RetainedSize): void {
    this.change(size, 1)
  }

  release(size: RetainedSize): void {
    this.change(size, -1)
  }

  /** What `owner` holds; the hub's total without one. */
  usage(owner?: string): Usage {
    if (owner === undefined) return { ...this.hub }
    const device = this.byOwner.get(owner)
    return device ? { ...device } : { messages: 0, bytes: 0 }
  }

  private change(size: RetainedSize, sign: 1 | -1): void {
    this.hub.messages += sign
    this.hub.bytes += sign * size.bytes
    if (size.owner === undefined) return
    const device = this.byOwner.get(size.owner) ?? { messages: 0, bytes: 0 }
    device.messages += sign
    device.bytes += sign * size.bytes
    if (device.messages === 0) this.byOwner.delete(size.owner)
    else this.byOwner.set(size.owner, device)
  }
}
