/**
 * Publishing pushes from the journal (push-journal.ts) that their run did not get the broker to
 * take: other runs' — a crash, or a stop while the broker refused them, left them — and this
 * run's own that the broker refused (kept-pushes.ts). Each run's go in the order it recorded
 * them, a page at a time; what is published (or dropped) is removed a page at a time.
 *
 * A push the broker refuses (not for good) holds back the later pushes of its device, which must
 * not overtake it, and no other device's: one push the broker keeps refusing does not keep every
 * other device untold. REFUSALS_IN_A_ROW refusals with nothing taken between them end the pass:
 * the broker is refusing every push, and trying the rest would only wait on it. A command (raw
 * bytes) that waits behind an earlier one another run has not got the broker to take
 * (`waitsBehind`) holds back its device's later pushes in its run, counting as no refusal.
 *
 * The devices the broker refused in the pass before (`deferred`) are tried after the others, in
 * each run: a few pushes the broker keeps refusing, first in their run, would otherwise end every
 * pass before any other device is told. Once the broker has taken a push in the pass, their
 * refusals end their own try (REFUSALS_IN_A_ROW again: every deferred device then waits for the
 * next pass, in every run), not the pass; before that they count towards ending it, so a pass
 * makes a few tries at most while the broker refuses everything. Left: six or more such pushes,
 * first in their run, take turns ending the passes (three at a time), as three did before.
 *
 * A command (raw bytes) older than IOTHUB_COMMAND_EXPIRY when its turn comes is removed without a
 * publish (`expiry`): a request that old is not what its sender asked for any more.
 */
import type { Logger } from 'pino'
import { changePropertyOfTopic, type ChangeProperty } from '../domain/change-topics.js'
import type { HubMetrics } from '../observability/metrics.js'
import { firstLevelOf } from '../domain/topic-match.js'
import type { Store, StoredPush } from '../store/store.js'
import type { BrokerMessage } from './dispatcher.js'
import type { LatePushes } from './late-pushes.js'

/** Pushes read, published and removed at once. */
const PAGE = 100

/** Refusals with no push taken between them after which a pass stops: the broker refuses them all. */
export const REFUSALS_IN_A_ROW = 3

/** A push as it was journaled. */
export function journaledMessage(push: StoredPush): BrokerMessage {
  return { topic: push.topic, payload: Buffer.from(push.payload), qos: push.qos, retain: false }
}

/** The device and property a push's topic names: `{deviceId}/` and a change topic (dispatcher.ts); device ids hold no `/`. */
export function pushTarget(topic: string): { deviceId: string; property: ChangeProperty } | undefined {
  const slash = topic.indexOf('/')
  const property = slash < 1 ? undefined : changePropertyOfTopic(topic.slice(slash + 1))
  return property === undefined ? undefined : { deviceId: topic.slice(0, slash), property }
}

/**
 * Whether pushes on `topic` must reach their device in the order they were recorded: commands
 * and raw bytes, which a device takes as messages. Not attributes: a push of them published late
 * says the values stored then (late-pushes.ts), so a later one may go first.
 */
export function takenInOrder(topic: string): boolean {
  return pushTarget(topic)?.property !== 'attributes'
}

/**
 * Whether `push` must wait behind a push on its topic that another run recorded before it and
 * has not got the broker to take (Store.earliestPushElsewhere): one taken in order (`takenInOrder`).
 */
export function waitsBehindOtherRun(store: Pick<Store, 'earliestPushElsewhere'>, push: Pick<StoredPush, 'run' | 'topic' | 'at'>): Promise<boolean> {
  return earliestAheadElsewhere(store, push).then((at) => at !== undefined)
}

/** When the earliest of the pushes `push` must wait behind (`waitsBehindOtherRun`) was recorded; undefined when there is none. */
export function earliestAheadElsewhere(store: Pick<Store, 'earliestPushElsewhere'>, push: Pick<StoredPush, 'run' | 'topic' | 'at'>): Promise<number | undefined> {
  return takenInOrder(push.topic) ? store.earliestPushElsewhere(push.topic, push) : Promise.resolve(undefined)
}

/**
 * How long after it was recorded a command (raw push: one taken in order) may still be published,
 * and what becomes of one older when its turn comes (IOTHUB_COMMAND_EXPIRY). Attributes pushes do
 * not expire: one published late says the values stored then (late-pushes.ts).
 */
export interface CommandExpiry {
  /** Ms; 0: never. */
  afterMs: number
  /**
   * Drops `pushes` of `device`, expired, unpublished; resolves true when their records were removed
   * with that, false when they are the pass's to remove; rejects, leaving them for a later pass,
   * when the store fails.
   */
  drop: (device: string, pushes: readonly StoredPush[]) => Promise<boolean>
}

/** Whether `push` is a command (raw push) recorded `afterMs` or longer ago, by this process' clock (CommandExpiry). */
export function expiredCommand(push: Pick<StoredPush, 'topic' | 'at'>, afterMs: number, now = Date.now()): boolean {
  return afterMs > 0 && now - push.at >= afterMs && takenInOrder(push.topic)
}

/**
 * Commands (raw pushes) that expire after `afterMs`: dropped unpublished with their commands'
 * entries marked `expired` (LatePushes.expire), then counted (`iothub_pushes_total{outcome=
 * "expired"}`) and logged, with `whose` pushes they were. Undefined for 0 (never).
 */
export function commandExpiry(afterMs: number, late: Pick<LatePushes, 'expire'>, metrics: Pick<HubMetrics, 'pushesTotal'>, log: Logger, whose: string): CommandExpiry | undefined {
  if (afterMs <= 0) return undefined
  return {
    afterMs,
    drop: async (device, pushes) => {
      const removed = await late.expire(device, pushes)
      for (const push of pushes) metrics.pushesTotal.inc({ property: propertyOfPush(push), outcome: 'expired' })
      log.warn({ device, pushes: pushes.length, oldestAgeMs: Date.now() - pushes[0]!.at }, `${whose} older than IOTHUB_COMMAND_EXPIRY, not taken by the broker; dropped, not published`)
      return removed
    }
  }
}

/** The property a stored push carries, as `iothub_pushes_total` labels it (`attributes` for a topic that names none). */
export function propertyOfPush(push: StoredPush): ChangeProperty {
  return pushTarget(push.topic)?.property ?? 'attributes'
}

type PushStore = Pick<Store, 'commit' | 'readPushes'>
type Publish = (message: BrokerMessage) => Promise<void>

/** How a run's pushes are published, and how the broker's refusals are taken. */
export interface PushPublishing {
  /** Whether to go on (asked before each publish): false stops the pass, what is left stays. */
  goOn?(): boolean
  /** Which of the run's pushes to publish; without it, all of them. The others stay as they are. */
  includes?(push: StoredPush): boolean
  /**
   * Whether the broker refused a push for good (the next pass would be refused too): it is
   * removed, and `dropped` told. Any other refusal leaves it, and its device's later pushes, for
   * the next pass.
   */
  refusedForGood?(error: Error): boolean
  dropped?(push: StoredPush, error: Error): void
  /**
   * Told of each push done with — published, dropped, or with nothing left to say — before its
   * record is removed (a removal the store refuses leaves the record for a later pass).
   */
  done?(push: StoredPush): void
  /**
   * Publishes a push as it should go now (late-pushes.ts), answering false when nothing was left
   * to say (its record goes all the same); without it, the push goes as it was journaled.
   */
  send?(push: StoredPush, publish: Publish): Promise<boolean>
  /** Told of each push the broker took. */
  published?(push: StoredPush): void
  /** When commands (raw pushes) are too old to publish, and what is done with them (`commandExpiry`); absent: never. */
  expiry?: CommandExpiry
  /** Devices to try after the others of each run: those the broker refused in the pass before (`PassOutcome.refusedDevices`). */
  deferred?: ReadonlySet<string>
  /**
   * Whether a push must wait behind another run's (`waitsBehindOtherRun`): asked before it is
   * published; if so, it and its device's later pushes in its run wait for the next pass, though
   * the broker refused nothing.
   */
  waitsBehind?(push: StoredPush): Promise<boolean>
}

/** Which runs' pushes are left behind, and how they are published. */
export interface LeftPushRules extends PushPublishing {
  /**
   * The latest `at` (epoch ms) up to which the pushes of `run` are left behind — Infinity for
   * all of them; undefined while the run may still publish them itself.
   */
  leftUpTo(run: string): number | undefined
}

/** What a pass came to: how many pushes the broker took, and the first refusal that left some behind. */
export interface PassOutcome {
  published: number
  refused?: Error
  /** The devices to try after the others at the next pass (its `deferred`): those the broker refused (not for good) in this one. */
  refusedDevices: ReadonlySet<string>
  /** The pass did not stop early (refusals in a row, `goOn`): every push of its runs up to their `upTo` was read. */
  complete: boolean
}

/** A pass over one run's pushes or several: what it published, the devices held back, and the refusals since the broker last took one. */
export interface Pass {
  published: number
  /** The first refusal (not for good) of the pass. */
  firstRefusal?: Error
  /** Devices whose push the broker refused in this pass, or not to be tried any more in it: their later pushes wait, in every run. */
  readonly heldBack: Set<string>
  /** Devices whose push the broker refused (not for good) in this pass: the next pass's `deferred`. */
  readonly refusedDevices: Set<string>
  readonly deferred: ReadonlySet<string>
  /** Refusals since the broker last took a push (or answered one for good). */
  inARow: number
  /** Of those, the deferred devices' once the broker has taken a push in this pass: REFUSALS_IN_A_ROW end their try. */
  deferredInARow: number
  /** The broker took a push (or refused one for good) in this pass: it answers. */
  answered: boolean
  /** The pass ended before the end of its runs. */
  stopped: boolean
}

const NO_DEVICES: ReadonlySet<string> = new Set()

const newPass = (deferred: ReadonlySet<string> = NO_DEVICES): Pass => ({ published: 0, heldBack: new Set(), refusedDevices: new Set(), deferred, inARow: 0, deferredInARow: 0, answered: false, stopped: false })

/** A sweep over a run's pushes: the devices not deferred first, then (`deferred`) the deferred ones. */
type Sweep = 'others' | 'deferred'

/**
 * Publishes the pushes other runs left — the run with the oldest first — removing them once
 * published, in one pass: a device held back in one run stays held in the next (its pushes keep
 * their order as far as the runs' order is theirs), and REFUSALS_IN_A_ROW refusals end the pass.
 */
export async function publishLeftPushes(store: PushStore & Pick<Store, 'pushRuns'>, publish: Publish, rules: LeftPushRules): Promise<PassOutcome> {
  const pass = newPass(rules.deferred)
  for (const run of await store.pushRuns()) {
    if (rules.goOn?.() === false) pass.stopped = true
    if (pass.stopped) break
    const upTo = rules.leftUpTo(run)
    if (upTo === undefined) continue
    await publishRunPushes(store, run, upTo, publish, rules, pass)
  }
  return passOutcome(pass)
}

/**
 * Publishes the pushes of `run` recorded up to `upTo` (epoch ms), in their order, but for the
 * devices the pass holds back and those whose push the broker refuses (not for good) on the way,
 * which it then holds back; the pass's deferred devices after the others. Stops after
 * REFUSALS_IN_A_ROW refusals with none taken between, or when `goOn` says no. Removes those
 * published or dropped.
 */
export async function publishRunPushes(store: PushStore, run: string, upTo: number, publish: Publish, rules: PushPublishing, pass = newPass(rules.deferred)): Promise<PassOutcome> {
  /**
   * The run's devices whose push waits behind another run's (`waitsBehind`): held in this run
   * only. In the pass's younger runs the store tells for each push (that other run's may be among
   * them, and must go then).
   */
  const waiting = new Set<string>()
  const deferredSeen = await sweepRun(store, run, upTo, publish, rules, pass, 'others', waiting)
  if (deferredSeen && !pass.stopped) await sweepRun(store, run, upTo, publish, rules, pass, 'deferred', waiting)
  return passOutcome(pass)
}

/**
 * Drops a page's expired pushes, each device's in one change, the devices side by side (a page
 * holds at most PAGE); those whose records that did not remove join `done`. A device whose drop
 * the store failed keeps its pushes for a later pass (not `done`, so still kept in memory too).
 */
async function dropExpired(expired: ReadonlyMap<string, StoredPush[]>, rules: PushPublishing, done: StoredPush[]): Promise<void> {
  const expiry = rules.expiry!
  await Promise.all(
    [...expired].map(async ([device, pushes]) => {
      let removed: boolean
      try {
        removed = await expiry.drop(device, pushes)
      } catch {
        return // the store failed: tried again at the next pass, where they are as old or older
      }
      for (const push of pushes) {
        if (!removed) done.push(push)
        rules.done?.(push)
      }
    })
  )
}

/** What `pass` came to, so far (a pass shared by several runs: over all of them). */
function passOutcome(pass: Pass): PassOutcome {
  const { published, firstRefusal: refused, refusedDevices } = pass
  const complete = !pass.stopped
  return refused ? { published, refused, refusedDevices, complete } : { published, refusedDevices, complete }
}

/**
 * One sweep over the run's pushes: those of the devices not deferred, or those of the deferred
 * ones; whether it passed over pushes of deferred devices. A refusal of a deferred device counts
 * towards ending the pass until the broker has taken a push in it (it may be refusing them all);
 * after that, REFUSALS_IN_A_ROW of them end the deferred devices' try in this pass (each of them
 * held back from then on), not the pass.
 */
async function sweepRun(store: PushStore, run: string, upTo: number, publish: Publish, rules: PushPublishing, pass: Pass, sweep: Sweep, waiting: Set<string>): Promise<boolean> {
  let deferredSeen = false
  const goOn = (): boolean => rules.goOn?.() !== false
  for (let afterSeq = 0; ; ) {
    if (!goOn()) {
      pass.stopped = true
      return deferredSeen
    }
    const page = await store.readPushes(run, afterSeq, PAGE)
    const done: StoredPush[] = []
    /** The page's expired commands (raw pushes), by device. */
    const expired = new Map<string, StoredPush[]>()
    /** The sweep is over before the run's end: the rest are too young, or the deferred devices' refusals ended it. */
    let sweepOver = false
    for (const push of page) {
      if (!goOn()) {
        pass.stopped = true
        break
      }
      // numbered in the order they were recorded: the rest are younger still
      if (push.at > upTo) {
        sweepOver = true
        break
      }
      if (rules.includes?.(push) === false) continue
      // the device, by which its pushes keep their order: the topic's first level (dispatcher.ts)
      const device = firstLevelOf(push.topic)
      if (rules.expiry && expiredCommand(push, rules.expiry.afterMs)) {
        // a request too old to act on: never published, so its device's later ones need not wait
        // for it; dropped with the page, a device's at once
        let ofDevice = expired.get(device)
        if (!ofDevice) expired.set(device, (ofDevice = []))
        ofDevice.push(push)
        continue
      }
      if (pass.heldBack.has(device) || waiting.has(device)) continue
      if (pass.deferred.has(device) !== (sweep === 'deferred')) {
        deferredSeen ||= sweep === 'others'
        continue
      }
      if (rules.waitsBehind && (await rules.waitsBehind(push))) {
        // another run's earlier push to the device is not taken yet: this one goes after it
        waiting.add(device)
        continue
      }
      try {
        let sent = true
        if (rules.send) sent = await rules.send(push, publish)
        else await publish(journaledMessage(push))
        if (sent) {
          pass.published++
          pass.inARow = 0
          pass.deferredInARow = 0
          pass.answered = true
          rules.published?.(push)
        }
      } catch (error) {
        if (!rules.refusedForGood?.(error as Error)) {
          pass.firstRefusal ??= error as Error
          pass.heldBack.add(device)
          pass.refusedDevices.add(device)
          if (sweep === 'deferred' && pass.answered) {
            if (++pass.deferredInARow < REFUSALS_IN_A_ROW) continue
            // the broker takes others' pushes: the deferred devices wait for the next pass, in order
            for (const d of pass.deferred) pass.heldBack.add(d)
            sweepOver = true
            break
          }
          if (++pass.inARow < REFUSALS_IN_A_ROW) continue
          pass.stopped = true
          break
        }
        // the broker answered, if only to refuse this one
        pass.inARow = 0
        pass.deferredInARow = 0
        pass.answered = true
        rules.dropped?.(push, error as Error)
      }
      done.push(push)
      rules.done?.(push)
    }
    if (expired.size > 0) await dropExpired(expired, rules, done)
    if (done.length > 0) await store.commit(done.map((push) => ({ op: 'push.delete', run, seq: push.seq })))
    if (pass.stopped || sweepOver || page.length < PAGE) return deferredSeen
    afterSeq = page[page.length - 1]!.seq
  }
}
