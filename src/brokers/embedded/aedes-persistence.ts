/**
 * The embedded broker's persistence, on our store: Aedes keeps its subscriptions, QoS 1/2
 * messages queued for offline clients, QoS 2 dedup state, retained messages and wills here.
 * It passes aedes-persistence's own abstract test suite (test/brokers/aedes-persistence.test.ts).
 *
 * Subscriptions are not kept here but in the TopicBook, which is also where session entities
 * keep their topics — one record. Who *writes* them is a SubscriptionWriter: on its own (as in
 * the abstract suite) this persistence writes the TopicBook itself; inside the hub the registry
 * does, so that subscription changes are incarnation-checked like every lifecycle event. Everything else is mirrored in memory (as Aedes' own memory
 * persistence does) and written through the store; every method resolves only once its
 * writes are durable, so a SUBACK or PUBACK never promises what a crash would take back.
 */
import { Readable } from 'node:stream'
import { QlobberTrue } from 'qlobber'
import type { TopicSubscription } from '../../domain/session.js'
import type { SessionStateOwner } from '../../registry/registry.js'
import type { TopicBook } from '../../registry/topic-book.js'
import type { Plan } from '../../store/plan.js'
import type { Snapshot, Store } from '../../store/store.js'
import { clonePacket, decodePacket, encodePacket } from './packet-codec.js'

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

/** The writer a persistence has on its own: straight into the TopicBook, through the store. */
export function topicBookWriter(store: Store, topics: TopicBook): SubscriptionWriter {
  const run = async (plan: Plan) => {
    await store.commit(plan.mutations)
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

interface Queued {
  seq: number
  packet: BrokerPacket
}

export class StoreAedesPersistence implements SessionStateOwner {
  private broker: BrokerRef | undefined
  private readonly retained = new Map<string, BrokerPacket>()
  private readonly outgoing = new Map<string, Queued[]>()
  private readonly incoming = new Map<string, Map<number, BrokerPacket>>()
  private readonly wills = new Map<string, BrokerPacket>()
  private nextSeq = 1
  private destroyed = false

  private readonly writer: SubscriptionWriter
  /** Called by destroy(); the hub closes its store itself, so it passes nothing. */
  private readonly onDestroy: () => Promise<void>

  constructor(
    private readonly store: Store,
    private readonly topics: TopicBook,
    options: { writer?: SubscriptionWriter; onDestroy?: () => Promise<void> } = {}
  ) {
    this.writer = options.writer ?? topicBookWriter(store, topics)
    this.onDestroy = options.onDestroy ?? (async () => undefined)
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
    for (const r of snapshot.retained) this.retained.set(r.topic, decodePacket(r.packet))
    for (const o of snapshot.outgoing) {
      queueOf(this.outgoing, o.clientId).push({ seq: o.seq, packet: clonePacket(decodePacket<BrokerPacket>(o.packet)) })
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

  async storeRetained(packet: BrokerPacket): Promise<void> {
    const topic = packet.topic!
    const copy = { ...packet }
    const empty = copy.payload === undefined || copy.payload.length === 0
    await this.run({
      mutations: [empty ? { op: 'retained.delete', topic } : { op: 'retained.put', topic, packet: encodePacket(copy) }],
      apply: () => (empty ? this.retained.delete(topic) : this.retained.set(topic, copy))
    })
  }

  createRetainedStream(pattern: string): Readable {
    return this.createRetainedStreamCombi([pattern])
  }

  createRetainedStreamCombi(patterns: string[]): Readable {
    const matcher = new QlobberTrue({ wildcard_one: '+', wildcard_some: '#', separator: '/' })
    for (const p of patterns) matcher.add(p)
    const matching = [...this.retained.entries()].filter(([topic]) => matcher.test(topic)).map(([, packet]) => packet)
    return Readable.from(matching)
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

  async outgoingEnqueueCombi(subs: { clientId: string }[], packet: BrokerPacket): Promise<void> {
    const added = subs.map((sub) => ({ clientId: sub.clientId, queued: { seq: this.nextSeq++, packet: clonePacket(packet) } }))
    await this.run({
      mutations: added.map(({ clientId, queued }) => ({ op: 'outgoing.put', clientId, seq: queued.seq, packet: encodePacket(queued.packet) })),
      apply: () => {
        for (const { clientId, queued } of added) queueOf(this.outgoing, clientId).push(queued)
      }
    })
  }

  async outgoingUpdate(client: ClientRef, packet: BrokerPacket): Promise<void> {
    const queue = this.outgoing.get(client.id) ?? []
    for (const queued of queue) {
      // The same message: match on broker id and counter, then adopt the messageId. A different
      // message that reuses the messageId (ids wrap at 65535): the newer packet replaces it.
      const same = queued.packet.brokerId === packet.brokerId && queued.packet.brokerCounter === packet.brokerCounter
      const reused = queued.packet.brokerId !== packet.brokerId && queued.packet.messageId === packet.messageId
      if (!same && !reused) continue
      const next = { ...withoutFunctions(same ? queued.packet : packet), messageId: packet.messageId }
      await this.run({
        mutations: [{ op: 'outgoing.put', clientId: client.id, seq: queued.seq, packet: encodePacket(next) }],
        apply: () => {
          queued.packet = next
        }
      })
      return
    }
    throw new Error('no such packet')
  }

  async outgoingClearMessageId(client: ClientRef, packet: { messageId?: number }): Promise<BrokerPacket | undefined> {
    const queue = this.outgoing.get(client.id)
    const queued = queue?.find((q) => q.packet.messageId === packet.messageId)
    if (!queue || !queued) return undefined
    await this.run({
      mutations: [{ op: 'outgoing.delete', clientId: client.id, seq: queued.seq }],
      apply: () => {
        const at = queue.indexOf(queued)
        if (at >= 0) queue.splice(at, 1)
        if (queue.length === 0 && this.outgoing.get(client.id) === queue) this.outgoing.delete(client.id)
      }
    })
    return queued.packet
  }

  outgoingStream(client: ClientRef): Readable {
    // a copy: the client acknowledges (and so removes) messages while the stream is read
    return Readable.from((this.outgoing.get(client.id) ?? []).map((q) => q.packet))
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
      apply: () => this.wills.set(client.id, packet)
    })
  }

  async getWill(client: ClientRef): Promise<BrokerPacket | undefined> {
    return this.wills.get(client.id)
  }

  async delWill(client: ClientRef): Promise<BrokerPacket | undefined> {
    const will = this.wills.get(client.id)
    if (!will) return undefined
    await this.run({ mutations: [{ op: 'will.delete', clientId: client.id }], apply: () => this.wills.delete(client.id) })
    return will
  }

  /** Wills of clients whose broker is not among `brokers` (a broker that died, or a previous run). */
  streamWill(brokers: Record<string, unknown> = {}): Readable {
    return Readable.from([...this.wills.values()].filter((w) => !brokers[w.brokerId ?? '']))
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

function queueOf(map: Map<string, Queued[]>, clientId: string): Queued[] {
  let queue = map.get(clientId)
  if (!queue) map.set(clientId, (queue = []))
  return queue
}

function mapOf(map: Map<string, Map<number, BrokerPacket>>, clientId: string): Map<number, BrokerPacket> {
  let inner = map.get(clientId)
  if (!inner) map.set(clientId, (inner = new Map<number, BrokerPacket>()))
  return inner
}
