/**
 * The fleet's size as gauges, read from FleetReads at scrape time: counts from the store where no
 * replica holds the fleet (one query per scrape, shared by the gauges it feeds), from the caches
 * where one does.
 */
import type { HubMetrics } from '../observability/metrics.js'
import type { FleetReads, FleetTotals } from '../store/fleet-reads.js'

/**
 * Totals read this recently are reused: a scrape reads every gauge at once, and counting a
 * fleet of a million in PostgreSQL takes about a second (so not at every scrape of every replica).
 */
const REUSE_MS = 15_000

/** The fleet's totals, read at most once per `maxAgeMs` (shared by every caller). */
export type TotalsReader = (maxAgeMs?: number) => Promise<FleetTotals>

/**
 * Registers the gauges and answers their reader, so other readers of the totals (the status
 * sampler, GET /v1/status) share its reads rather than counting the fleet again.
 */
export function registerFleetGauges(metrics: HubMetrics, fleet: Pick<FleetReads, 'totals'>): TotalsReader {
  let last: { at: number; totals: Promise<FleetTotals> } | undefined
  const totals: TotalsReader = (maxAgeMs = REUSE_MS) => {
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
