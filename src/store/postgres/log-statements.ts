/**
 * The change log on PostgreSQL (see ../change-log.ts). A batch appends its entries in one
 * statement at the very end of its transaction: it takes the next numbers from `log_head`, whose
 * row lock it then holds until COMMIT — so batches of every replica number their entries in the
 * order they commit, with no gaps (a batch rolled back gives its numbers back) — and it notifies
 * the replicas' listeners, which PostgreSQL delivers only once the transaction has committed.
 * Taking that lock last keeps the time batches wait on one another to their COMMIT alone. The same
 * update moves the fleet's stored totals by what the batch's statements added and removed
 * (schema.ts, version 5), under the lock the batch takes anyway.
 */
import pg from 'pg'
import { loggedChanges, type CommittedLog } from '../change-log.js'
import type { Mutation } from '../store.js'
import type { FleetCountChange } from './batch-statements.js'
import type { QualifiedTables } from './schema.js'

export class LogStatements {
  /** The NOTIFY channel of this schema's log; the payload is the last entry's number. */
  readonly channel: string
  private readonly appendSql: string
  private readonly countSql: string
  private readonly readSql: string

  constructor(
    t: QualifiedTables,
    schema: string,
    /** This process's run, recorded with every entry it appends. */
    readonly replica: string
  ) {
    // a channel name is an identifier (at most 63 bytes): long schema names are hashed into it
    this.channel = `iothub_log_${schema}`.length <= 63 ? `iothub_log_${schema}` : `iothub_log_${hashOf(schema)}`
    this.appendSql =
      `WITH head AS (UPDATE ${t.log_head} SET seq = seq + $1, sessions = sessions + $6, topics = topics + $7 RETURNING seq - $1 AS previous),
            appended AS (INSERT INTO ${t.change_log} (seq, at, change, replica)
                         SELECT head.previous + e.n, $2, e.change, $5 FROM head, unnest($3::json[]) WITH ORDINALITY AS e(change, n))
       SELECT previous, pg_notify($4, (previous + $1)::text) FROM head`
    this.countSql = `UPDATE ${t.log_head} SET sessions = sessions + $1, topics = topics + $2`
    this.readSql = `SELECT seq, at, change, replica FROM ${t.change_log} WHERE seq > $1 ORDER BY seq LIMIT $2`
  }

  /**
   * Appends the logged changes among `mutations`, and moves the totals by `counted`; null when
   * there are none.
   */
  async append(client: pg.ClientBase, mutations: readonly Mutation[], counted?: FleetCountChange): Promise<CommittedLog | null> {
    const changes = loggedChanges(mutations)
    if (changes.length === 0) {
      // sessions and topics change only by logged mutations: never so far, kept exact all the same
      if (counted && !counted.none) await client.query({ name: 'iothub_fleet_count', text: this.countSql, values: [counted.sessions, counted.topics] })
      return null
    }
    const at = Date.now()
    const { rows } = await client.query<{ previous: string }>({
      name: 'iothub_log_append',
      text: this.appendSql,
      values: [changes.length, at, changes.map((c) => JSON.stringify(c)), this.channel, this.replica, counted?.sessions ?? 0, counted?.topics ?? 0]
    })
    const previous = Number(rows[0]!.previous)
    return { previous, entries: changes.map((change, i) => ({ seq: previous + i + 1, at, change, replica: this.replica })) }
  }

  read(after: number, limit: number): pg.QueryConfig {
    return { name: 'iothub_log_read', text: this.readSql, values: [after, limit] }
  }
}

function hashOf(text: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0
  return h.toString(16)
}
