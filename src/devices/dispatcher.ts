/**
 * Downstream: a property change of a device goes to every session holding a subscription
 * entity for that property — and only there. The change is published once, QoS 1, on the
 * device's change topic under its mountpoint; the broker delivers it to the device's sessions
 * subscribed to it (queued for persistent ones offline), without the prefix.
 *
 * A push is stored before it is published: recorded in the transaction of the change it pushes
 * (push-journal.ts), its record removed once the broker has routed it. A crash in between, or a
 * broker that refused it, leaves the record: this run tries a refused push again while it lasts
 * (kept-pushes.ts), and another run publishes what a run left (left-pushes.ts): at least once, as
 * the stored change promises. While a command (raw push) of a device is kept, that device's later
 * commands (raw pushes) are kept behind it, not published: a device gets them in the order this
 * run was asked to send them. Where other runs' pushes may wait in the journal (EMQX mode), so are
 * those recorded after another run's to the device that is still there (push-journal.ts).
 */
import { PUSH_WITHIN_MS } from '../config.js'
import { CHANGE_TOPICS, type ChangeProperty } from '../domain/change-topics.js'
import { deviceMountpoint } from '../domain/namespace.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { FleetReads } from '../store/fleet-reads.js'
import type { Mutation } from '../store/store.js'
import type { PushJournal } from './push-journal.js'

/** What the broker publishes for the hub. */
export interface BrokerMessage {
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  retain: boolean
}

/** The broker's side of a push: the embedded Aedes broker, or EMQX's REST publish. */
export interface BrokerPublisher {
  publish(message: BrokerMessage, options?: PublishOptions): Promise<void>
}

export interface PublishOptions {
  /**
   * How long the publish may take, its tries included (ms); what is left of it when another try
   * would begin ends it. A broker whose publish is local ignores it.
   */
  withinMs?: number
}

/** A push made ready before its change is stored: what to store with the change, and what to publish after. */
export interface PreparedPush {
  readonly deviceId: string
  readonly property: ChangeProperty
  readonly message: BrokerMessage
  /** The journal's record, and when it was made: `storeWith` goes in the change's transaction. */
  readonly seq: number
  readonly at: number
  readonly storeWith: readonly Mutation[]
}

/** How a push is published, and how many of a device's may wait. */
export interface DispatcherOptions {
  /** How long a publish may take, its tries included (ms; `IOTHUB_PUSH_TIMEOUT`). */
  withinMs?: number
  /** Most commands (raw pushes) of one device kept waiting for the broker at once (`IOTHUB_PUSH_BACKLOG`). */
  backlog?: number
}

/** What `backlog` is unless configured: as many as EMQX queues for one session by default (`max_mqueue_len`). */
export const PUSH_BACKLOG = 1000

/**
 * A command (raw push) refused before anything of it is stored: the device has `backlog` of them
 * waiting for the broker already. Each waiting one is held in memory and in the journal until the
 * broker takes it; asking again once it takes them is the remedy (503, Retry-After).
 */
export class PushBacklogFull extends Error {
  constructor(
    readonly property: ChangeProperty,
    backlog: number
  ) {
    super(`${backlog} ${property === 'raw' ? 'raw pushes' : 'commands'} to this device wait for the broker already; no more is taken until it takes them`)
    this.name = 'PushBacklogFull'
  }
}

/** A push kept, not published, behind an earlier one to its device that the broker refused (push-journal.ts, `mustWait`). */
export class PushHeldBack extends Error {
  constructor(property: ChangeProperty) {
    super(`an earlier ${property === 'raw' ? 'raw push' : 'command'} to this device waits for the broker to take it; this one is sent after it`)
    this.name = 'PushHeldBack'
  }
}

export class Dispatcher {
  private readonly publishing: PublishOptions
  private readonly backlog: number

  constructor(
    /** Whom a push reaches: the device's subscription entities, as stored. */
    private readonly fleet: Pick<FleetReads, 'receiving'>,
    private readonly broker: BrokerPublisher,
    private readonly metrics: HubMetrics,
    private readonly journal: PushJournal,
    options: DispatcherOptions = {}
  ) {
    // every push is published so bounded: live (here), kept (kept-pushes.ts) or left by another run (push-replay.ts)
    this.publishing = { withinMs: options.withinMs ?? PUSH_WITHIN_MS }
    this.backlog = options.backlog ?? PUSH_BACKLOG
  }

  /**
   * Throws PushBacklogFull when `deviceId` has as many commands (raw pushes, `property`) waiting
   * for the broker as it may: asked in the device's turn, in the decision of its change, before
   * anything is stored. A decision may run again (a store retrying its transaction): the refusal
   * is counted once its change is over (`countRefusal`).
   */
  refuseOverBacklog(deviceId: string, property: ChangeProperty): void {
    if (this.journal.waitingOn(deviceMountpoint(deviceId) + CHANGE_TOPICS[property]) >= this.backlog) throw new PushBacklogFull(property, this.backlog)
  }

  /** Counts a change refused by `refuseOverBacklog`. */
  countRefusal(refusal: PushBacklogFull): void {
    this.metrics.pushesTotal.inc({ property: refusal.property, outcome: 'refused' })
  }

  /** The push of `payload` to the sessions receiving `property` of `deviceId`, and its journal record. */
  prepare(deviceId: string, property: ChangeProperty, payload: Buffer): PreparedPush {
    const message: BrokerMessage = { topic: deviceMountpoint(deviceId) + CHANGE_TOPICS[property], payload, qos: 1, retain: false }
    const record = this.journal.record(message)
    return { deviceId, property, message, seq: record.seq, at: record.at, storeWith: [record.mutation] }
  }

  /**
   * Publishes a prepared push, its change stored; resolves with the ids of the sessions it
   * reached once routed. A push the broker could not route keeps its journal record, to be tried
   * again (kept-pushes.ts) or published by another run (left-pushes.ts).
   */
  async push(prepared: PreparedPush): Promise<string[]> {
    const { deviceId, property, message, seq } = prepared
    if (this.journal.mustWait(message.topic) || (this.journal.othersMayWait && (await this.behindOtherRun(prepared)))) {
      // an earlier command (raw bytes) to the device waits for the broker: this one goes after it
      this.kept(prepared, 'held')
      throw new PushHeldBack(property)
    }
    let receivers: Awaited<ReturnType<FleetReads['receiving']>>
    try {
      // where the store is shared this is a read of it, which can fail like the publish
      receivers = await this.fleet.receiving(deviceId, property)
      if (receivers.length === 0) {
        this.journal.routed(seq)
        this.metrics.pushesTotal.inc({ property, outcome: 'no_subscriber' })
        return []
      }
      await this.broker.publish(message, this.publishing)
    } catch (error) {
      this.kept(prepared, 'failed')
      throw error
    }
    this.journal.routed(seq)
    this.metrics.pushesTotal.inc({ property, outcome: 'published' })
    // almost always one session holds the subscription: its id needs no set or sort
    return receivers.length === 1 ? [receivers[0]!.sessionId] : [...new Set(receivers.map((e) => e.sessionId))].sort()
  }

  /** Whether another run's earlier push to the device waits (push-journal.ts); a store that cannot tell fails the push, kept for a retry. */
  private async behindOtherRun(prepared: PreparedPush): Promise<boolean> {
    try {
      return await this.journal.waitsBehindOtherRun(prepared.message.topic, prepared.at)
    } catch (error) {
      this.kept(prepared, 'failed')
      throw error
    }
  }

  /** A push not published now: its record stays, for a retry (kept-pushes.ts) or another run. */
  private kept(prepared: PreparedPush, outcome: 'held' | 'failed'): void {
    this.journal.keep(prepared.seq, prepared.message.topic)
    this.metrics.pushesTotal.inc({ property: prepared.property, outcome })
  }
}
