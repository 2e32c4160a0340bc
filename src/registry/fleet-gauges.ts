/**
 * The fleet's size as gauges, read from FleetReads at scrape time: counts from the store where no
 * replica holds the fleet (one query per scrape, shared by the gauges it feeds), from the caches
 * where one does.
 */
import type { HubMetrics } from '../observability/metrics.js'
import type { FleetReads, FleetTotals } from '../store/fleet-reads.js'

/** A scrape reads every gauge at once: totals read this recently are reused. */
const REUSE_MS = 1000

export function registerFleetGauges(metrics: HubMetrics, fleet: Pick<FleetReads, 'totals'>): void {
  let last: { at: number; totals: Promise<FleetTotals> } | undefined
  const totals = (): Promise<FleetTotals> => {
    const now = Date.now()
    if (!last || now - last.at > REUSE_MS) last = { at: now, totals: fleet.totals() }
    return last.totals
  }
  metrics.gauge('iothub_sessions_connected', 'Connected sessions by protocol', ['protocol'], async (set) => {
    for (const [protocol, n] of Object.entries((await totals()).connectedByProtocol)) set({ protocol }, n)
  })
  metrics.gauge('iothub_sessions', 'Session entities stored, connected or offline', [], async (set) => set({}, (await totals()).sessions))
  metrics.gauge('iothub_subscription_entities', 'Subscription entities stored', [], async (set) => set({}, (await totals()).subscriptions))
}
