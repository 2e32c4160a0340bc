/**
 * The fleet's size as gauges, read from FleetReads at scrape time: the store's stored totals where
 * no replica holds the fleet (one small read, shared by the gauges it feeds), a walk of the caches
 * where one does.
 */
import type { HubMetrics } from '../observability/metrics.js'
import type { FleetReads, FleetTotals } from '../store/fleet-reads.js'

/**
 * Totals read this recently are reused. The store's stored totals (PostgreSQL, which every batch
 * moves) are a row and a few to read: reused only for the readers of one moment (a scrape reads
 * every gauge at once). Walking the caches visits every session (tens of ms of the main thread at
 * a million): not at every scrape.
 */
export const REUSE_MS = { stored: 1_000, walked: 15_000 } as const

/** The fleet's totals, read at most once per `maxAgeMs` (shared by every caller). */
export type TotalsReader = (maxAgeMs?: number) => Promise<FleetTotals>

/**
 * Registers the gauges and answers their reader, so other readers of the totals (the status
 * sampler, GET /v1/status) share its reads rather than counting the fleet again.
 */
export function registerFleetGauges(metrics: HubMetrics, fleet: Pick<FleetReads, 'totals'>, reuseMs: number): TotalsReader {
  let last: { at: number; totals: Promise<FleetTotals> } | undefined
  const totals: TotalsReader = (maxAgeMs = reuseMs) => {
    const now = Date.now()
    if (!last || now - last.at > maxAgeMs) {
      const reading = { at: now, totals: fleet.totals() }
      // a failed count is not kept: the next scrape asks again
      reading.totals.catch(() => {
        if (last === reading) last = undefined
      })
      last = reading
    }
    return last.totals
  }
  metrics.gauge('iothub_sessions_connected', 'Connected sessions by protocol', ['protocol'], async (set) => {
    for (const [protocol, n] of Object.entries((await totals()).connectedByProtocol)) set({ protocol }, n)
  })
  metrics.gauge('iothub_sessions', 'Session entities stored, connected or offline', [], async (set) => set({}, (await totals()).sessions))
  metrics.gauge('iothub_subscription_entities', 'Subscription entities stored', [], async (set) => set({}, (await totals()).subscriptions))
  return totals
}
