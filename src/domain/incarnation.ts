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

/** Negative when `a` is an older connection than `b`. */
export function compareIncarnations(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
