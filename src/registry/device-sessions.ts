/**
 * How many sessions each device holds, connected or kept offline — kept up to date from the
 * registry's changes, so the per-device limit is checked in O(1) on every connect instead of by
 * walking every session (a device opening 20,000 persistent sessions is what it guards against).
 */
import type { SessionRecord } from '../domain/session.js'
import type { SessionObserver } from './registry.js'

export class DeviceSessionCounts {
  private readonly counts = new Map<string, number>()

  /** Counts the sessions the registry already holds (its observers are not told of `load`). */
  load(sessions: Iterable<SessionRecord>): void {
    this.counts.clear()
    for (const s of sessions) this.add(s.deviceId, 1)
  }

  readonly observer: SessionObserver = (before, after) => {
    if (before?.deviceId === after?.deviceId) return
    if (before) this.add(before.deviceId, -1)
    if (after) this.add(after.deviceId, 1)
  }

  of(deviceId: string): number {
    return this.counts.get(deviceId) ?? 0
  }

  private add(deviceId: string, n: number): void {
    const next = (this.counts.get(deviceId) ?? 0) + n
    if (next > 0) this.counts.set(deviceId, next)
    else this.counts.delete(deviceId)
  }
}
