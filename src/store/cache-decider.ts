/**
 * The Decider of a store that this process alone writes (SQLite, embedded mode): its caches are
 * the stored state — every committed change reaches them, through the change log, before the
 * commit resolves — so decisions are made against them and their mutations committed. A
 * client's changes are made one at a time by the registry, so none is decided before the
 * previous one of the same client is in the caches.
 */
import type { Decider, Decision, StoredView } from './decision.js'
import type { Store } from './store.js'

export function cacheDecider(store: Store, caches: StoredView): Decider {
  return {
    fromCaches: true,
    // not an async function: every event in flight waits here until its batch commits, and a
    // suspended async frame (its registers, context and promise) is live memory each scavenge copies
    decide<R>(decision: Decision<R>): Promise<R> {
      try {
        const { mutations, result } = decision.decide(caches)
        // answered by the commit itself: no continuation of its own per change in flight
        return store.commit(mutations, { background: decision.background, answer: result })
      } catch (error) {
        return Promise.reject(error instanceof Error ? error : new Error(String(error)))
      }
    }
  }
}

/** Decides in the store's transactions where the store can (several replicas), else from the caches. */
export function deciderFor(store: Store, caches: StoredView): Decider {
  if (!store.decide) return cacheDecider(store, caches)
  return { fromCaches: false, decide: (decision) => store.decide!(decision) }
}
