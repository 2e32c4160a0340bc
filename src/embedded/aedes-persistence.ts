/**
 * The embedded broker's persistence, on our store: Aedes keeps its subscriptions, QoS 1/2
 * messages queued for offline clients, QoS 2 dedup state, retained messages and wills here.
 * It passes aedes-persistence's own abstract test suite (test/embedded/aedes-persistence.test.ts).
 *
 * Subscriptions are not kept here but in the TopicBook, which is also where session entities
 * keep their topics — one record. Who *writes* them is a SubscriptionWriter: on its own (as in
 * the abstract suite) this persistence writes the TopicBook itself; inside the hub the registry
 * does, so that subscription changes are incarnation-checked like every lifecycle event.
 * Everything else is mirrored in memory (as Aedes' own memory persistence does) and written
 * through the store; every method resolves only once its writes are durable, so a SUBACK or
 * PUBACK never promises what a crash would take back.
 *
 * No client can make it grow without bound: retained messages have limits per device and
 * hub-wide (retained-quota.ts), and each client's queue has its own (outgoing-queue.ts). A
 * SUBSCRIBE looks up retained messages in a trie (retained-index.ts), so it costs what its
 * filter can match, not what the hub retains.
 */
import { Readable } from 'node:stream'
import type { TopicSubscription } from '../domain/session.js'
import type { SessionStateOwner } from '../registry/registry.js'
import type { TopicBook } from '../registry/topic-book.js'
import type { Plan } from '../store/plan.js'
import type { Mutation, Snapshot, Store } from '../store/store.js'
import { messageBytes } from './message-bytes.js'
import { NO_QUEUE_LIMITS, OutgoingQueue, type QueuedMessage, type QueueLimits } from './outgoing-queue.js'
import { clonePacket, decodePacket, encodePacket } from './packet-codec.js'
import { RetainedIndex } from './retained-index.js'
import { NO_RETAINED_LIMITS, RetainedQuota, type RetainedLimits, type RetainedSize } from './retained-quota.js'

/** The packet fields this persistence reads; Aedes packets carry more, which are kept as-is. */
export interface BrokerPacket {
  cmd: string
  topic?: string
  payload?: Buffer | string
  qos?: number
  messageId?: number
  brokerId?: string
  brokerCounter?: number
  clientId?: string
  [field: string]: unknown
}

export interface ClientRef {
  id: string
}

/** Writes a client's subscriptions for the broker; every method resolves once durable. */
export interface SubscriptionWriter {
  add(client: ClientRef, subscriptions: TopicSubscription[]): Promise<void>
  remove(client: ClientRef, topics: string[]): Promise<void>
  clean(client: ClientRef): Promise<void>
}

/**
 * The writer a persistence has on its own (no hub around it, so nothing follows the store's
 * change log): through the store, then straight into the TopicBook.
 */
export function topicBookWriter(store: Store, topics: TopicBook): SubscriptionWriter {
  const run = async (plan: Plan) => {
    await store.commit(plan.mutations)
    for (const m of plan.mutations) if (m.op === 'topic.put' || m.op === 'topic.delete' || m.op === 'topic.clear') topics.applyChange(m)
    plan.apply()
  }
  return {
    add: (client, subscriptions) => run(topics.planAdd(client.id, subscriptions, true)),
    remove: (client, removed) => run(topics.planRemove(client.id, removed)),
    clean: (client) => run(topics.planClear(client.id))
  }
}

interface BrokerRef {
  id: string
}

/** What the persistence is told at construction; every limit defaults to none. */
export interface PersistenceOptions {
  writer?: SubscriptionWriter
  /** Called by destroy(); the hub closes its store itself, so it passes nothing. */
  onDestroy?: () => Promise<void>
  retained?: {
    limits?: Partial<RetainedLimits>
    /** The device a retained publish counts against; undefined: the hub-wide limits only. */
    ownerOf?: (packet: BrokerPacket) => string | undefined
    /** A retained publish over a limit: delivered, but not retained. */
    refused?: (packet: BrokerPacket, limit: string) => void
  }
  queue?: {
    limits?: Partial<QueueLimits>
    /** Queued messages dropped, oldest first, to keep a client's queue within its limits. */
    dropped?: (clientId: string, count: number) => void
  }
}

interface RetainedEntry extends RetainedSize {
  packet: BrokerPacket
}

/** Where a stored retained message keeps the device it counts against, so a restart knows. */
const RETAINED_OWNER = 'iothubRetainedOwner'

export class StoreAedesPersistence implements SessionStateOwner {
  private broker: BrokerRef | undefined
  /** Retained messages whose writes are durable. */
  private readonly retained = new RetainedIndex<RetainedEntry>()
  /**
   * Topics with retained writes under way: the message the newest one leaves (null: none), so
   * that the quota of concurrent publishes to one topic is reckoned against each other.
   */
  private readonly retainedWrites = new Map<string, { latest: RetainedSize | null; pending: number }>()
  private readonly retainedQuota: RetainedQuota
  private readonly outgoing = new Map<string, OutgoingQueue>()
  private readonly incoming = new Map<string, Map<number, BrokerPacket>>()
  private readonly wills = new Map<string, BrokerPacket>()
  /** Client ids of previous runs' wills the hub publishes itself once it can (their change could not be stored). */
  private readonly heldWills = new Set<string>()
  private nextSeq = 1
  private destroyed = false

  private readonly writer: SubscriptionWriter
  private readonly onDestroy: () => Promise<void>
  private readonly retainedOwnerOf: (packet: BrokerPacket) => string | undefined
  private readonly retainedRefused: (packet: BrokerPacket, limit: string) => void
  private readonly queueLimits: QueueLimits
  private readonly queuedDropped: (clientId: string, count: number) => void

  constructor(
    private readonly store: Store,
    private readonly topics: TopicBook,
    options: PersistenceOptions = {}
  ) {
    this.writer = options.writer ?? topicBookWriter(store, topics)
    this.onDestroy = options.onDestroy ?? (async () => undefined)
    this.retainedQuota = new RetainedQuota({ ...NO_RETAINED_LIMITS, ...options.retained?.limits })
    this.retainedOwnerOf = options.retained?.ownerOf ?? (() => undefined)
    this.retainedRefused = options.retained?.refused ?? (() => undefined)
    this.queueLimits = { ...NO_QUEUE_LIMITS, ...options.queue?.limits }
    this.queuedDropped = options.queue?.dropped ?? (() => undefined)
  }

  /** What the retained messages of `owner` (a device), or of the whole hub, weigh. */
  retainedUsage(owner?: string): { messages: number; bytes: number } {
    return this.retainedQuota.usage(owner)
  }

  /** How many messages, and bytes, are queued for `clientId`. */
  queuedFor(clientId: string): { messages: number; bytes: number } {
    const queue = this.outgoing.get(clientId)
    return { messages: queue?.length ?? 0, bytes: queue?.bytes ?? 0 }
  }

  /**
   * Drops queues of clients that have no session (a message queued just after its session
   * ended): they would otherwise be delivered to the next, unrelated client of that id.
   */
  async dropQueuesWithoutSession(hasSession: (clientId: string) => boolean): Promise<number> {
    const orphans = new Set([...this.outgoing.keys(), ...this.incoming.keys()].filter((id) => !hasSession(id)))
    if (orphans.size === 0) return 0
    await this.run({
      mutations: [...orphans].flatMap((clientId) => this.planDropSession(clientId).mutations),
      apply: () => {
        for (const id of orphans) this.planDropSession(id).apply()
      }
    })
    return orphans.size
  }

  /** Fills the memory mirror from what the store held at start. */
  load(snapshot: Pick<Snapshot, 'retained' | 'outgoing' | 'incoming' | 'wills'>): void {
    // Limits lowered since the last run leave what is stored as it is: it counts, so nothing
    // new is retained until the usage is back under them, and the next message queued for a
    // client trims its queue.
    for (const r of snapshot.retained) {
      const packet = decodePacket<BrokerPacket>(r.packet)
      const owner = packet[RETAINED_OWNER]
      const entry = { packet, owner: typeof owner === 'string' ? owner : undefined, bytes: messageBytes(packet) }
      this.retained.set(r.topic, entry)
      this.retainedQuota.take(entry)
    }
    for (const o of snapshot.outgoing) {
      queueOf(this.outgoing, o.clientId).push(OutgoingQueue.entry(o.seq, clonePacket(decodePacket<BrokerPacket>(o.packet)), 'durable'))
      this.nextSeq = Math.max(this.nextSeq, o.seq + 1)
    }
    for (const i of snapshot.incoming) mapOf(this.incoming, i.clientId).set(i.messageId, decodePacket(i.packet))
    for (const w of snapshot.wills) this.wills.set(w.clientId, decodePacket(w.packet))
  }

  async setup(broker: BrokerRef): Promise<void> {
    this.broker = broker
  }

  private async run(plan: Plan): Promise<void> {
    await this.store.commit(plan.mutations)
    plan.apply()
  }

  // ── retained ──────────────────────────────────────────────────────────────────────────

  /**
   * A retained publish over a limit is delivered to current subscribers but not retained
   * (MQTT 3.1.1, which Aedes speaks, has no way to tell its sender), and it clears what the
   * topic retained before: a later subscriber must not take the old value for the current
   * one. Clearing (an empty payload) is always allowed. Refusing is not an error to Aedes —
   * that would fail the whole publish and close the sender's connection.
   */
  async storeRetained(packet: BrokerPacket): Promise<void> {
    const topic = packet.topic!
    const copy = { ...packet }
    const previous = this.latestRetained(topic)
    let next: RetainedEntry | null = null
    if (copy.payload !== undefined && copy.payload.length > 0) {
      const owner = this.retainedOwnerOf(packet)
      if (owner !== undefined) copy[RETAINED_OWNER] = owner
      const entry = { packet: copy, owner, bytes: messageBytes(copy) }
      const exceeded = this.retainedQuota.exceeded(entry, previous)
      if (exceeded === undefined) next = entry
      else this.retainedRefused(packet, exceeded)
    }
    if (previous === undefined && next === null) return
    // reserved now, not once durable, so concurrent publishes cannot all fit into one slot
    if (previous !== undefined) this.retainedQuota.release(previous)
    if (next !== null) this.retainedQuota.take(next)
    const write = this.beginRetainedWrite(topic, next)
    try {
      await this.store.commit([next === null ? { op: 'retained.delete', topic } : { op: 'retained.put', topic, packet: encodePacket(next.packet) }])
    } catch (error) {
      if (next !== null) this.retainedQuota.release(next)
      if (previous !== undefined) this.retainedQuota.take(previous)
      this.endRetainedWrite(topic, write, previous ?? null)
      throw error
    }
    if (next === null) this.retained.delete(topic)
    else this.retained.set(topic, next)
    this.endRetainedWrite(topic, write)
  }

  /** The message `topic` retains once the writes under way are done. */
  private latestRetained(topic: string): RetainedSize | undefined {
    const writes = this.retainedWrites.get(topic)
    return writes ? (writes.latest ?? undefined) : this.retained.get(topic)
  }

  private beginRetainedWrite(topic: string, next: RetainedSize | null): RetainedSize | null {
    const writes = this.retainedWrites.get(topic)
    if (writes) {
      writes.latest = next
      writes.pending++
    } else this.retainedWrites.set(topic, { latest: next, pending: 1 })
    return next
  }

  /** `undo`: what the topic held before this write, which failed. */
  private endRetainedWrite(topic: string, write: RetainedSize | null, undo?: RetainedSize | null): void {
    const writes = this.retainedWrites.get(topic)!
    if (undo !== undefined && writes.latest === write) writes.latest = undo
    if (--writes.pending === 0) this.retainedWrites.delete(topic)
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern])
  }

  createRetainedStreamCombi(patterns: string[]): Readable {
    return Readable.from(this.retained.match(patterns).map((entry) => entry.packet))
  }

  // ── subscriptions (the TopicBook's persistent rows) ──────────────────────────────────────

  async addSubscriptions(client: ClientRef, subs: TopicSubscription[]): Promise<void> {
    await this.writer.add(client, subs.map(toTopicSubscription))
  }

  async removeSubscriptions(client: ClientRef, topics: string[]): Promise<void> {
    await this.writer.remove(client, topics)
  }

  async subscriptionsByClient(client: ClientRef): Promise<TopicSubscription[]> {
    return this.topics.persistentTopicsOf(client.id).map((s) => ({ ...s }))
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return this.topics.countPersistent()
  }

  async subscriptionsByTopic(topic: string) {
    return this.topics.matchPersistent(topic)
  }

  async cleanSubscriptions(client: ClientRef): Promise<void> {
    await this.writer.clean(client)
  }

  getClientList(topic: string): Readable {
    return Readable.from([...this.topics.sessionsWithPersistentTopic(topic)])
  }

  // ── outgoing queue ────────────────────────────────────────────────────────────────────

  async outgoingEnqueue(sub: { clientId: string }, packet: BrokerPacket): Promise<void> {
    await this.outgoingEnqueueCombi([sub], packet)
  }

  /**
   * When a client's queue would exceed its limits, its oldest messages make room, their
   * deletes in the same commit; a message alone larger than the byte limit is not queued.
   */
  async outgoingEnqueueCombi(subs: { clientId: string }[], packet: BrokerPacket): Promise<void> {
    const mutations: Mutation[] = []
    const changes: { clientId: string; queue: OutgoingQueue; entry: QueuedMessage; dropped: QueuedMessage[] }[] = []
    for (const { clientId } of subs) {
      const queue = queueOf(this.outgoing, clientId)
      const entry = OutgoingQueue.entry(this.nextSeq++, clonePacket(packet), 'pending')
      queue.push(entry)
      const dropped = queue.trim(this.queueLimits)
      for (const d of dropped) if (d !== entry) mutations.push({ op: 'outgoing.delete', clientId, seq: d.seq })
      if (!dropped.includes(entry)) mutations.push({ op: 'outgoing.put', clientId, seq: entry.seq, packet: encodePacket(entry.packet) })
      changes.push({ clientId, queue, entry, dropped })
    }
    try {
      if (mutations.length > 0) await this.store.commit(mutations)
    } catch (error) {
      for (const { clientId, queue, entry, dropped } of changes) {
        entry.state = 'refused'
        queue.remove(entry)
        queue.restore(dropped)
        this.forgetIfEmpty(clientId, queue)
      }
      throw error
    }
    for (const { clientId, queue, entry, dropped } of changes) {
      if (entry.state === 'pending') entry.state = 'durable'
      this.forgetIfEmpty(clientId, queue)
      if (dropped.length > 0) this.queuedDropped(clientId, dropped.length)
    }
  }

  /**
   * A message that is not (or no longer) queued — dropped for its client's limits, or its
   * session ended — is no error: Aedes would close the client's connection for it. The message
   * being sent goes out all the same, just not kept for a re-send.
   */
  async outgoingUpdate(client: ClientRef, packet: BrokerPacket): Promise<void> {
    const queue = this.outgoing.get(client.id)
    for (const queued of queue?.durable() ?? []) {
      // The same message: match on broker id and counter, then adopt the messageId. A different
      // message that reuses the messageId (ids wrap at 65535): the newer packet replaces it.
      const same = queued.packet.brokerId === packet.brokerId && queued.packet.brokerCounter === packet.brokerCounter
      const reused = queued.packet.brokerId !== packet.brokerId && queued.packet.messageId === packet.messageId
      if (!same && !reused) continue
      const next = { ...withoutFunctions(same ? queued.packet : packet), messageId: packet.messageId }
      await this.run({
        mutations: [{ op: 'outgoing.put', clientId: client.id, seq: queued.seq, packet: encodePacket(next) }],
        apply: () => queue!.replace(queued, next)
      })
      return
    }
  }

  async outgoingClearMessageId(client: ClientRef, packet: { messageId?: number }): Promise<BrokerPacket | undefined> {
    const queue = this.outgoing.get(client.id)
    const queued = queue?.durable().find((q) => q.packet.messageId === packet.messageId)
    if (!queue || !queued) return undefined
    await this.run({
      mutations: [{ op: 'outgoing.delete', clientId: client.id, seq: queued.seq }],
      apply: () => {
        queue.remove(queued)
        this.forgetIfEmpty(client.id, queue)
      }
    })
    return queued.packet
  }

  /** How many messages `clientId`'s queue holds: waiting while it is offline, or sent and not yet acknowledged. */
  queued(clientId: string): number {
    return this.outgoing.get(clientId)?.length ?? 0
  }

  outgoingStream(client: ClientRef): Readable {
    // a copy: the client acknowledges (and so removes) messages while the stream is read
    return Readable.from((this.outgoing.get(client.id)?.durable() ?? []).map((q) => q.packet))
  }

  private forgetIfEmpty(clientId: string, queue: OutgoingQueue): void {
    if (queue.length === 0 && this.outgoing.get(clientId) === queue) this.outgoing.delete(clientId)
  }

  // ── incoming QoS 2 ────────────────────────────────────────────────────────────────────

  async incomingStorePacket(client: ClientRef, packet: BrokerPacket): Promise<void> {
    const stored = clonePacket(packet)
    stored.messageId = packet.messageId
    const messageId = packet.messageId!
    await this.run({
      mutations: [{ op: 'incoming.put', clientId: client.id, messageId, packet: encodePacket(stored) }],
      apply: () => mapOf(this.incoming, client.id).set(messageId, stored)
    })
  }

  async incomingGetPacket(client: ClientRef, packet: { messageId?: number }): Promise<BrokerPacket> {
    const stored = this.incoming.get(client.id)?.get(packet.messageId!)
    if (!stored) throw new Error('no such packet')
    return stored
  }

  async incomingDelPacket(client: ClientRef, packet: { messageId?: number }): Promise<void> {
    const messageId = packet.messageId!
    if (!this.incoming.get(client.id)?.has(messageId)) throw new Error('no such packet')
    await this.run({
      mutations: [{ op: 'incoming.delete', clientId: client.id, messageId }],
      apply: () => this.incoming.get(client.id)?.delete(messageId)
    })
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    if (!this.incoming.has(client.id)) return
    await this.run({ mutations: [{ op: 'incoming.clear', clientId: client.id }], apply: () => this.incoming.delete(client.id) })
  }

  // ── wills ─────────────────────────────────────────────────────────────────────────────

  async putWill(client: ClientRef, packet: BrokerPacket): Promise<void> {
    packet.brokerId = this.broker?.id
    packet.clientId = client.id
    await this.run({
      mutations: [{ op: 'will.put', clientId: client.id, packet: encodePacket(packet) }],
      apply: () => {
        this.wills.set(client.id, packet)
        // the client is back with a will of this run: the one held for it is replaced
        this.heldWills.delete(client.id)
      }
    })
  }

  async getWill(client: ClientRef): Promise<BrokerPacket | undefined> {
    return this.wills.get(client.id)
  }

  async delWill(client: ClientRef): Promise<BrokerPacket | undefined> {
    const will = this.wills.get(client.id)
    if (!will) return undefined
    await this.run({
      mutations: [{ op: 'will.delete', clientId: client.id }],
      apply: () => {
        this.wills.delete(client.id)
        this.heldWills.delete(client.id)
      }
    })
    return will
  }

  /**
   * Wills of clients whose broker is not among `brokers` (a broker that died, or a previous run),
   * but those the hub holds back to publish itself (`holdWill`): Aedes publishes what this
   * streams every four heartbeats, past the hub's rules for wills of a previous run.
   */
  streamWill(brokers: Record<string, unknown> = {}): Readable {
    return Readable.from([...this.wills].filter(([clientId, w]) => !brokers[w.brokerId ?? ''] && !this.heldWills.has(clientId)).map(([, w]) => w))
  }

  /** Keeps a previous run's will from `streamWill`: the hub publishes it itself, once it can (`heldWills`). */
  holdWill(clientId: string): void {
    if (this.wills.has(clientId)) this.heldWills.add(clientId)
  }

  /** The wills held back (`holdWill`), until they are deleted or their client stores a new one. */
  heldWillPackets(): BrokerPacket[] {
    return [...this.heldWills].flatMap((clientId) => this.wills.get(clientId) ?? [])
  }

  // ── session end ───────────────────────────────────────────────────────────────────────

  /**
   * When a session entity ends (expiry, clean end), the broker's queues for it go with it.
   * Always cleared, even when empty here: a message queued for it may be in flight to the store.
   */
  planDropSession(clientId: string): Plan {
    return {
      mutations: [
        { op: 'outgoing.clear', clientId },
        { op: 'incoming.clear', clientId }
      ],
      apply: () => {
        this.outgoing.delete(clientId)
        this.incoming.delete(clientId)
      }
    }
  }

  async destroy(): Promise<void> {
    if (this.destroyed) throw new Error('destroyed called twice!')
    this.destroyed = true
    await this.onDestroy()
  }
}

function toTopicSubscription(sub: TopicSubscription): TopicSubscription {
  const { topic, qos, rh, rap, nl, subscriptionIdentifier } = sub
  return {
    topic,
    qos,
    rh,
    rap,
    nl,
    ...(subscriptionIdentifier !== undefined ? { subscriptionIdentifier } : {})
  }
}

/** A copy that can be stored: Aedes' in-flight packets carry a write callback, which cannot. */
function withoutFunctions(packet: BrokerPacket): BrokerPacket {
  const copy: BrokerPacket = { cmd: packet.cmd }
  for (const [key, value] of Object.entries(packet)) if (typeof value !== 'function') copy[key] = value
  return copy
}

function queueOf(map: Map<string, OutgoingQueue>, clientId: string): OutgoingQueue {
  let queue = map.get(clientId)
  if (!queue) map.set(clientId, (queue = new OutgoingQueue()))
  return queue
}

function mapOf(map: Map<string, Map<number, BrokerPacket>>, clientId: string): Map<number, BrokerPacket> {
  let inner = map.get(clientId)
  if (!inner) map.set(clientId, (inner = new Map<number, BrokerPacket>()))
  return inner
}
