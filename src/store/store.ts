/**
 * The Store: where everything the hub must not lose goes. It knows records and bytes, not MQTT.
 *
 * Writes are *mutations*, committed in groups: `commit()` resolves only when the batch holding
 * its mutations is durable, and a batch is all-or-nothing. A process that holds the fleet reads
 * it once, at start (`load()`), and keeps it current from the change log; one that does not
 * (EMQX mode on PostgreSQL) reads what it needs when it needs it (`fleet`, `read*`).
 * Every backend must pass test/store/contract.ts unchanged.
 */
import type { Device } from '../domain/device.js'
import type { Measured } from '../domain/device-properties.js'
import type { TokenHasher } from '../domain/secret.js'
import type { LogEntry } from './change-log.js'
import type { Coordination } from './coordination.js'
import type { Decision } from './decision.js'
import type { FleetReads } from './fleet-reads.js'
import type { CommitOptions } from './group-commit.js'
import type { LogApplier } from './log-follower.js'
import type { VALUE_JSON } from './property-json.js'
import type { SessionRecord, TopicSubscription } from '../domain/session.js'
import type { SessionEndReason } from '../domain/transitions.js'
import type { SubscriptionEntity } from '../domain/subscription.js'

/*
 * Fields marked "for the event stream" are written to the change log with the mutation and read
 * only by src/events, so that each logged change says what an event of it needs without a
 * second read. The stores ignore them, and entries logged before they existed lack them.
 */
export type Mutation =
  | { op: 'device.put'; device: Device }
  /** Deletes a device and every property of it. For the event stream: the device deleted. */
  | { op: 'device.delete'; id: string; device?: Device }
  /**
   * For the event stream: `topics`, the session's topics after the change (as the broker routes
   * them); `tookOver`, the incarnation of the live connection this connect replaced.
   */
  | { op: 'session.put'; session: SessionRecord; topics?: TopicSubscription[]; tookOver?: string }
  /**
   * Only the version of a stored session changed (a subscribe or unsubscribe). For the event
   * stream: the session and its topics after the change, and the topics it added or removed.
   * `carriesTopics`: the topic rows this change wrote are not logged on their own (`carried`):
   * whoever follows the log takes them from `subscribed` / `unsubscribed`.
   */
  | {
      op: 'session.version'
      id: string
      version: number
      session?: SessionRecord
      topics?: TopicSubscription[]
      subscribed?: TopicSubscription[]
      unsubscribed?: string[]
      carriesTopics?: true
    }
  /**
   * `incarnation`: the ended session's, remembered so late events of it (or older) are refused.
   * For the event stream: the session as it ended, and why. `carriesTopics`: the session's topic
   * rows went with it, and that clear is not logged on its own (`carried`).
   */
  | { op: 'session.delete'; id: string; incarnation?: string; ended?: SessionRecord; reason?: SessionEndReason; carriesTopics?: true }
  /**
   * A session's topic rows. `persistent`: the broker queues QoS>0 messages for this subscription
   * while offline. `carried`: the session's own entry in the same batch says this change already
   * (its `carriesTopics`), so the row is written but the change is not logged again on its own
   * (change-log.ts, isLogged).
   */
  | { op: 'topic.put'; sessionId: string; subscription: TopicSubscription; persistent: boolean; carried?: true }
  | { op: 'topic.delete'; sessionId: string; topic: string; carried?: true }
  | { op: 'topic.clear'; sessionId: string; carried?: true }
  | { op: 'subscription.put'; subscription: SubscriptionEntity }
  /** For the event stream: the entity deleted. */
  | { op: 'subscription.delete'; id: string; subscription?: SubscriptionEntity }
  /** Deletes every subscription entity of a session. */
  | { op: 'subscription.clear'; sessionId: string }
  /** Replaces one property of a device (`attributes`, `connectinfo`, …) as a whole. */
  | { op: 'device.property'; deviceId: string; name: string; value: unknown; updatedAt: number; [VALUE_JSON]?: Measured<unknown> }
  | { op: 'retained.put'; topic: string; packet: Uint8Array }
  | { op: 'retained.delete'; topic: string }
  /** Inserts or replaces the message at `seq` of a client's outgoing queue. */
  | { op: 'outgoing.put'; clientId: string; seq: number; packet: Uint8Array }
  | { op: 'outgoing.delete'; clientId: string; seq: number }
  | { op: 'outgoing.clear'; clientId: string }
  | { op: 'incoming.put'; clientId: string; messageId: number; packet: Uint8Array }
  | { op: 'incoming.delete'; clientId: string; messageId: number }
  | { op: 'incoming.clear'; clientId: string }
  | { op: 'will.put'; clientId: string; packet: Uint8Array }
  | { op: 'will.delete'; clientId: string }
  /** A publish acknowledged to its sender but not yet fully routed (see publish-journal.ts). */
  | { op: 'journal.put'; seq: number; packet: Uint8Array }
  /** Removes the entry `seq`, or every entry from `seq` through `through`. */
  | { op: 'journal.delete'; seq: number; through?: number }
  /**
   * A push stored with its change and not yet routed by the broker:
   * keyed by the run of the replica that publishes it (`Store.replica`) and its number in that
   * run, so replicas sharing the store never collide (devices/push-journal.ts).
   */
  | { op: 'push.put'; push: StoredPush }
  /** Removes the push `seq` of `run`, or every one from `seq` through `through`. */
  | { op: 'push.delete'; run: string; seq: number; through?: number }

/** A push waiting to be published (the `push.put` mutation). */
export interface StoredPush {
  run: string
  seq: number
  topic: string
  payload: Uint8Array
  qos: 0 | 1 | 2
  /** Epoch ms when it was recorded. */
  at: number
}

export interface StoredTopic {
  sessionId: string
  subscription: TopicSubscription
  persistent: boolean
}

export interface StoredDeviceProperty {
  deviceId: string
  name: string
  value: unknown
  /** Epoch milliseconds. */
  updatedAt: number
}

/**
 * What the store holds, as the hub loads it at start. The fleet (devices, properties,
 * subscription entities, sessions, topics) may be read only as it is iterated — SQLite streams
 * its rows, so that a million sessions are never held twice, as rows and as the caches' objects
 * — so a reader iterates each of these once, into its cache, before anything is committed.
 */
export interface Snapshot {
  devices: Iterable<Device>
  deviceProperties: Iterable<StoredDeviceProperty>
  subscriptions: Iterable<SubscriptionEntity>
  sessions: Iterable<SessionRecord>
  topics: Iterable<StoredTopic>
  retained: { topic: string; packet: Uint8Array }[]
  /** Ordered by clientId, then seq. */
  outgoing: { clientId: string; seq: number; packet: Uint8Array }[]
  incoming: { clientId: string; messageId: number; packet: Uint8Array }[]
  wills: { clientId: string; packet: Uint8Array }[]
  /** Ordered by seq. */
  journal: { seq: number; packet: Uint8Array }[]
  /** The change log's last entry when this snapshot was read: following it from here misses nothing. */
  logPosition: number
  /** The greatest incarnation of a stored session, read even when the sessions are not. */
  newestIncarnation?: string
}

export interface LoadOptions {
  /**
   * Whether to read the fleet — devices, their properties, sessions, topics, subscription
   * entities — or leave those lists empty (a replica that reads them when needed). Default true.
   */
  fleet?: boolean
}

/** How far this process has followed the change log. */
export interface LogFollowing {
  /** The last entry applied to the caches. */
  applied: number
  /** How long the oldest known entry not yet applied has waited, in seconds (0 when current). */
  lagSeconds: number
  /** Why the log could not be read lately, if it could not. */
  lastError: string | null
}

/** One of a store's own threads: `name` labels its cpu (`store_writer`, …). */
export interface StoreThread {
  name: string
  threadId: number
}

export interface StoreHealth {
  ok: boolean
  /** The last failure, cleared by the next batch that commits or the next probe that answers. */
  lastError: string | null
  /**
   * Failures (commits, probes) since the store opened: a count that only grows, so a watcher
   * that looks now and then still sees a failure an answer has cleared between two looks.
   */
  failures: number
}

export interface Store {
  readonly kind: string
  /** This process among the store's writers (coordination.ts, `replicaRunId`). */
  readonly replica: string
  /**
   * Resolves when the mutations are durable (with `answer`, if given); rejects (and stores none of
   * them) on failure. `background`: nobody waits on them (the reconcile's fixes), so live commits
   * go first.
   */
  commit<R = void>(mutations: readonly Mutation[], options?: CommitOptions<R>): Promise<R>
  /**
   * When live commits or decisions have waited `behindMs` or more: resolves once those asked of
   * this store before the call are answered (later ones do not hold it up); otherwise at once.
   * Background work awaits it between its chunks, so that it stops while live callers wait
   * (group-commit.ts).
   */
  liveSettled?(behindMs?: number): Promise<void>
  /**
   * Present when several processes may write this store (PostgreSQL): makes the decision against
   * the rows as stored, locked, in the transaction that stores its result (see decision.ts).
   * Absent, the one process that writes decides from its caches.
   */
  decide?<R>(decision: Decision<R>): Promise<R>
  load(options?: LoadOptions): Promise<Snapshot>
  /**
   * Hands `applier` every change-log entry after `position`, once each and in log order, those
   * of this process's commits before the commit resolves, those of others' as they are read.
   */
  follow(position: number, applier: LogApplier): void
  following(): LogFollowing
  /**
   * Present where other processes write this store too (PostgreSQL): resolves true once this
   * process has applied every change committed before the call, by any of them (up to the log
   * head read now), false when that takes longer than `timeoutMs`. Absent, every change is this
   * process's own, applied before its commit resolves.
   */
  caughtUp?(timeoutMs: number): Promise<boolean>
  /** Entries of the change log after `after`, in order, at most `limit`. */
  readLog(after: number, limit: number): Promise<LogEntry[]>
  /** The runs that have pushes recorded (`push.put`) and not yet deleted, the one with the oldest first. */
  pushRuns(): Promise<string[]>
  /** Pushes of `run` recorded and not yet deleted, numbered after `afterSeq`, in their order, at most `limit`. */
  readPushes(run: string, afterSeq: number, limit: number): Promise<StoredPush[]>
  /** How many pushes are recorded and not yet deleted, of every run. */
  countPushes(): Promise<number>
  /**
   * Of the pushes on `topic` of runs other than `than.run` recorded before `than` (an earlier
   * `at`, or the same `at` and a smaller run: one order every replica agrees on) and not yet
   * deleted — pushes `than` must not overtake (devices/push-journal.ts) —, when the earliest was
   * recorded (its `at`); undefined when there is none.
   */
  earliestPushElsewhere(topic: string, than: Pick<StoredPush, 'run' | 'at'>): Promise<number | undefined>
  /**
   * What is read of the whole fleet, as queries (PostgreSQL: no replica in EMQX mode holds the
   * fleet in memory). Absent, this process's caches hold the fleet and answer (MemoryFleetReads).
   */
  readonly fleet?: FleetReads
  /** The replicas that share this store, their leases, and the pruning of the change log. */
  readonly coordination: Coordination
  /**
   * Hashes and checks device tokens under the key this store keeps (made at its first start, or
   * at the upgrade that hashed the tokens it held in plain text): every replica of the store
   * hashes alike, and a token never needs to be stored.
   */
  readonly tokens: TokenHasher
  /** The device as stored now, for a cache that misses it (another replica may have just made it). */
  readDevice(id: string): Promise<Device | undefined>
  /** The session as stored now, for a cache that misses it (likewise). */
  readSession(id: string): Promise<SessionRecord | undefined>
  /** Every property of a device as stored now, for a cache that does not hold the device. */
  readProperties(deviceId: string): Promise<StoredDeviceProperty[]>
  /** Every property of each of `deviceIds` as stored now, in one read (a page of a device listing). */
  readPropertiesOf(deviceIds: readonly string[]): Promise<StoredDeviceProperty[]>
  /**
   * Asks the backend whether it answers now (and could take a write), within the store's
   * deadline; rejects with a StoreError if not. An answer clears the failure health() reports,
   * so readiness comes back with the store, not with the next write.
   */
  probe(): Promise<void>
  /**
   * What the operator should know of how the backend is set up, one sentence each (logged as
   * warnings at start): settings under which the store works, but worse as time goes on.
   */
  serverWarnings?(): Promise<string[]>
  health(): StoreHealth
  /**
   * The threads of its own the store runs work on, by the operating system's thread id, as they
   * have said it (SQLite's writer and checkpointer): the hub reports their cpu
   * (`iothub_thread_cpu_seconds_total`). A store whose work runs elsewhere has none.
   */
  threads?(): readonly StoreThread[]
  /** Waits for pending batches, then releases the backend. */
  close(): Promise<void>
}

export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'StoreError'
  }
}

/**
 * The store did not answer within its deadline (IOTHUB_STORE_TIMEOUT). What the caller asked
 * was not applied, and will not be applied later (see group-commit.ts for the one exception:
 * a commit whose answer, not its request, was lost).
 */
export class StoreTimeoutError extends StoreError {
  constructor(
    readonly timeoutMs: number,
    message = `store did not answer within ${timeoutMs} ms`
  ) {
    super(message)
    this.name = 'StoreTimeoutError'
  }
}

/**
 * The store may or may not have committed: its answer to COMMIT was lost (the connection broke
 * while it was on its way). Nothing of it is applied in memory; a restart or the change log
 * brings back whatever was stored. Never retried: a decision made again on rows that already
 * hold its own result would answer wrongly (a device "already existing", an event "stale").
 */
export class StoreCommitUnknownError extends StoreError {
  constructor(cause: unknown) {
    super(`store commit outcome unknown: ${(cause as Error).message}`, { cause })
    this.name = 'StoreCommitUnknownError'
  }
}

/** Rejects with a StoreTimeoutError unless `work` settles within `timeoutMs`; `onTimeout` cleans up. */
export function withinDeadline<T>(work: Promise<T>, timeoutMs: number, onTimeout: () => void = () => undefined): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout()
      reject(new StoreTimeoutError(timeoutMs))
    }, timeoutMs)
    work.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: Error) => {
        clearTimeout(timer)
        reject(error)
      }
    )
  })
}
