/**
 * Reads made outside a batch — the fleet queries, a cache's read-through — within the store's
 * deadline, and failing as the store's (StoreError): so the API answers them 503 with
 * Retry-After while PostgreSQL is away, as it does a write, instead of a bare 500.
 */
import type pg from 'pg'
import { StoreError, withinDeadline } from '../store.js'

export class StoreReads {
  constructor(
    private readonly pool: pg.Pool,
    private readonly timeoutMs: number
  ) {}

  async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await withinDeadline(this.pool.query<R>(text, values), this.timeoutMs)
    } catch (error) {
      if (error instanceof StoreError) throw error
      throw new StoreError(`store read failed: ${(error as Error).message}`, { cause: error })
    }
  }
}
