/**
 * Whether a login may open (or resume) the session of a client id: the client-id rule
 * (client-id.ts) and the per-device session limit, the same for every transport. Each
 * transport maps a refusal to its own answer (CONNACK, CoAP 4.xx, an ExHook verdict).
 *
 * Connects of one device for different client ids run concurrently, so an admitted connect
 * holds a reservation until its session is recorded (or refused): otherwise a device firing
 * thousands of connects at once would all pass the count before any of them is stored.
 */
import type { RejectReason } from '../observability/metrics.js'
import type { DeviceSessionCounts } from '../registry/device-sessions.js'
import { claimClientId } from './client-id.js'

export interface SessionHolders {
  /** The device whose session holds `clientId` now ('' for a superuser's), if any. */
  holderOf(clientId: string): string | undefined
  isDevice(id: string): boolean
}

/**
 * What a login's admission reads, read from the store rather than from caches: where no replica
 * holds the fleet (PostgreSQL), the session of a client id, the devices and a device's session
 * count are not all in memory.
 */
export interface StoredSessionFacts {
  /** The device whose stored session holds the client id ('' for a superuser's), if any. */
  holder: string | undefined
  /** Whether the client id is itself a registered device's id. */
  clientIdIsDevice: boolean
  /** Sessions the device holds, connected or offline. */
  sessionsOfDevice: number
}

export type SessionAdmissionVerdict =
  | { ok: true; reclaim: boolean; release: () => void }
  | { ok: false; reason: RejectReason; message: string }

const NOTHING_TO_RELEASE = () => undefined

export class SessionAdmission {
  private readonly reserved = new Map<string, number>()

  constructor(
    private readonly holders: SessionHolders,
    private readonly counts: DeviceSessionCounts,
    private readonly limits: { maxSessionsPerDevice: number }
  ) {}

  /**
   * `deviceId` undefined: a superuser, who has no device and no session limit. An admitted
   * connect must call `release()` once its session is recorded or refused.
   */
  admit(clientId: string, deviceId: string | undefined, stored?: StoredSessionFacts): SessionAdmissionVerdict {
    const holder = stored ? stored.holder : this.holders.holderOf(clientId)
    const isDevice = stored ? (id: string) => id === clientId && stored.clientIdIsDevice : (id: string) => this.holders.isDevice(id)
    const claim = claimClientId({ clientId, deviceId, holderDeviceId: holder, isDevice })
    if (claim.kind === 'refused') return { ok: false, reason: claim.reason, message: claim.message }
    const reclaim = claim.kind === 'reclaim'
    if (deviceId === undefined) return { ok: true, reclaim, release: NOTHING_TO_RELEASE }
    // resuming or taking over its own session opens none
    if (holder === deviceId) return { ok: true, reclaim, release: NOTHING_TO_RELEASE }
    const held = (stored ? stored.sessionsOfDevice : this.counts.of(deviceId)) + (this.reserved.get(deviceId) ?? 0)
    if (held >= this.limits.maxSessionsPerDevice) {
      return { ok: false, reason: 'too_many_sessions', message: `device holds ${held} sessions, the most allowed is ${this.limits.maxSessionsPerDevice}` }
    }
    this.reserved.set(deviceId, (this.reserved.get(deviceId) ?? 0) + 1)
    let released = false
    return {
      ok: true,
      reclaim,
      release: () => {
        if (released) return
        released = true
        const left = (this.reserved.get(deviceId) ?? 1) - 1
        if (left > 0) this.reserved.set(deviceId, left)
        else this.reserved.delete(deviceId)
      }
    }
  }
}
