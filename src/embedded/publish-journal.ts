/**
 * Makes a QoS 1 PUBACK a promise the hub keeps through a crash.
 *
 * Aedes answers a QoS 1 PUBLISH with PUBACK *before* it routes the message — before it stores a
 * retained copy or queues it for offline persistent sessions. A `kill -9` in between would lose
 * a message its sender was told had arrived. So, in `authorizePublish` (which runs before the
 * PUBACK), the message is first written to this journal; once Aedes has routed it (its
 * `published` hook, which runs after the retained copy and the offline queues are durable),
 * the entry is removed. At start, entries left by a crash are published again: at least once,
 * as QoS 1 promises. (QoS 2 needs none of this: Aedes stores it before its PUBREC.)
 *
 * (The hub's own pushes have a journal of their own, devices/push-journal.ts.)
 */
import type { PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import { RemovalsPerTurn } from '../store/removals-per-turn.js'
import type { Store } from '../store/store.js'
import { decodePacket, encodePacket } from './packet-codec.js'

export class PublishJournal {
  private nextSeq = 1
  /** Journal entries of packets still being routed, keyed by the packet Aedes routes. */
  private readonly pending = new WeakMap<object, number>()
  private leftovers: { seq: number; packet: PublishPacket }[] = []
  private readonly removals: RemovalsPerTurn

  constructor(
    private readonly store: Store,
    private readonly log: Logger
  ) {
    this.removals = new RemovalsPerTurn(
      store,
      (from, to) => (from === to ? { op: 'journal.delete', seq: from } : { op: 'journal.delete', seq: from, through: to }),
      log,
      'they will be published again at start'
    )
  }

  load(entries: readonly { seq: number; packet: Uint8Array }[]): void {
    this.leftovers = entries.map((e) => ({ seq: e.seq, packet: decodePacket<PublishPacket>(e.packet) }))
    for (const e of entries) this.nextSeq = Math.max(this.nextSeq, e.seq + 1)
  }

  /** Durably records a publish its sender is about to be told arrived. */
  async accept(packet: PublishPacket): Promise<void> {
    const seq = this.nextSeq++
    const { topic, payload, qos, retain } = packet
    // with its sender (set by the publish hook), so that a replay after a crash is delivered as
    // the first routing would have been: not echoed to its sender on a change topic (deliver.ts)
    const sender = (packet as PublishPacket & { clientId?: string }).clientId
    const journaled = { cmd: 'publish', topic, payload, qos, retain, dup: false, ...(sender === undefined ? {} : { clientId: sender }) }
    await this.store.commit([{ op: 'journal.put', seq, packet: encodePacket(journaled) }])
    this.pending.set(packet, seq)
  }

  /** The packet is routed (stored where it had to be): its entry is no longer needed. */
  settle(packet: object): void {
    const seq = this.pending.get(packet)
    if (seq === undefined) return
    this.pending.delete(packet)
    this.removals.remove(seq)
  }

  /** Removes the entries of what was routed so far; before the store closes. */
  flush(): Promise<void> {
    return this.removals.flush()
  }

  /** Publishes what a crash left between PUBACK and routing; call before clients are accepted. */
  async replay(publish: (packet: PublishPacket) => Promise<void>): Promise<number> {
    const leftovers = this.leftovers
    this.leftovers = []
    for (const { seq, packet } of leftovers) {
      this.pending.set(packet, seq)
      await publish(packet)
    }
    if (leftovers.length > 0) this.log.info({ messages: leftovers.length }, 'republished messages acknowledged before a crash')
    return leftovers.length
  }
}
