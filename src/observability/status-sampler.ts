/**
 * What GET /v1/status and /v1/status/history show of this replica's recent past: its counters
 * read once a second (the rates and commit percentiles of the last 10 s are the difference
 * between now and ten readings ago), and every 10 s a sample of connected sessions and rates,
 * kept for the last hour. Memory is bounded: 11 readings and 360 samples, whatever the load.
 */
import type { Logger } from 'pino'
import type { Histogram } from 'prom-client'
import type { FleetTotals } from '../store/fleet-reads.js'
import type { HubMetrics } from './metrics.js'

/** One point of GET /v1/status/history. */
export interface StatusSample {
  at: string
  /** Connected sessions, fleet-wide, as counted at that time; null when the store could not count. */
  connected: number | null
  lifecycleEventsPerSecond: number
  pushesPerSecond: number
}

export interface RecentRates {
  lifecycleEventsPerSecond: number
  pushesPerSecond: number
  /** Of the commits in the window; null when there were none. */
  commitSecondsP50: number | null
  commitSecondsP99: number | null
}

/** Counter totals at one moment. */
interface Reading {
  at: number
  lifecycleEvents: number
  pushes: number
  /** Cumulative counts of the commit histogram's buckets, by upper bound (the last is +Inf). */
  commitBuckets: [le: number, count: number][]
}

export const SAMPLE_INTERVAL_SECONDS = 10
const KEEP_SECONDS = 3600
const READ_EVERY_MS = 1000
const WINDOW_READINGS = SAMPLE_INTERVAL_SECONDS + 1

export class StatusSampler {
  /** The last WINDOW_READINGS readings, oldest first. */
  private readonly readings: Reading[] = []
  /** The last hour's samples, oldest first. */
  private readonly samples: StatusSample[] = []
  private timer: NodeJS.Timeout | undefined
  private ticks = 0
  private reading: Promise<void> | undefined

  constructor(
    private readonly metrics: HubMetrics,
    /** The fleet's totals, read at most `maxAgeMs` ago (registry/fleet-gauges.ts's shared reader). */
    private readonly totals: (maxAgeMs?: number) => Promise<Pick<FleetTotals, 'connectedByProtocol'>>,
    private readonly log: Logger
  ) {}

  async start(): Promise<void> {
    this.readings.push(await this.read())
    this.timer = setInterval(() => {
      // a reading still running (a slow count) is not stacked on
      this.reading ??= this.tick().finally(() => (this.reading = undefined))
    }, READ_EVERY_MS)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.reading
  }

  /** Rates and commit percentiles from ten readings ago (fewer just after start) until now. */
  async recent(): Promise<RecentRates> {
    const now = await this.read()
    return this.between(this.readings[0] ?? now, now)
  }

  history(): { intervalSeconds: number; samples: StatusSample[] } {
    return { intervalSeconds: SAMPLE_INTERVAL_SECONDS, samples: [...this.samples] }
  }

  private async tick(): Promise<void> {
    const now = await this.read()
    this.readings.push(now)
    if (this.readings.length > WINDOW_READINGS) this.readings.shift()
    if (++this.ticks % SAMPLE_INTERVAL_SECONDS !== 0) return
    const { lifecycleEventsPerSecond, pushesPerSecond } = this.between(this.readings[0]!, now)
    let connected: number | null = null
    try {
      // the shared reading (registry/fleet-gauges.ts): PostgreSQL's stored totals, or a walk of
      // the caches at most every 15 s, which a sample every 10 s must not add to
      const totals = await this.totals()
      connected = Object.values(totals.connectedByProtocol).reduce((sum, n) => sum + n, 0)
    } catch (error) {
      this.log.warn({ err: (error as Error).message }, 'status sample: the fleet could not be counted')
    }
    this.samples.push({ at: new Date(now.at).toISOString(), connected, lifecycleEventsPerSecond, pushesPerSecond })
    if (this.samples.length > KEEP_SECONDS / SAMPLE_INTERVAL_SECONDS) this.samples.shift()
  }

  private between(from: Reading, to: Reading): RecentRates {
    const seconds = Math.max((to.at - from.at) / 1000, 0.001)
    const rate = (a: number, b: number) => round((b - a) / seconds)
    const window = to.commitBuckets.map(([le, count], i): [number, number] => [le, count - (from.commitBuckets[i]?.[1] ?? 0)])
    return {
      lifecycleEventsPerSecond: rate(from.lifecycleEvents, to.lifecycleEvents),
      pushesPerSecond: rate(from.pushes, to.pushes),
      commitSecondsP50: quantile(window, 0.5),
      commitSecondsP99: quantile(window, 0.99)
    }
  }

  private async read(): Promise<Reading> {
    const [events, pushes, commits] = await Promise.all([this.metrics.eventsTotal.get(), this.metrics.pushesTotal.get(), this.metrics.commitSeconds.get()])
    const sum = (values: { value: number }[]) => values.reduce((total, v) => total + v.value, 0)
    // a push counts once, when it is over: one refused (failed) or held and published later counts as published then
    const over = pushes.values.filter((v) => v.labels.outcome !== 'failed' && v.labels.outcome !== 'held')
    return { at: Date.now(), lifecycleEvents: sum(events.values), pushes: sum(over), commitBuckets: buckets(commits) }
  }
}

function buckets(histogram: Awaited<ReturnType<Histogram['get']>>): [number, number][] {
  return histogram.values
    .filter((v) => v.metricName?.endsWith('_bucket'))
    .map((v): [number, number] => [v.labels.le === '+Inf' ? Infinity : Number(v.labels.le), v.value])
    .sort((a, b) => a[0] - b[0])
}

/**
 * The q-quantile of cumulative bucket counts, interpolated within its bucket as Prometheus's
 * histogram_quantile does; in the +Inf bucket, the largest finite bound.
 */
export function quantile(cumulative: readonly [le: number, count: number][], q: number): number | null {
  const total = cumulative.at(-1)?.[1] ?? 0
  if (total <= 0) return null
  const rank = q * total
  let lower = 0
  let below = 0
  for (const [le, count] of cumulative) {
    if (count >= rank) {
      if (le === Infinity) return lower
      return round(lower + ((le - lower) * (rank - below)) / Math.max(count - below, 1e-9), 6)
    }
    lower = le
    below = count
  }
  return lower
}

function round(n: number, digits = 3): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}
