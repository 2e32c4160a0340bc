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
 * The hub's own pushes of a stored change (devices/dispatcher.ts) are kept here too: recorded in
 * the transaction of the change, removed once routed — so a crash between the two does not lose
 * the push of a change the API answered as made.
 */
import type { PublishPacket } from 'aedes'
import type { Logger } from 'pino'
import type { BrokerMessage, PushJournal } from '../devices/dispatcher.js'
import type { Mutation, Store } from '../store/store.js'
import { decodePacket, encodePacket } from './packet-codec.js'

export class PublishJournal implements PushJournal {
  private nextSeq = 1
  /** Journal entries of packets still being routed, keyed by the packet Aedes routes. */
  private readonly pending = new WeakMap<object, number>()
  private leftovers: { seq: number; packet: PublishPacket }[] = []
  /** Entries routed in this turn of the event loop, removed together at its end. */
  private routedSeqs: number[] = []
  /** The removals on their way. */
  private removing: Promise<void> = Promise.resolve()

  constructor(
    private readonly store: Store,
    private readonly log: Logger
  ) {}

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

  /** A push of the hub's: the entry to store with the change it pushes (it is the sender: no client id). */
  record(message: BrokerMessage): { seq: number; mutation: Mutation } {
    const seq = this.nextSeq++
    const { topic, payload, qos, retain } = message
    return { seq, mutation: { op: 'journal.put', seq, packet: encodePacket({ cmd: 'publish', topic, payload, qos, retain, dup: false }) } }
  }

  /** The packet is routed (stored where it had to be): its entry is no longer needed. */
  settle(packet: object): void {
    const seq = this.pending.get(packet)
    if (seq === undefined) return
    this.pending.delete(packet)
    this.routed(seq)
  }

  /**
   * The entry `seq` is routed: removed, with the others routed in this turn of the event loop, in
   * one commit — a fleet push routes thousands, and a commit each would cost group commit a caller
   * each (ranges of consecutive numbers go as one statement).
   */
  routed(seq: number): void {
    if (this.routedSeqs.length === 0) setImmediate(() => void this.removeRouted())
    this.routedSeqs.push(seq)
  }

  /** Removes the entries routed so far now; resolves once that is stored (or failed: they are published again at start). */
  async flush(): Promise<void> {
    await this.removeRouted()
    await this.removing
  }

  private removeRouted(): Promise<void> {
    if (this.routedSeqs.length === 0) return Promise.resolve()
    const seqs = this.routedSeqs.sort((a, b) => a - b)
    this.routedSeqs = []
    const deletes: Mutation[] = []
    for (let i = 0; i < seqs.length; ) {
      let j = i
      while (j + 1 < seqs.length && seqs[j + 1] === seqs[j]! + 1) j++
      deletes.push(j === i ? { op: 'journal.delete', seq: seqs[i]! } : { op: 'journal.delete', seq: seqs[i]!, through: seqs[j]! })
      i = j + 1
    }
    // Not awaited by the routing: if this is lost, the restart publishes the messages once more (at least once).
    const removed = this.store.commit(deletes).catch((error: Error) => {
      this.log.warn({ entries: seqs.length, err: error.message }, 'publish journal entries not removed; they will be published again at start')
    })
    this.removing = Promise.all([this.removing, removed]).then(() => undefined)
    return removed
  }

  /** Publishes what a crash left between PUBACK (or a push's commit) and routing; call before clients are accepted. */
  async replay(publish: (packet: PublishPacket) => Promise<void>): Promise<number> {
    const leftovers = this.leftovers
    this.leftovers = []
    for (const { seq, packet } of leftovers) {
      this.pending.set(packet, seq)
      await publish(packet)
    }
    if (leftovers.length > 0) this.log.info({ messages: leftovers.length }, 'republished messages acknowledged, and pushes stored, before a crash')
    return leftovers.length
  }
}
