/**
 * A request the store could not serve (failed, or did not answer within its deadline) answers
 * 503 with `Retry-After`: nothing of it was applied, and asking again later is the remedy — a
 * 500 would say the hub is broken, which it is not.
 */
import { StoreError } from '../store/store.js'

/** Whether `error` (or what it wraps) is the store's. */
export function isStoreFailure(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) if (e instanceof StoreError) return true
  return false
}

/** `Retry-After`'s value for a wait of `waitMs`: whole seconds, at least one (for the store, about one of its deadlines). */
export function retryAfterSeconds(waitMs: number): string {
  return String(Math.max(1, Math.ceil(waitMs / 1000)))
}
