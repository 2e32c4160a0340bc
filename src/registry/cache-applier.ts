/**
 * Hands each change of the log to the cache that holds its kind: the one way a replica's caches
 * change (see store/log-follower.ts). Entries come in log order, so every cache goes through the
 * same states as the store, whichever replica committed them.
 */
import type { LogEntry, LoggedChange } from '../store/change-log.js'
import type { LogOrigin } from '../store/log-follower.js'
import type { SessionRegistry } from './registry.js'

export interface Caches {
  registry: SessionRegistry
  devices: { applyChange(m: Extract<LoggedChange, { op: 'device.put' | 'device.delete' }>): void }
  /** Device properties (devices/device-properties.ts, a layer above this one); a deleted device's go with it. */
  properties: { applyChange(m: Extract<LoggedChange, { op: 'device.property' | 'device.delete' }>): void }
}

export function cacheApplier(caches: Caches): (entries: readonly LogEntry[], origin: LogOrigin) => void {
  return (entries, origin) => {
    for (const { change, at } of entries) applyChange(caches, change, origin, at)
  }
}

function applyChange(caches: Caches, m: LoggedChange, origin: LogOrigin, at: number): void {
  switch (m.op) {
    case 'device.put':
      return caches.devices.applyChange(m)
    case 'device.delete':
      caches.devices.applyChange(m)
      return caches.properties.applyChange(m)
    case 'device.property':
      return caches.properties.applyChange(m)
    case 'session.put':
      return caches.registry.applyChange(m, origin, at)
    case 'session.version':
    case 'session.delete':
      caches.registry.applyChange(m, origin, at)
      // and the topic rows its batch wrote without logging them again (store.ts, `carried`)
      if (caches.registry.caching.holdsFleet) caches.registry.topics.applySessionChange(m)
      return
    // sessions' topics and subscription entities are held only with the whole fleet; where the
    // caches are bounded, FleetReads answers for them from the store (older logs hold a topic
    // change as an entry of its own)
    case 'topic.put':
    case 'topic.delete':
    case 'topic.clear':
      if (caches.registry.caching.holdsFleet) caches.registry.topics.applyChange(m)
      return
    case 'subscription.put':
    case 'subscription.delete':
    case 'subscription.clear':
      if (caches.registry.caching.holdsFleet) caches.registry.subscriptions.applyChange(m)
      return
  }
}
