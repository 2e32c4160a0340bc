/**
 * An incarnation names one connection of a clientId. The rule the registry keeps: an event of
 * an older incarnation never touches a newer one. So incarnations must *order*: this module
 * makes ids that sort (as strings) in the order connections were accepted, across restarts of
 * the hub — the time part is the epoch milliseconds, the counter breaks ties within one ms,
 * and the node part keeps two hubs from minting the same id.
 */
let lastMillis = 0
let counter = 0

export function newIncarnation(node: string, now: number = Date.now()): string {
  if (now > lastMillis) {
    lastMillis = now
    counter = 0
  } else {
    counter += 1 // the clock stood still or went back: keep increasing anyway
  }
  return `${lastMillis.toString(36).padStart(9, '0')}.${counter.toString(36).padStart(4, '0')}.${node}`
}

/**
 * Makes every incarnation minted from now on sort after `incarnation` (one of this node's, or
 * another's), even if this machine's clock is behind the one that minted it.
 */
export function observeIncarnation(incarnation: string): void {
  const [time, count] = incarnation.split('.', 2)
  const millis = parseInt(time ?? '', 36)
  const seen = parseInt(count ?? '', 36)
  if (!Number.isFinite(millis) || !Number.isFinite(seen)) return
  if (millis > lastMillis) {
    lastMillis = millis
    counter = seen
  } else if (millis === lastMillis) {
    counter = Math.max(counter, seen)
  }
}

/** Negative when `a` is an older connection than `b`. */
export function compareIncarnations(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
