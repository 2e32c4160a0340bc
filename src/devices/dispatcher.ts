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
 * those recorded after another run's to the device that is still there (push-journal.ts) — but
 * for one that may still be on its way (sent through another replica a moment before): that one
 * is waited for, a while, and this one goes right after it (`afterOtherRuns`).
 */
import { setTimeout as sleep } from 'node:timers/promises'
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

/**
 * While another run's earlier push to the device is on its way (afterOtherRuns), it is asked
 * about again after this long, then twice as long each time, up to the last: a store read each.
 */
const FIRST_ASK_AGAIN_MS = 10
const LAST_ASK_AGAIN_MS = 200
/**
 * Beyond its publish's time (`IOTHUB_PUSH_TIMEOUT`), how long after it was recorded another run's
 * push may still be on its way: its commit before the publish, its record's removal after it.
 */
const ON_ITS_WAY_MS = 1_000
/**
 * After a wait for another run's push ended with it still there, how long pushes behind other
 * runs' are held at once rather than waiting; the kept pushes' tries (kept-pushes.ts, every
 * IOTHUB_PUSH_RETRY_INTERVAL) publish them once the earlier ones have left. Fixed, not that
 * setting: it says how long a refusing replica is likely to go on refusing, not how often to try.
 */
const NOT_LEAVING_MS = 10_000

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
  /** How long a push may take to publish (`IOTHUB_PUSH_TIMEOUT`), and to wait for another run's earlier one on its way. */
  private readonly withinMs: number
  private readonly backlog: number
  /**
   * Until when (performance.now()) other runs' pushes are taken not to be leaving: a wait for one
   * ended with it still there. Meanwhile a push behind another run's is held at once, without
   * waiting (NOT_LEAVING_MS).
   */
  private othersNotLeavingUntil = 0

  constructor(
    /** Whom a push reaches: the device's subscription entities, as stored. */
    private readonly fleet: Pick<FleetReads, 'receiving'>,
    private readonly broker: BrokerPublisher,
    private readonly metrics: HubMetrics,
    private readonly journal: PushJournal,
    options: DispatcherOptions = {}
  ) {
    // every push is published so bounded: live (here), kept (kept-pushes.ts) or left by another run (push-replay.ts)
    this.withinMs = options.withinMs ?? PUSH_WITHIN_MS
    this.publishing = { withinMs: this.withinMs }
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
    const publishing = this.journal.mustWait(message.topic) ? null : this.journal.othersMayWait ? await this.afterOtherRuns(prepared) : this.publishing
    if (publishing === null) {
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
      await this.broker.publish(message, publishing)
    } catch (error) {
      this.kept(prepared, 'failed')
      throw error
    }
    this.journal.routed(seq)
    this.metrics.pushesTotal.inc({ property, outcome: 'published' })
    // almost always one session holds the subscription: its id needs no set or sort
    return receivers.length === 1 ? [receivers[0]!.sessionId] : [...new Set(receivers.map((e) => e.sessionId))].sort()
  }

  /**
   * How the push is published once no earlier push of another run to the device waits
   * (push-journal.ts); null when one does, and this push is held. Most often such a push is on its
   * way — sent through another replica a moment before, not yet routed — and gone within
   * milliseconds: so while the earliest of them may still be on its way (recorded less than a
   * publish's time ago, and some time to commit and remove it: ON_ITS_WAY_MS), it is asked about
   * again, for at most half of `withinMs`, and the publish after the wait gets the rest: waiting
   * does not make a push hold its device's turn longer (but for one store read past the half), and
   * leaves its publish at least half its time (a broker slow to take the earlier push is as slow for this one). One recorded before
   * that was refused there and is kept: this push is held at once (a fleet command behind another
   * replica's refused one does not wait device by device). So is one behind another run's push
   * while a wait of this process has lately ended with the awaited push still there (EMQX
   * refusing that replica's pushes, or all of them: NOT_LEAVING_MS). A store that cannot tell
   * fails the push, kept for a retry.
   */
  private async afterOtherRuns(prepared: PreparedPush): Promise<PublishOptions | null> {
    const { topic } = prepared.message
    // this replica's own limits on a clock that never steps back; the other push's record time is by its replica's wall clock
    const startedAt = performance.now()
    const waitUntil = startedAt + this.withinMs / 2
    let waited = false
    try {
      for (let pauseMs = FIRST_ASK_AGAIN_MS; ; pauseMs = Math.min(pauseMs * 2, LAST_ASK_AGAIN_MS)) {
        const earliest = await this.journal.earliestAheadElsewhere(topic, prepared.at)
        // the rest of its time, and at least half: the last question may have ended after `waitUntil`
        if (earliest === undefined) return waited ? { withinMs: Math.max(this.withinMs / 2, this.withinMs - (performance.now() - startedAt)) } : this.publishing
        // a clock of that replica behind this one's shortens the wait; one ahead cannot lengthen it past `waitUntil`
        const now = performance.now()
        if (now < this.othersNotLeavingUntil) return null
        const left = Math.min(waitUntil - now, earliest + this.withinMs + ON_ITS_WAY_MS - Date.now())
        if (left <= 0) {
          // waited for it, and it did not leave: the next ones to wait would likely wait in vain too
          if (waited) this.othersNotLeavingUntil = performance.now() + NOT_LEAVING_MS
          return null
        }
        await sleep(Math.min(pauseMs, left))
        waited = true
      }
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
