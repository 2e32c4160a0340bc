/**
 * How the SQLite store keeps its change log: one row per committed batch, not one per entry.
 *
 * A row holds the entries one batch appended, numbered `seq - entries + 1` … `seq` (a row is
 * keyed by its last entry's number): one entry as its JSON object, several as a JSON array of
 * them. The main thread makes the row's text with one `JSON.stringify` of the batch's changes
 * and posts one string; the writer inserts one row. One entry per row cost the main thread a
 * `JSON.stringify` per change — whose parts V8 grows from 32 characters up, so ~560 bytes of
 * JSON cost ~1.7 KB of garbage — and a string each to copy to the writer, and the writer an
 * INSERT per change. Measured on a 2-cpu Intel VM (2026-12-07, frozen builds alternated with the
 * code before): the writer's cpu per event in a closed loop of the registry on this store lower in
 * three of three pairs (by 0.9–1.9 µs of 7.5–8.5), and in five of six for a what-if of the same
 * design; bench `events`' closed loop allocating 4,983–5,135 bytes per event on the main thread
 * against 5,427–5,770 (docs/perf-journal.md, "the change log as one row per batch").
 *
 * Readers see entries as before (`entriesOfRow`); pruning still goes entry by entry, rewriting
 * the row it stops inside (`prepareLogRows`). Files before schema version 6 hold one entry per
 * row, as a JSON object: a row of one entry still is one.
 */
import type Database from 'better-sqlite3'
import type { LogEntry, LoggedChange } from '../change-log.js'
import type { LogPruning } from '../coordination.js'

/** One change-log row as it is read. */
export interface LogRow {
  /** The number of its last entry. */
  seq: number
  /** Epoch ms of the commit that appended it. */
  at: number
  /** How many entries it holds. */
  entries: number
  change: string
}

/** The text of the row that holds `changes`, a batch's logged changes in order (at least one). */
export function rowText(changes: readonly LoggedChange[]): string {
  return JSON.stringify(changes.length === 1 ? changes[0] : changes)
}

/** The changes a row's text holds, in order. */
function changesOf(text: string): LoggedChange[] {
  const parsed = JSON.parse(text) as LoggedChange | LoggedChange[]
  return Array.isArray(parsed) ? parsed : [parsed]
}

/**
 * Appends to `out` the entries of `row` numbered after `after`, until `out` holds `limit`;
 * answers whether it is full.
 */
export function entriesOfRow(row: LogRow, after: number, limit: number, out: LogEntry[]): boolean {
  const changes = changesOf(row.change)
  const first = row.seq - changes.length + 1
  for (let i = Math.max(0, after + 1 - first); i < changes.length && out.length < limit; i++) {
    out.push({ seq: first + i, at: row.at, change: changes[i]! })
  }
  return out.length >= limit
}

/** The writer's statements for the change log: appending a batch's row, and pruning. */
export interface LogRowWrites {
  /** Appends the row of `entries` entries, the last numbered `seq`. */
  append(seq: number, at: number, entries: number, text: string): void
  /** Deletes entries as `pruning` allows, from the oldest on; answers how many. */
  prune(pruning: LogPruning): number
}

export function prepareLogRows(db: Database.Database): LogRowWrites {
  const insert = db.prepare('INSERT INTO change_log (seq, at, entries, change) VALUES (?, ?, ?, ?)')
  const head = db.prepare('SELECT seq FROM log_head').pluck()
  const oldest = db.prepare('SELECT seq, at, entries FROM change_log ORDER BY seq LIMIT 1')
  const textOf = db.prepare('SELECT change FROM change_log WHERE seq = ?').pluck()
  const remove = db.prepare('DELETE FROM change_log WHERE seq = ?')
  const rewrite = db.prepare('UPDATE change_log SET entries = ?, change = ? WHERE seq = ?')
  return {
    append: (seq, at, entries, text) => insert.run(seq, at, entries, text),
    prune: ({ through, keepEntries, keepSince, limit }) => {
      const newest = head.get() as number
      let deleted = 0
      for (;;) {
        const row = oldest.get() as Omit<LogRow, 'change'> | undefined
        if (row === undefined || deleted >= limit) return deleted
        const first = row.seq - row.entries + 1
        // what of this row may go: never past `through`; by age (the row's commit time is each of
        // its entries'), or by count (beyond the newest keepEntries); at most `limit` in all
        const cut = Math.min(through, row.at < keepSince ? row.seq : newest - keepEntries, first + (limit - deleted) - 1)
        if (cut < first) return deleted
        if (cut >= row.seq) {
          remove.run(row.seq)
          deleted += row.entries
          continue
        }
        // the entries after `cut` stay, still numbered up to the row's seq
        const kept = changesOf(textOf.get(row.seq) as string).slice(cut - first + 1)
        rewrite.run(kept.length, rowText(kept), row.seq)
        return deleted + (cut - first + 1)
      }
    }
  }
}
