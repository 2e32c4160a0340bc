/**
 * The gateway's confirmable notifications not yet acknowledged, each with the moment the gateway
 * gives up on it. RFC 7641 §4.5: an observer that does not acknowledge a confirmable
 * notification is removed from the list of observers. node-coap retransmits a notification
 * MAX_RETRANSMIT times (RFC 7252 §4.2) and then waits, but tells its observe stream only when
 * its own timer of EXCHANGE_LIFETIME ends — about 250 s with the default ACK_TIMEOUT, while the
 * retransmissions end within MAX_TRANSMIT_SPAN (45 s) — so a device gone silent kept its
 * observations, and their subscription entities, for minutes.
 *
 * Here a notification is given up once MAX_TRANSMIT_WAIT (93 s with the default ACK_TIMEOUT) has
 * passed since it was first sent without an ACK or a Reset: RFC 7252 §4.8.2 defines it as the
 * longest a sender waits from the first transmission to giving up, the timeout of the last
 * retransmission included, whatever initial timeout node-coap drew at random.
 */

/** One notification waiting: `owner` is the observation it belongs to. */
interface Waiting<Owner> {
  owner: Owner
  timer: NodeJS.Timeout
}

export class UnacknowledgedNotifications<Owner extends object> {
  /** By peer and message id. */
  private readonly waiting = new Map<string, Waiting<Owner>>()
  private readonly byOwner = new Map<Owner, Set<string>>()

  constructor(private readonly giveUpMs: number) {}

  /** `owner` sent message `messageId` to `peer`, confirmable: `giveUp` runs unless `replied` comes first. */
  sent(peer: string, messageId: number, owner: Owner, giveUp: () => void): void {
    const key = `${peer} ${messageId}`
    this.remove(key)
    const timer = setTimeout(() => {
      this.remove(key)
      giveUp()
    }, this.giveUpMs)
    // a give-up is no reason to keep the process alive; the gateway's stop forgets them all
    timer.unref()
    this.waiting.set(key, { owner, timer })
    let keys = this.byOwner.get(owner)
    if (!keys) this.byOwner.set(owner, (keys = new Set()))
    keys.add(key)
  }

  /** How many of `owner`'s notifications are waiting. */
  pendingOf(owner: Owner): number {
    return this.byOwner.get(owner)?.size ?? 0
  }

  /** `peer` acknowledged (or reset) message `messageId`. */
  replied(peer: string, messageId: number): void {
    this.remove(`${peer} ${messageId}`)
  }

  /** The observation ended: its notifications are no longer waited for. */
  forget(owner: Owner): void {
    for (const key of this.byOwner.get(owner) ?? []) this.remove(key)
  }

  private remove(key: string): void {
    const waiting = this.waiting.get(key)
    if (!waiting) return
    clearTimeout(waiting.timer)
    this.waiting.delete(key)
    const keys = this.byOwner.get(waiting.owner)
    keys?.delete(key)
    if (keys?.size === 0) this.byOwner.delete(waiting.owner)
  }
}
