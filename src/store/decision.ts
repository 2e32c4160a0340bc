/**
 * A decision: a change worked out from what is *stored*, not from what one replica remembers.
 *
 * With several hub replicas on one PostgreSQL, each replica's memory lags the others' writes; a
 * change decided from memory could undo theirs (a late disconnect ending the session another
 * replica had just handed to a new connection, a property merge losing a key). So the PostgreSQL
 * store runs `decide` inside the transaction that writes its result, after locking what it reads
 * (by key, in one sorted order, so batches never deadlock), and feeds it the rows as stored — as
 * EMQX locks a client id cluster-wide while it opens a session. If the transaction must run
 * again (a serialization failure), `decide` runs again, on what is stored then: so it must be
 * pure. A store that is its data's only writer (SQLite, embedded) decides from its caches, which
 * are then the stored state (see registry/deciding.ts).
 *
 * A decision that throws refuses its own caller only, stores nothing, and leaves the other
 * callers of its batch alone.
 */
import type { Device } from '../domain/device.js'
import type { SessionRecord, TopicSubscription } from '../domain/session.js'
import type { SubscriptionEntity } from '../domain/subscription.js'
import type { Mutation } from './store.js'

/** What a decision reads, and so locks. */
export interface DecisionReads {
  /** Client ids whose session (record, topics, subscription entities, last ended incarnation) it reads. */
  sessions?: readonly string[]
  /** Device ids whose registration it reads. */
  devices?: readonly string[]
  /** Device properties it reads, as [deviceId, property name]. */
  properties?: readonly (readonly [deviceId: string, name: string])[]
  /** Device ids whose sessions (all of them, without topics) it reads; locks the device, not the sessions. */
  deviceSessions?: readonly string[]
}

export interface StoredTopicEntry {
  subscription: TopicSubscription
  persistent: boolean
}

/** A client's session as stored. */
export interface StoredSession {
  session: SessionRecord | undefined
  /** By topic (as the broker routes it). */
  topics: ReadonlyMap<string, StoredTopicEntry>
  /** By broker topic. */
  entities: ReadonlyMap<string, SubscriptionEntity>
  /** When there is no session: the incarnation of the last one that ended for this client id, if known. */
  lastIncarnation: string | undefined
  /** When it ended (epoch ms), if known. */
  lastEndedAt?: number
}

export interface StoredProperty {
  value: unknown
  /** Epoch milliseconds. */
  updatedAt: number
}

/** What a decision may look at: only what its `reads` named. */
export interface StoredView {
  session(clientId: string): StoredSession
  device(id: string): Device | undefined
  property(deviceId: string, name: string): StoredProperty | undefined
  sessionsOfDevice(deviceId: string): readonly SessionRecord[]
}

export interface Decided<R> {
  mutations: Mutation[]
  result: R
}

export interface Decision<R> {
  reads: DecisionReads
  decide(view: StoredView): Decided<R>
  /** Work nobody waits on (the reconcile's fixes): batched after live callers (group-commit.ts). */
  background?: boolean
}

/** Where decisions are made and stored: the store itself (PostgreSQL), or a replica that is the only writer. */
export interface Decider {
  /** Refuses (a decision that throws, a store that fails) by rejecting, never by throwing: callers chain on its promise. */
  decide<R>(decision: Decision<R>): Promise<R>
  /** True when decisions are made against this process's caches (it is the store's only writer). */
  readonly fromCaches: boolean
}

export const NO_TOPICS: ReadonlyMap<string, StoredTopicEntry> = new Map()
export const NO_ENTITIES: ReadonlyMap<string, SubscriptionEntity> = new Map()
