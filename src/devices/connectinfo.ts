/**
 * Keeps each device's `connectinfo` property (tKeel core's `_clientid`, `_online`, …) in step with
 * its sessions. It follows the registry's session changes; a device whose connections change
 * in a burst gets one write for the burst, computed from its sessions as they are when the
 * write runs — so the stored value always ends at the truth, whatever order writes queue in.
 * `_online` is true while any session of the device is connected.
 *
 * The write is a decision: it reads the device and its sessions as stored, with the property,
 * under the device's lock — so where replicas share the store, the last write of a device reads
 * after every session change of it that asked for one. Where this process holds the fleet
 * (SQLite) it also keeps each device's sessions, which is what the decision reads there.
 */
import type { Logger } from 'pino'
import { nanos, type ConnectInfo } from '../domain/device-properties.js'
import type { Protocol, SessionRecord } from '../domain/session.js'
import type { DeviceDirectory } from '../registry/device-directory.js'
import { fewDelete, fewPut, fewValues, type Few } from '../registry/few.js'
import type { StoredView } from '../store/decision.js'
import { UNCHANGED, type DeviceProperties } from './device-properties.js'

/** The part of a session connectinfo shows. */
type ShownConnection = Pick<SessionRecord, 'clientId' | 'peerHost' | 'protocol' | 'sockPort' | 'username' | 'connectedAt' | 'disconnectedAt'>

const idOf = (s: SessionRecord): string => s.id

/** How long a failed connectinfo write waits before it is tried again. */
const RETRY_MS = 1000

export class ConnectInfoTracker {
  /** deviceId → its sessions (almost always one: a Few, registry/few.ts), as the registry holds them. */
  private readonly sessions = new Map<string, Few<string, SessionRecord>>()
  /** What each device's last connection change was about (shown while none is connected). */
  private readonly lastChanged = new Map<string, ShownConnection>()
  private readonly pending = new Set<string>()
  private stopped = false
  private readonly retries = new Set<NodeJS.Timeout>()

  constructor(
    private readonly properties: DeviceProperties,
    private readonly devices: DeviceDirectory,
    private readonly log: Logger,
    /** Whether this process holds the fleet and so keeps each device's sessions (false: the store is shared). */
    private readonly holdsFleet = true
  ) {}

  /** The sessions of a device as this process keeps them (where it holds the fleet), as a decision reads them. */
  sessionsOf(deviceId: string): readonly SessionRecord[] {
    return [...fewValues(this.sessions.get(deviceId))]
  }

  load(sessions: Iterable<SessionRecord>): void {
    for (const s of sessions) this.track(s.deviceId, s.id, s)
  }

  /**
   * Every replica's session changes, as the caches take them from the change log: which sessions
   * each device has, so a write made here counts the connections other replicas hold too.
   */
  sessionCached(before: SessionRecord | undefined, after: SessionRecord | null): void {
    if (before && before.deviceId !== after?.deviceId) this.track(before.deviceId, before.id, null)
    if (after) this.track(after.deviceId, after.id, after)
  }

  /** The registry's observer of this replica's own changes: called once one is applied; it writes. */
  sessionChanged(before: SessionRecord | undefined, after: SessionRecord | null): void {
    // a clientId taken over by another device (auth none) or ended: the old device loses it
    if (before && before.deviceId !== after?.deviceId && this.mayBeRegistered(before.deviceId)) {
      this.track(before.deviceId, before.id, null)
      if (before.connected) this.changed(before.deviceId, { ...before, connected: false, disconnectedAt: Date.now() })
    }
    if (!after || !this.mayBeRegistered(after.deviceId)) return // ended, a superuser, or no registered device
    this.track(after.deviceId, after.id, after)
    const connectionChanged = before?.deviceId !== after.deviceId || before.connected !== after.connected || before.incarnation !== after.incarnation
    if (connectionChanged) this.changed(after.deviceId, after) // not a subscribe, unsubscribe or version bump
  }

  /**
   * At start, after the previous run's connections were ended: a device whose stored
   * connectinfo still says online (the hub crashed before writing its last change) is
   * brought in line with its sessions.
   */
  reconcile(stored: Iterable<[deviceId: string, connectinfo: unknown]>): number {
    let fixed = 0
    for (const [deviceId, info] of stored) {
      if ((info as Partial<ConnectInfo>)._online !== true || !this.devices.get(deviceId) || this.pending.has(deviceId)) continue
      if ([...fewValues(this.sessions.get(deviceId))].some((s) => s.connected)) continue
      const last = info as ConnectInfo
      this.lastChanged.set(deviceId, {
        clientId: last._clientid,
        peerHost: last._peerhost || null,
        protocol: last._protocol as Protocol,
        sockPort: last._socketport ? Number(last._socketport) : null,
        username: last._username || null,
        connectedAt: 0,
        disconnectedAt: Date.now()
      })
      this.schedule(deviceId)
      fixed++
    }
    return fixed
  }

  /**
   * Whether `deviceId` may name a registered device: where this process holds the fleet its
   * directory knows; where not, a device it has not cached may still be, and the write's
   * decision (which reads the device) tells.
   */
  private mayBeRegistered(deviceId: string): boolean {
    return this.devices.get(deviceId) !== undefined || (!this.holdsFleet && deviceId !== '')
  }

  private changed(deviceId: string, session: SessionRecord): void {
    this.lastChanged.set(deviceId, session)
    this.schedule(deviceId)
  }

  private track(deviceId: string, sessionId: string, session: SessionRecord | null): void {
    if (!this.holdsFleet) return
    const ofDevice = session ? fewPut(this.sessions.get(deviceId), session, idOf) : fewDelete(this.sessions.get(deviceId), sessionId, idOf)
    if (ofDevice === undefined) this.sessions.delete(deviceId)
    else this.sessions.set(deviceId, ofDevice)
  }

  private schedule(deviceId: string): void {
    if (this.pending.has(deviceId)) return // the queued write will see this change too
    this.pending.add(deviceId)
    this.properties
      .update(
        deviceId,
        'connectinfo',
        (_current, view) => {
          this.pending.delete(deviceId)
          return this.compute(deviceId, view)
        },
        { reads: { devices: [deviceId], deviceSessions: [deviceId] } }
      )
      .then(() => {
        // written: what the last change was about is stored now, and needs no keeping (unless a
        // later change is queued, whose write reads it)
        if (!this.pending.has(deviceId)) this.lastChanged.delete(deviceId)
      })
      .catch((error: Error) => {
        this.pending.delete(deviceId)
        this.log.error({ deviceId, err: error.message }, `connectinfo not stored; trying again in ${RETRY_MS} ms`)
        if (this.stopped) return
        const retry = setTimeout(() => {
          this.retries.delete(retry)
          this.schedule(deviceId)
        }, RETRY_MS)
        retry.unref()
        this.retries.add(retry)
      })
  }

  /** No more retries: the hub is stopping. */
  stop(): void {
    this.stopped = true
    for (const retry of this.retries) clearTimeout(retry)
    this.retries.clear()
  }

  /** The device's connectinfo from its sessions as stored; UNCHANGED for an id that names no registered device. */
  private compute(deviceId: string, view: StoredView): ConnectInfo | typeof UNCHANGED {
    const device = view.device(deviceId)
    if (!device) return UNCHANGED
    let newest: SessionRecord | undefined
    for (const s of view.sessionsOfDevice(deviceId)) {
      if (s.connected && (!newest || s.connectedAt > newest.connectedAt)) newest = s
    }
    const online = newest !== undefined
    const shown: ShownConnection = newest ?? this.lastChanged.get(deviceId)!
    return {
      _clientid: shown.clientId,
      _online: online,
      _owner: device.owner,
      _peerhost: shown.peerHost ?? '',
      _protocol: shown.protocol,
      _socketport: shown.sockPort === null ? '' : String(shown.sockPort),
      _username: shown.username ?? '',
      _timestamp: nanos(online ? shown.connectedAt : (shown.disconnectedAt ?? Date.now()))
    }
  }
}
