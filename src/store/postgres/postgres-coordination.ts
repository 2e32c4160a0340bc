/**
 * Replicas, leases and log pruning on PostgreSQL (see ../coordination.ts). Each is one statement
 * on a pooled connection, outside the write batches: none of it is on the path of an event.
 */
import type pg from 'pg'
import type { Coordination, LeaseState, LogPruning, ReplicaRecord } from '../coordination.js'
import type { QualifiedTables } from './schema.js'

interface LeaseRow {
  holder: string
  expires_at: string
  done_at: string | null
  requested_at: string | null
  request_reason: string | null
  note: unknown
}

export class PostgresCoordination implements Coordination {
  constructor(
    private readonly pool: pg.Pool,
    private readonly t: QualifiedTables
  ) {}

  async heartbeat(self: ReplicaRecord): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.t.replicas} (node, address, started_at, last_seen, log_position) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (node) DO UPDATE SET address = excluded.address, started_at = excluded.started_at,
         last_seen = excluded.last_seen, log_position = excluded.log_position`,
      [self.node, self.address, self.startedAt, self.lastSeen, self.logPosition]
    )
  }

  async replicas(): Promise<ReplicaRecord[]> {
    const { rows } = await this.pool.query<{ node: string; address: string | null; started_at: string; last_seen: string; log_position: string }>(
      `SELECT node, address, started_at, last_seen, log_position FROM ${this.t.replicas} ORDER BY node`
    )
    return rows.map((r) => ({
      node: r.node,
      address: r.address,
      startedAt: Number(r.started_at),
      lastSeen: Number(r.last_seen),
      logPosition: Number(r.log_position)
    }))
  }

  async leave(node: string, startedAt: number): Promise<void> {
    await this.pool.query(`DELETE FROM ${this.t.replicas} WHERE node = $1 AND started_at = $2`, [node, startedAt])
  }

  async lease(name: string, holder: string, ttlMs: number, now?: number): Promise<LeaseState> {
    // taken when free, expired or already ours; either way the row as it stands comes back.
    // Expiry by the database's clock, unless told (tests): replicas' own clocks may differ.
    const { rows } = await this.pool.query<LeaseRow>(
      `WITH clock AS (SELECT COALESCE($4::bigint, (extract(epoch from clock_timestamp()) * 1000)::bigint) AS now),
       taken AS (
         INSERT INTO ${this.t.leases} AS l (name, holder, expires_at) SELECT $1, $2, clock.now + $3 FROM clock
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
           WHERE l.holder = excluded.holder OR l.expires_at < (SELECT now FROM clock)
         RETURNING holder, expires_at, done_at, requested_at, request_reason, note)
       SELECT * FROM taken
       UNION ALL
       SELECT holder, expires_at, done_at, requested_at, request_reason, note FROM ${this.t.leases} WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM taken)`,
      [name, holder, ttlMs, now ?? null]
    )
    const r = rows[0]
    // another replica created the lease in the same instant: its row is not in this statement's
    // snapshot, and it is not ours
    if (!r) return { holder: null, expiresAt: 0, doneAt: null, requestedAt: null, requestReason: null, note: null }
    return {
      holder: r.holder,
      expiresAt: Number(r.expires_at),
      doneAt: r.done_at === null ? null : Number(r.done_at),
      requestedAt: r.requested_at === null ? null : Number(r.requested_at),
      requestReason: r.request_reason,
      note: r.note
    }
  }

  async leaseDone(name: string, holder: string, at: number, note: unknown = null): Promise<void> {
    await this.pool.query(`UPDATE ${this.t.leases} SET done_at = $3, note = $4 WHERE name = $1 AND holder = $2`, [name, holder, at, JSON.stringify(note)])
  }

  async leaseRequest(name: string, at: number, reason: string): Promise<void> {
    await this.pool.query(`UPDATE ${this.t.leases} SET requested_at = $2, request_reason = $3 WHERE name = $1`, [name, at, reason])
  }

  async release(name: string, holder: string): Promise<void> {
    await this.pool.query(`UPDATE ${this.t.leases} SET expires_at = 0 WHERE name = $1 AND holder = $2`, [name, holder])
  }

  async pruneTombstones(before: number): Promise<number> {
    return (await this.pool.query(`DELETE FROM ${this.t.session_tombstones} WHERE ended_at < $1`, [before])).rowCount ?? 0
  }

  async pruneLog(p: LogPruning): Promise<number> {
    const result = await this.pool.query(
      `DELETE FROM ${this.t.change_log} WHERE seq IN (
         SELECT c.seq FROM ${this.t.change_log} c, ${this.t.log_head} h
          WHERE c.seq <= $1 AND (c.seq <= h.seq - $2 OR c.at < $3)
          ORDER BY c.seq LIMIT $4)`,
      [p.through, p.keepEntries, p.keepSince, p.limit]
    )
    return result.rowCount ?? 0
  }
}
