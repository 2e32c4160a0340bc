/**
 * Reads made outside a batch — the fleet queries, a cache's read-through — within the store's
 * deadline, and failing as the store's (StoreError): so the API answers them 503 with
 * Retry-After while PostgreSQL is away, as it does a write, instead of a bare 500. A failed read
 * is a failure of the store like a failed commit: it is what `/readyz` reports until a probe
 * answers (a replica whose first call after PostgreSQL went away was a read would otherwise
 * look healthy).
 */
import type pg from 'pg'
import { StoreError, withinDeadline } from '../store.js'

export class StoreReads {
  constructor(
    private readonly pool: pg.Pool,
    private readonly timeoutMs: number,
    private readonly onFailure: (error: StoreError) => void
  ) {}

  async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await withinDeadline(this.pool.query<R>(text, values), this.timeoutMs)
    } catch (error) {
      const failure = error instanceof StoreError ? error : new StoreError(`store read failed: ${(error as Error).message}`, { cause: error })
      this.onFailure(failure)
      throw failure
    }
  }
}
