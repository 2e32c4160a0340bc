/**
 * How fast one MQTT connection may make the hub work: the PUBLISH, SUBSCRIBE and UNSUBSCRIBE
 * packets it sends, and their bytes, each within a rate per second (EMQX's `messages_rate` and
 * `bytes_rate`).
 *
 * What those packets cost is the hub's: each publish is routed (and a device's property publish
 * stored), each SUBSCRIBE and UNSUBSCRIBE stored. A device that sends them as fast as its link
 * allows would take the hub's cpu and its store from every other device. Held to a rate, it is
 * slowed down, not refused: the hub stops reading its connection until it is within the rate
 * again (inbound-guard.ts), and TCP holds the device back — what EMQX does too.
 *
 * The arithmetic, by whole seconds: in each second a connection may start packets while it has
 * sent less than a second's worth; what it sent beyond that (a packet larger than what was left
 * passes whole) weighs on the seconds after, each of which takes a second's worth off. So over
 * any stretch of time it sends at most the rate, plus one second's worth at once.
 *
 * Its state is three small integers per connection, kept on the connection's framing
 * (inbound-guard.ts), not in an object of its own: a hub holds a million connections, each
 * paying for every field it carries (issue 16's heap per session).
 */

export interface InboundLimits {
  /** PUBLISH, SUBSCRIBE and UNSUBSCRIBE packets per second; Infinity: no limit. */
  messagesPerSecond: number
  /** Bytes of those packets per second; Infinity: no limit. */
  bytesPerSecond: number
}

/** The limits of a hub configured with `0` for "no limit"; undefined when neither limits anything. */
export function inboundLimits(messagesPerSecond: number, bytesPerSecond: number): InboundLimits | undefined {
  if (messagesPerSecond === 0 && bytesPerSecond === 0) return undefined
  return { messagesPerSecond: messagesPerSecond || Infinity, bytesPerSecond: bytesPerSecond || Infinity }
}

/** A connection's use of its rate. */
export interface RateUse {
  /** The second (of `currentSecond`) the counts are as of; NOT_RATED: the connection has no rate. */
  rateSecond: number
  /** Packets sent, less a second's worth for each second since the first of them: never below 0. */
  rateMessages: number
  /** Bytes sent, counted the same way. */
  rateBytes: number
}

/** `rateSecond` of a connection not held to a rate (a superuser's). */
export const NOT_RATED = -1

/** The limit that holds a connection back. */
export type HeldBy = 'messages' | 'bytes'

/** Now, in whole seconds of a clock that never goes back (a small integer for 68 years). */
export function currentSecond(): number {
  return Math.floor(performance.now() / 1000)
}

/** A connection's use, as it starts: nothing sent. */
export function freshUse(second: number): RateUse {
  return { rateSecond: second, rateMessages: 0, rateBytes: 0 }
}

/**
 * Whether a packet may start in `second`. Its bytes are charged once its length is known
 * (`charge`): a packet larger than what is left still passes, and the excess holds back the next.
 */
export function admits(use: RateUse, limits: InboundLimits, second: number): boolean {
  const passed = second - use.rateSecond
  // not when no second passed: 0 × Infinity (no limit) is NaN
  if (passed > 0) {
    use.rateMessages = Math.max(0, use.rateMessages - passed * limits.messagesPerSecond)
    use.rateBytes = Math.max(0, use.rateBytes - passed * limits.bytesPerSecond)
    use.rateSecond = second
  }
  return use.rateMessages < limits.messagesPerSecond && use.rateBytes < limits.bytesPerSecond
}

/** A packet of `bytes` started. */
export function charge(use: RateUse, bytes: number): void {
  use.rateMessages += 1
  use.rateBytes += bytes
}

/** Which limit holds the connection back (after `admits` said no). */
export function heldBy(use: RateUse, limits: InboundLimits): HeldBy {
  return use.rateMessages >= limits.messagesPerSecond ? 'messages' : 'bytes'
}

/** The first second in which `admits` says yes again (after it said no). */
export function freeFrom(use: RateUse, limits: InboundLimits): number {
  // seconds until what was sent is less than a second's worth; a limit not reached (or none) needs 1
  const secondsFor = (sent: number, perSecond: number) => (sent < perSecond ? 1 : Math.floor(sent / perSecond))
  return use.rateSecond + Math.max(secondsFor(use.rateMessages, limits.messagesPerSecond), secondsFor(use.rateBytes, limits.bytesPerSecond))
}
