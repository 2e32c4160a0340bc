/**
 * How the writer thread appends a batch's change-log entries: many rows per INSERT.
 *
 * A batch of group commit carries up to a few hundred entries (one per lifecycle event, most of
 * them), and an INSERT run once per entry paid better-sqlite3's per-run cost — crossing into
 * native code, binding, stepping, resetting — for each. One statement that inserts
 * `ROWS_PER_INSERT` rows pays it once per chunk; the rest of a batch goes one row at a time.
 * Measured on a 2-cpu Intel VM (2026-12-07, transactions of 256 entries of ~600 bytes, alternated
 * eight times): the statement's own cost, with `synchronous = OFF`, 2.7–3.3 against 3.4–4.8 µs per
 * entry in the seven alternations after the first (which went the other way); with FULL, the
 * fsync in each transaction, lower in six of eight. In a scratch closed loop of the registry on
 * this store the writer's cpu per event was lower in five of six alternated pairs (by −0.6 to 3.2
 * µs of 8–12); the main thread and the rate unresolved (docs/perf-journal.md, "the change log
 * appended many rows per INSERT").
 */
import type Database from 'better-sqlite3'

/** Rows per multi-row INSERT: 3 parameters each, far below SQLite's limit on a statement's parameters. */
export const ROWS_PER_INSERT = 32

/** Appends `changes` (their JSON) as entries `first`, `first + 1`, … committed at `at`. */
export type LogAppend = (first: number, at: number, changes: readonly string[]) => void

export function prepareLogAppend(db: Database.Database): LogAppend {
  const one = db.prepare('INSERT INTO change_log (seq, at, change) VALUES (?, ?, ?)')
  const chunk = db.prepare(`INSERT INTO change_log (seq, at, change) VALUES ${Array(ROWS_PER_INSERT).fill('(?, ?, ?)').join(', ')}`)
  // one array reused for every chunk, none made per chunk on this thread, which commits every
  // batch: better-sqlite3 copies what it binds, so each chunk overwrites all of it before its run.
  // It keeps the last chunk's entries alive until the next batch's: 32 strings, on the writer's heap
  const params: (number | string)[] = new Array<number | string>(3 * ROWS_PER_INSERT)
  return (first, at, changes) => {
    let i = 0
    for (; i + ROWS_PER_INSERT <= changes.length; i += ROWS_PER_INSERT) {
      for (let row = 0; row < ROWS_PER_INSERT; row++) {
        params[3 * row] = first + i + row
        params[3 * row + 1] = at
        params[3 * row + 2] = changes[i + row]!
      }
      chunk.run(params)
    }
    for (; i < changes.length; i++) one.run(first + i, at, changes[i]!)
  }
}
