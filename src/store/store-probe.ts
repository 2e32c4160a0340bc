/**
 * Asks the store whether it answers — for /readyz and for noticing that it came back — at most
 * once per `intervalMs`, one probe shared by everyone who asks meanwhile. A replica nobody
 * writes through turns ready again as soon as its store answers, and a store that stopped
 * answering (frozen, not refusing) turns it not ready without waiting for a write to fail.
 */
import type { Store } from './store.js'

export interface ProbeOptions {
  /** Least time between two probes, ms. */
  intervalMs?: number
  /** Longest a caller waits for a probe's answer before hearing "not answered yet", ms. */
  waitMs?: number
}

export class StoreProbe {
  private readonly intervalMs: number
  private readonly waitMs: number
  private running: Promise<void> | null = null
  /** When the probe under way began (epoch ms). */
  private runningSince = 0
  private lastDone = -Infinity

  constructor(
    private readonly store: Store,
    options: ProbeOptions = {}
  ) {
    this.intervalMs = options.intervalMs ?? 1000
    this.waitMs = options.waitMs ?? 1000
  }

  /**
   * Resolves once a probe no older than `intervalMs` has answered — the store's health() then
   * tells its outcome — or after `waitMs` with the probe still waiting: see `unanswered`.
   */
  async fresh(): Promise<void> {
    if (!this.running && Date.now() - this.lastDone < this.intervalMs) return
    if (!this.running) {
      this.runningSince = Date.now()
      this.running = this.store.probe().then(
        () => this.done(),
        () => this.done()
      )
    }
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.running, new Promise<void>((resolve) => (timer = setTimeout(resolve, this.waitMs)))])
    clearTimeout(timer)
  }

  /** How long the probe under way has waited for the store, if longer than `waitMs`; else null. */
  unanswered(): number | null {
    if (!this.running) return null
    const waited = Date.now() - this.runningSince
    return waited >= this.waitMs ? waited : null
  }

  /** Resolves once no probe is under way (each has the store's deadline). */
  async settled(): Promise<void> {
    await this.running
  }

  private done(): void {
    this.running = null
    this.lastDone = Date.now()
  }
}
