/**
 * Admits new MQTT connections: at most so many at once, and at most so many new ones per second
 * (a token bucket that holds one second's worth, so a burst of reconnects after a network blip
 * gets through at once while a flood cannot go on). A connection over either limit is closed
 * as it is accepted, before it costs a parser, a timer or a store write — and, above all,
 * before it takes the last file descriptors the store and the API need.
 *
 * One address may also hold only so many connections that have not sent their CONNECT yet: a
 * host opening thousands of idle sockets would otherwise take the hub-wide allowance (and its
 * cpu) from every other device until the connect timeout ends them.
 */
import { readFileSync } from 'node:fs'

export type GateRefusal = 'too_many_connections' | 'connect_rate_limited' | 'too_many_pending_connections'

/** Descriptors kept for everything but MQTT connections: the store, the API, CoAP, logs. */
export const RESERVED_DESCRIPTORS = 256

export class ConnectionGate {
  private open = 0
  private tokens: number
  private refilledAt: number
  /** Connections without a CONNECT yet, by address (only addresses that have some). */
  private readonly pending = new Map<string, number>()

  constructor(
    readonly maxConnections: number,
    private readonly perSecond: number,
    private readonly maxPendingPerAddress = Number.POSITIVE_INFINITY,
    private readonly now: () => number = () => performance.now()
  ) {
    this.tokens = perSecond
    this.refilledAt = now()
  }

  /**
   * Whether a connection just accepted from `address` may stay; when it may, it counts as
   * pending until `identified(address)`, and `closed()` must follow its end.
   */
  admit(address = ''): GateRefusal | null {
    if ((this.pending.get(address) ?? 0) >= this.maxPendingPerAddress) return 'too_many_pending_connections'
    if (this.open >= this.maxConnections) return 'too_many_connections'
    const t = this.now()
    this.tokens = Math.min(this.perSecond, this.tokens + ((t - this.refilledAt) / 1000) * this.perSecond)
    this.refilledAt = t
    if (this.tokens < 1) return 'connect_rate_limited'
    this.tokens -= 1
    this.open++
    this.pending.set(address, (this.pending.get(address) ?? 0) + 1)
    return null
  }

  /** A connection admitted from `address` sent its CONNECT (or ended before it): no longer pending. */
  identified(address = ''): void {
    const left = (this.pending.get(address) ?? 1) - 1
    if (left > 0) this.pending.set(address, left)
    else this.pending.delete(address)
  }

  closed(): void {
    this.open--
  }

  get connections(): number {
    return this.open
  }
}

/**
 * The process's soft limit on open files (Linux: /proc/self/limits), or undefined where it
 * cannot be read. Past it every accept, every store file and every API socket fails at once.
 */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
    const soft = line?.split(/\s{2,}/)[1]
    return soft === undefined || soft === 'unlimited' ? undefined : Number(soft)
  } catch {
    return undefined
  }
}

/** The connection limit that fits the open-file limit, keeping RESERVED_DESCRIPTORS for the rest. */
export function fitConnectionLimit(configured: number, fileLimit: number | undefined): number {
  if (fileLimit === undefined || !Number.isFinite(fileLimit)) return configured
  return Math.max(1, Math.min(configured, fileLimit - RESERVED_DESCRIPTORS))
}
