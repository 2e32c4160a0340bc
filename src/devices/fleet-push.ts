/**
 * A fleet push: one downstream change (DownstreamChanges) made to every device of a selection —
 * a list of ids, or the devices of an owner and/or group — in one call, answered with what it
 * came to.
 *
 * Memory does not grow with the selection. A filter is walked page by page (`FleetReads.devices`,
 * keyset pages of FLEET_PAGE ids: PostgreSQL's indexed query, or the caches where they hold the
 * fleet), never listed whole; a list is at most what one request may carry. At most `inFlight`
 * device changes run at once, each its own commit: group commit (store/group-commit.ts) puts
 * them into shared transactions, so a large selection streams through a few hundred changes in
 * flight rather than a transaction per device or one transaction for all. What is kept per device
 * is a count — only the first MAX_LISTED unknown ids and errors are listed.
 *
 * Devices are taken in the selection's order (a list's, or id order for a filter) and what was
 * taken is always finished, so when a push stops early — the store failed, the caller went
 * away, the hub is stopping — exactly the first `attempted` devices of the selection were
 * attempted: the answer's `resumeAfter` (a filter walk) or `attempted` (a list) says where to
 * carry on. Nothing is silently lost: a device attempted is counted as changed, already sent,
 * unknown or failed (and listed, up to the cap, with why).
 */
import { PayloadError } from '../domain/device-properties.js'
import { UnknownDeviceError } from '../registry/device-directory.js'
import { StoreError } from '../store/store.js'
import { PushBacklogFull } from './dispatcher.js'
import type { DeviceFilter, FleetReads } from '../store/fleet-reads.js'

/**
 * Device changes in flight at once: enough to fill group commit's batches (256 writes each, a
 * few batches pipelined), few enough that a million-device push holds a bounded amount.
 */
export const FLEET_PUSH_IN_FLIGHT = 256

/** Ids read per page of a filter walk. */
export const FLEET_PAGE = 1000

/** Unknown ids and errors listed in the answer, at most (each is counted in full). */
export const MAX_LISTED = 1000

export type FleetSelection =
  | { ids: readonly string[] }
  /** Devices matching `filter`, in id order, after `after` (exclusive) when given. */
  | { filter: Pick<DeviceFilter, 'owner' | 'group'>; after?: string }

/** What one device's change came to. */
export type DeviceOutcome =
  | { changed: true; sessions: number; pushError?: string }
  /** A command of that id was already sent to the device: nothing stored or pushed. */
  | { changed: false }

/** Why a push stopped before the end of its selection. */
export interface FleetPushStop {
  /** `store`: it failed or did not answer; `aborted`: the caller went away or the hub is stopping; `error`: anything else. */
  reason: 'store' | 'aborted' | 'error'
  message: string
}

export interface FleetPushReport {
  /** Devices attempted, in the selection's order: the first `attempted` of a list, or a filter walk's devices up to `resumeAfter`. */
  attempted: number
  /** Attempted devices that are registered (or, for a store failure, not known not to be). */
  matched: number
  /** Devices whose property was stored. */
  changed: number
  /** Devices that already had the command (its id was sent to them before): nothing stored or pushed. */
  alreadySent: number
  /** Changed devices pushed to at least one session. */
  pushed: number
  /** Sessions pushed to, over all devices. */
  sessions: number
  /** Changed devices whose push failed (stored, not pushed; listed in `errors`). */
  pushFailed: number
  /** Devices whose change was refused (nothing stored for them; listed in `errors`). */
  failed: number
  /** Ids not registered (a list), or devices deleted while the push ran (a filter): the first MAX_LISTED. */
  unknown: string[]
  unknownCount: number
  /** The first MAX_LISTED failures, refused or not pushed. */
  errors: { id: string; message: string }[]
  /** The whole selection was attempted. */
  complete: boolean
  stop?: FleetPushStop
  /** A filter walk that stopped: the last device attempted; the walk carries on after it. */
  resumeAfter?: string
  tookMs: number
}

export interface FleetPushOptions {
  /** Aborted: take no more devices (those in flight finish). */
  signal?: AbortSignal
  inFlight?: number
  pageSize?: number
}

/**
 * The selection's device ids, in order, handed out one at a time to concurrent takers: a list as
 * it is, a filter a page at a time (one read in flight, which every taker waiting for it shares).
 */
class SelectionCursor {
  private page: readonly string[]
  private index = 0
  private more: boolean
  private after: string | undefined
  private loading: Promise<void> | undefined

  constructor(
    private readonly selection: FleetSelection,
    private readonly fleet: Pick<FleetReads, 'devices'>,
    private readonly pageSize: number
  ) {
    const listed = 'ids' in selection
    this.page = listed ? selection.ids : []
    this.more = !listed
    this.after = listed ? undefined : selection.after
  }

  /** The next id, or undefined at the end. Throws what reading a page threw. */
  async next(): Promise<string | undefined> {
    while (this.index >= this.page.length) {
      if (!this.more) return undefined
      this.loading ??= this.load().finally(() => (this.loading = undefined))
      await this.loading
    }
    return this.page[this.index++]
  }

  private async load(): Promise<void> {
    if (!('filter' in this.selection)) return
    const found = await this.fleet.devices(this.selection.filter, { after: this.after, limit: this.pageSize })
    this.page = found.devices.map((d) => d.id)
    this.index = 0
    this.more = found.more && found.devices.length > 0
    if (found.devices.length > 0) this.after = found.devices[found.devices.length - 1]!.id
  }
}

/** Makes `change` of every device of `selection`, at most `inFlight` at once; see the file's comment. */
export async function pushToFleet(
  selection: FleetSelection,
  fleet: Pick<FleetReads, 'devices'>,
  change: (id: string) => Promise<DeviceOutcome>,
  options: FleetPushOptions = {}
): Promise<FleetPushReport> {
  const started = performance.now()
  const report: FleetPushReport = {
    attempted: 0,
    matched: 0,
    changed: 0,
    alreadySent: 0,
    pushed: 0,
    sessions: 0,
    pushFailed: 0,
    failed: 0,
    unknown: [],
    unknownCount: 0,
    errors: [],
    complete: false,
    tookMs: 0
  }
  const { signal } = options
  const listError = (id: string, message: string) => {
    if (report.errors.length < MAX_LISTED) report.errors.push({ id, message })
  }
  const stopWith = (stop: FleetPushStop) => {
    report.stop ??= stop
  }
  const source = new SelectionCursor(selection, fleet, options.pageSize ?? FLEET_PAGE)
  let lastAttempted: string | undefined

  /**
   * The next device to change, or undefined once the selection is done or the push stops. Ids
   * are handed out in order and `stop` never clears, so the devices attempted are a prefix of
   * the selection.
   */
  const take = async (): Promise<string | undefined> => {
    if (report.stop) return undefined
    let id: string | undefined
    try {
      id = await source.next()
    } catch (error) {
      stopWith({ reason: error instanceof StoreError ? 'store' : 'error', message: `reading the selection: ${(error as Error).message}` })
      return undefined
    }
    if (signal?.aborted) stopWith({ reason: 'aborted', message: String(signal.reason ?? 'aborted') })
    if (id === undefined || report.stop) return undefined
    report.attempted++
    lastAttempted = id
    return id
  }

  const changeOne = async (id: string): Promise<void> => {
    try {
      const outcome = await change(id)
      report.matched++
      if (!outcome.changed) {
        report.alreadySent++
        return
      }
      report.changed++
      if (outcome.pushError !== undefined) {
        report.pushFailed++
        listError(id, outcome.pushError)
      } else if (outcome.sessions > 0) {
        report.pushed++
        report.sessions += outcome.sessions
      }
    } catch (error) {
      if (error instanceof UnknownDeviceError) {
        report.unknownCount++
        if (report.unknown.length < MAX_LISTED) report.unknown.push(id)
        return
      }
      report.matched++
      report.failed++
      listError(id, (error as Error).message)
      // a change this device cannot take is its own; anything else would refuse the next ones too
      if (!(error instanceof PayloadError || error instanceof PushBacklogFull)) stopWith({ reason: error instanceof StoreError ? 'store' : 'error', message: (error as Error).message })
    }
  }

  const worker = async (): Promise<void> => {
    for (let id = await take(); id !== undefined; id = await take()) await changeOne(id)
  }
  await Promise.all(Array.from({ length: options.inFlight ?? FLEET_PUSH_IN_FLIGHT }, worker))

  report.complete = report.stop === undefined
  if (!report.complete && 'filter' in selection) report.resumeAfter = lastAttempted ?? selection.after
  report.tookMs = Math.round(performance.now() - started)
  return report
}
