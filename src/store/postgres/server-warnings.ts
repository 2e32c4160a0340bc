/**
 * PostgreSQL settings the hub works under but that make it worse as time goes on, told once at
 * start. Autovacuum first: every connect inserts a session row and every disconnect deletes it
 * (topics and subscription entities likewise), so the hub's tables gather dead rows at the rate
 * devices come and go; without vacuum every index lookup of the decisions and listings walks
 * more of them. Measured with autovacuum off (bench replicas, ~1.5 minutes of connects): the
 * `sessions` table reached 69,000 dead rows to under 1,000 live, and PostgreSQL's cpu for the
 * same batches rose from 0.21 to 0.64 of a cpu.
 */
import type { StoreReads } from './store-reads.js'

export async function serverWarnings(reads: StoreReads): Promise<string[]> {
  const { rows } = await reads.query<{ autovacuum: string }>(`SELECT current_setting('autovacuum') AS autovacuum`)
  const warnings: string[] = []
  if (rows[0]?.autovacuum !== 'on') {
    warnings.push(
      "PostgreSQL's autovacuum is off: the hub's session, topic and subscription rows are written and deleted as devices come and go, " +
        'and without vacuum their dead rows slow every statement down over time (turn autovacuum on, or VACUUM those tables regularly)'
    )
  }
  return warnings
}
