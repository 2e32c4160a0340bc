/**
 * The change log read as events: pages of entries from the store (a consumer catching up) or
 * entries the follower hands over (live), each made into its event and its JSON once.
 */
import { LRUCache } from 'lru-cache'
import type { LogEntry, LogReader } from '../store/change-log.js'
import type { HubEvent } from './event.js'
import { eventJson, eventOf, ownerNeeded } from './from-log.js'

export interface PreparedEvent {
  event: HubEvent
  /** The event as JSON, made once whoever it goes to (a stream, a webhook, an MQTT topic). */
  json: string
}

/** Owners remembered: a device's never changes, so a hit is always right. */
const OWNERS_KEPT = 10_000

export class EventLog {
  private readonly owners = new LRUCache<string, string>({ max: OWNERS_KEPT })

  constructor(
    private readonly reader: LogReader,
    /** This hub's node, for entries that name no replica (a store with one writer). */
    private readonly node: string,
    /** A device's owner, from the caches or the store; undefined when there is no such device. */
    private readonly findOwner: (deviceId: string) => Promise<string | undefined>
  ) {}

  /** Entries after `after`, at most `limit`, in order (fewer when the log ends; a gap when pruned). */
  readEntries(after: number, limit: number): Promise<LogEntry[]> {
    return this.reader.readLog(after, limit)
  }

  /** The events of `entries`, in order (entries that make none are skipped). */
  async prepare(entries: readonly LogEntry[]): Promise<PreparedEvent[]> {
    await this.lookUpOwners(entries)
    const source = { node: this.node, owner: (deviceId: string) => this.owners.get(deviceId) ?? '' }
    const prepared: PreparedEvent[] = []
    for (const entry of entries) {
      const event = eventOf(entry, source)
      if (event === null) continue
      prepared.push({ event, json: eventJson(event, entry.change) })
    }
    return prepared
  }

  private async lookUpOwners(entries: readonly LogEntry[]): Promise<void> {
    const missing = new Set<string>()
    // a device's own entries carry its owner: a deleted device's is found nowhere else after
    for (const { change } of entries) {
      if (change.op === 'device.put') this.owners.set(change.device.id, change.device.owner)
      else if (change.op === 'device.delete' && change.device) this.owners.set(change.id, change.device.owner)
    }
    for (const entry of entries) {
      const deviceId = ownerNeeded(entry.change)
      if (deviceId && !this.owners.has(deviceId)) missing.add(deviceId)
    }
    await Promise.all(
      [...missing].map(async (deviceId) => {
        const owner = await this.findOwner(deviceId)
        // no such device (a superuser's session): not remembered, a device of that id may come
        if (owner !== undefined) this.owners.set(deviceId, owner)
      })
    )
  }
}
