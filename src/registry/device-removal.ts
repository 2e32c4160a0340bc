/**
 * Deleting a device (`DELETE /v1/devices/{id}`): its sessions ended (reason `device_deleted`),
 * their subscription entities and topics deleted, the device and its properties deleted — one
 * decision, so one stored change and one batch of the change log, which every replica's caches
 * and the event stream follow. From its commit on, the device's token is refused: no device, no
 * hash to match (where the store is shared every login reads the stored device). Then the
 * connections still open are closed by the carrier; their own ends are stale by then.
 *
 * Which sessions to end is read first, then checked under the device's lock in the decision
 * (its sessions as stored): a session made in between — a connect admitted just before the
 * deletion — sends the decision round again with it. A connect admitted before the commit but
 * stored after it is closed by the pass that follows the commit.
 */
import type { Device } from '../domain/device.js'
import type { SessionRecord } from '../domain/session.js'
import type { Decision } from '../store/decision.js'
import type { FleetReads } from '../store/fleet-reads.js'
import type { DeletionsInFlight } from './deletions-in-flight.js'
import { UnknownDeviceError, type DeviceDirectory } from './device-directory.js'
import type { SessionRegistry } from './registry.js'

export interface DeviceRemoved {
  id: string
  sessionsEnded: number
  subscriptionsDeleted: number
}

/** Disconnects a client, as the carrier does (false when it holds no such connection). */
export type Kick = (clientId: string) => Promise<boolean>

/** The device's sessions changed between the listing and the decision: list again. */
class SessionsMoved extends Error {}

/** Rounds of listing and deciding before the deletion gives up (each needs a new session in between). */
const ROUNDS = 5
/** Sessions of one device listed per page. */
const PAGE = 1000

export class DeviceRemoval {
  constructor(
    private readonly devices: DeviceDirectory,
    private readonly registry: SessionRegistry,
    private readonly fleet: FleetReads,
    private readonly kick: Kick,
    /** Where the deletion is told while it is decided and stored: the device's property changes wait for it. */
    private readonly deletions: Pick<DeletionsInFlight, 'around'>
  ) {}

  /** Deletes the device and what is its; throws UnknownDeviceError when there is none. */
  async remove(id: string): Promise<DeviceRemoved> {
    for (let round = 1; ; round++) {
      const listed = await this.sessionsOf(id)
      const known = new Set(listed.map((s) => s.id))
      try {
        const deletion: Decision<Device> = {
          reads: { devices: [id], deviceSessions: [id] },
          decide: (view) => {
            const device = view.device(id)
            if (!device) throw new UnknownDeviceError(id)
            if (view.sessionsOfDevice(id).some((s) => !known.has(s.id))) throw new SessionsMoved()
            return { mutations: [{ op: 'device.delete', id, device }], result: device }
          }
        }
        const { ended } = await this.deletions.around(id, () => this.registry.endSessionsWith([...known], 'device_deleted', deletion))
        await this.closeConnections(id, ended.filter((e) => e.session.connected).map((e) => e.session.id))
        return { id, sessionsEnded: ended.length, subscriptionsDeleted: ended.reduce((n, e) => n + e.entities, 0) }
      } catch (error) {
        if (!(error instanceof SessionsMoved) || round === ROUNDS) throw error
      }
    }
  }

  /**
   * Closes the connections of the ended sessions, then whatever session of the device is found
   * still (a connect admitted before the deletion, stored after it): kicked, or discarded offline.
   */
  private async closeConnections(id: string, connected: readonly string[]): Promise<void> {
    await Promise.all(connected.map((clientId) => this.kick(clientId)))
    for (const late of await this.sessionsOf(id)) {
      if (!(await this.kick(late.id))) await this.registry.discard(late.id)
    }
  }

  private async sessionsOf(deviceId: string): Promise<SessionRecord[]> {
    const sessions: SessionRecord[] = []
    for (let after: string | undefined; ; ) {
      const page = await this.fleet.sessions({ deviceId }, { after, limit: PAGE })
      sessions.push(...page.sessions)
      if (!page.more) return sessions
      after = page.sessions.at(-1)!.id
    }
  }
}
