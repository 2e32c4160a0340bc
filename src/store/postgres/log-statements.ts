/**
 * The change log on PostgreSQL (see ../change-log.ts). A batch appends its entries in one
 * statement at the very end of its transaction: it takes the next numbers from `log_head`, whose
 * row lock it then holds until COMMIT — so batches of every replica number their entries in the
 * order they commit, with no gaps (a batch rolled back gives its numbers back) — and it notifies
 * the replicas' listeners, which PostgreSQL delivers only once the transaction has committed.
 * Taking that lock last keeps the time batches wait on one another to their COMMIT alone. The same
 * statement moves the fleet's stored totals by what the batch's statements added and removed
 * (schema.ts, versions 5 and 7), under the lock the batch takes anyway: the connected totals'
 * rows are written from the log head's updated row, so only once its lock is held.
 */
import pg from 'pg'
import { loggedChanges, type CommittedLog } from '../change-log.js'
import { changeText } from '../property-json.js'
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
    const append = fleetMoves(t, 6)
    this.appendSql =
      `WITH head AS (UPDATE ${t.log_head} SET seq = seq + $1, ${append.totals} RETURNING seq - $1 AS previous),
            appended AS (INSERT INTO ${t.change_log} (seq, at, change, replica)
                         SELECT head.previous + e.n, $2, e.change, $5 FROM head, unnest($3::json[]) WITH ORDINALITY AS e(change, n)),
            ${append.connected}
       SELECT previous, pg_notify($4, (previous + $1)::text) FROM head`
    const count = fleetMoves(t, 1)
    this.countSql = `WITH head AS (UPDATE ${t.log_head} SET ${count.totals} RETURNING seq), ${count.connected} SELECT FROM head`
    this.readSql = `SELECT seq, at, change, replica FROM ${t.change_log} WHERE seq > $1 ORDER BY seq LIMIT $2`
  }

  /**
   * Appends the logged changes among `mutations`, and moves the totals by `counted`; null when
   * there are none.
   */
  async append(client: pg.ClientBase, mutations: readonly Mutation[], counted?: FleetCountChange): Promise<CommittedLog | null> {
    const changes = loggedChanges(mutations)
    const moves = counted?.connected ?? []
    const totals = [
      counted?.sessions ?? 0,
      counted?.topics ?? 0,
      counted?.devices ?? 0,
      counted?.subscriptions ?? 0,
      moves.map((c) => c.protocol),
      moves.map((c) => c.node),
      moves.map((c) => c.sessions)
    ]
    if (changes.length === 0) {
      // the counted rows change only by logged mutations: never so far, kept exact all the same
      if (counted && !counted.none) await client.query({ name: 'iothub_fleet_count', text: this.countSql, values: totals })
      return null
    }
    const at = Date.now()
    const { rows } = await client.query<{ previous: string }>({
      name: 'iothub_log_append',
      text: this.appendSql,
      values: [changes.length, at, changes.map(changeText), this.channel, this.replica, ...totals]
    })
    const previous = Number(rows[0]!.previous)
    return { previous, entries: changes.map((change, i) => ({ seq: previous + i + 1, at, change, replica: this.replica })) }
  }

  read(after: number, limit: number): pg.QueryConfig {
    return { name: 'iothub_log_read', text: this.readSql, values: [after, limit] }
  }
}

/**
 * What moves the stored totals, its parameters numbered from `first`: log_head's four (sessions,
 * topics, devices, subscriptions: by how many), then the connected totals' moves as three arrays
 * (protocols, nodes, by how many). The connected totals' rows are written from `head` (log_head's
 * update), so only once its row lock is held: every batch takes the two in that order.
 */
function fleetMoves(t: QualifiedTables, first: number): { totals: string; connected: string } {
  const p = (i: number): string => `$${first + i}`
  return {
    totals: `sessions = sessions + ${p(0)}, topics = topics + ${p(1)}, devices = devices + ${p(2)}, subscriptions = subscriptions + ${p(3)}`,
    connected:
      `moved AS (INSERT INTO ${t.connected_totals} (protocol, node, sessions) ` +
      `SELECT c.protocol, c.node, c.n FROM head, unnest(${p(4)}::text[], ${p(5)}::text[], ${p(6)}::bigint[]) AS c(protocol, node, n) ` +
      `ON CONFLICT (protocol, node) DO UPDATE SET sessions = ${t.connected_totals}.sessions + excluded.sessions)`
  }
}

function hashOf(text: string): string {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0
  return h.toString(16)
}
