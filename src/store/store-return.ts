/**
 * Whether the store has come back after failing: what the hub asks at each look of its store
 * watch (hub.ts), before it stores the connection ends refused meanwhile and has its carrier
 * correct what it can (in EMQX mode a reconcile: hook calls were refused meanwhile).
 *
 * A failure counts even when it came and went between two looks. An outage shorter than the
 * watch's second, or one whose end a probe or a commit saw first, still refused calls; judged by
 * `StoreHealth.ok` alone at the look, it went unnoticed, and what it refused waited for the
 * next interval's reconcile. So each look also compares the store's failure count, which only
 * grows, with the one it saw last.
 */
export type StoreLook = 'down' | 'returned' | 'steady'

export class StoreReturnWatch {
  private down = false
  private seenFailures: number

  /** `failures`: the store's failure count when the watch begins (StoreHealth.failures). */
  constructor(failures: number) {
    this.seenFailures = failures
  }

  /** Whether this look must ask the store first (a probe): it fails, failed, or has ends to store. */
  needsProbe(health: { ok: boolean; failures: number }, unstoredEnds: number): boolean {
    return !health.ok || this.down || health.failures > this.seenFailures || unstoredEnds > 0
  }

  /**
   * After the probe: `down` while the store does not answer; `returned` once it answers after
   * failing — once per failure, however short; `steady` otherwise.
   */
  look(answering: boolean, failures: number): StoreLook {
    if (!answering) {
      this.down = true
      return 'down'
    }
    const failedSinceLastLook = failures > this.seenFailures
    this.seenFailures = failures
    if (!this.down && !failedSinceLastLook) return 'steady'
    this.down = false
    return 'returned'
  }
}
