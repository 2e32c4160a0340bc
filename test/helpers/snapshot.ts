/**
 * A store's snapshot with the fleet read into arrays: `load()` may stream the fleet's rows as
 * they are iterated (see Snapshot in src/store/store.ts), and tests look at them more than once.
 */
import type { Snapshot, Store } from '../../src/store/store.js'

export type LoadedSnapshot = Snapshot & {
  [K in 'devices' | 'deviceProperties' | 'subscriptions' | 'sessions' | 'topics']: Snapshot[K] extends Iterable<infer T> ? T[] : never
}

export async function loadAll(store: Pick<Store, 'load'>): Promise<LoadedSnapshot> {
  const s = await store.load()
  return {
    ...s,
    devices: [...s.devices],
    deviceProperties: [...s.deviceProperties],
    subscriptions: [...s.subscriptions],
    sessions: [...s.sessions],
    topics: [...s.topics]
  }
}
