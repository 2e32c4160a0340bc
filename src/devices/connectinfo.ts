/**
 * Keeps each device's `connectinfo` property (the seed's `_clientid`, `_online`, …) in step with
 * its sessions. It follows the registry's session changes; a device whose connections change
 * in a burst gets one write for the burst, computed from its sessions as they are when the
 * write runs — so the stored value always ends at the truth, whatever order writes queue in.
 * `_online` is true while any session of the device is connected.
 */
import type { Logger } from 'pino'
import { nanos, type ConnectInfo } from '../domain/device-properties.js'
import type { SessionRecord } from '../domain/session.js'
import type { DeviceDirectory } from '../registry/device-directory.js'
import type { DeviceProperties } from './device-properties.js'

export class ConnectInfoTracker {
  /** deviceId → its sessions, as the registry holds them. */
  private readonly sessions = new Map<string, Map<string, SessionRecord>>()
  /** The session each device's last connection change was about. */
  private readonly lastChanged = new Map<string, SessionRecord>()
  private readonly pending = new Set<string>()

  constructor(
    private readonly properties: DeviceProperties,
    private readonly devices: DeviceDirectory,
    private readonly log: Logger
  ) {}

  load(sessions: Iterable<SessionRecord>): void {
    for (const s of sessions) this.track(s.deviceId, s.id, s)
  }

  /** The registry's observer: called once a session change is applied. */
  sessionChanged(before: SessionRecord | undefined, after: SessionRecord | null): void {
    const session = after ?? before
    if (!session || !this.devices.get(session.deviceId)) return // a superuser, or no registered device
    this.track(session.deviceId, session.id, after)
    const connectionChanged = !before || !after || before.connected !== after.connected || before.incarnation !== after.incarnation
    if (!connectionChanged) return // a subscribe or unsubscribe
    this.lastChanged.set(session.deviceId, after ?? { ...session, connected: false, disconnectedAt: Date.now() })
    this.schedule(session.deviceId)
  }

  private track(deviceId: string, sessionId: string, session: SessionRecord | null): void {
    let ofDevice = this.sessions.get(deviceId)
    if (session) {
      if (!ofDevice) this.sessions.set(deviceId, (ofDevice = new Map<string, SessionRecord>()))
      ofDevice.set(sessionId, session)
    } else if (ofDevice) {
      ofDevice.delete(sessionId)
      if (ofDevice.size === 0) this.sessions.delete(deviceId)
    }
  }

  private schedule(deviceId: string): void {
    if (this.pending.has(deviceId)) return // the queued write will see this change too
    this.pending.add(deviceId)
    this.properties
      .update(deviceId, 'connectinfo', () => {
        this.pending.delete(deviceId)
        return this.compute(deviceId)
      })
      .catch((error: Error) => this.log.error({ deviceId, err: error.message }, 'connectinfo not stored'))
  }

  private compute(deviceId: string): ConnectInfo {
    let shown: SessionRecord | undefined
    for (const s of this.sessions.get(deviceId)?.values() ?? []) {
      if (s.connected && (!shown || s.connectedAt > shown.connectedAt)) shown = s
    }
    const online = shown !== undefined
    shown ??= this.lastChanged.get(deviceId)!
    return {
      _clientid: shown.clientId,
      _online: online,
      _owner: this.devices.get(deviceId)?.owner ?? '',
      _peerhost: shown.peerHost ?? '',
      _protocol: shown.protocol,
      _socketport: shown.sockPort === null ? '' : String(shown.sockPort),
      _username: shown.username ?? '',
      _timestamp: nanos(online ? shown.connectedAt : (shown.disconnectedAt ?? Date.now()))
    }
  }
}
