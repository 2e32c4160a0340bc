/**
 * How the writer thread appends a batch's change-log entries: many rows per INSERT.
 *
 * A batch of group commit carries up to a few hundred entries (one per lifecycle event, most of
 * them), and an INSERT run once per entry paid better-sqlite3's per-run cost — crossing into
 * native code, binding, stepping, resetting — for each. One statement that inserts
 * `ROWS_PER_INSERT` rows pays it once per chunk; the rest of a batch goes one row at a time.
 * Measured on a 2-cpu Intel VM (2026-12-07, transactions of 256 entries of ~600 bytes, no fsync,
 * alternated): 2.7–3.3 against 3.4–4.8 µs of the writer per entry once warm; in the events closed
 * loop the writer's cpu per event was lower in five of six alternated pairs, by 0.3–3 µs of 8–12
 * (docs/perf-journal.md, "the change log appended many rows per INSERT").
 */
import type Database from 'better-sqlite3'

/** Rows per multi-row INSERT: 3 parameters each, far below SQLite's limit on a statement's parameters. */
export const ROWS_PER_INSERT = 32

/** Appends `changes` (their JSON) as entries `first`, `first + 1`, … committed at `at`. */
export type LogAppend = (first: number, at: number, changes: readonly string[]) => void

export function prepareLogAppend(db: Database.Database): LogAppend {
  const one = db.prepare('INSERT INTO change_log (seq, at, change) VALUES (?, ?, ?)')
  const chunk = db.prepare(`INSERT INTO change_log (seq, at, change) VALUES ${Array(ROWS_PER_INSERT).fill('(?, ?, ?)').join(', ')}`)
  // one array reused for every chunk (better-sqlite3 binds its values and keeps nothing of it):
  // none made per chunk on this thread, which commits every batch
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
