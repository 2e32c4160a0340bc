/**
 * How the SQLite store keeps its change log: one row per committed batch, not one per entry.
 *
 * A row holds the entries one batch appended, numbered `seq - entries + 1` … `seq` (a row is
 * keyed by its last entry's number): one entry as its JSON object, several as a JSON array of
 * them. The main thread makes the row's text with one `JSON.stringify` of the batch's changes
 * (`changesText`, store/property-json.ts: written around the measured JSON of property values)
 * and posts one string; the writer inserts one row. One entry per row cost the main thread a
 * `JSON.stringify` per change — whose parts V8 grows from 32 characters up, so ~560 bytes of
 * JSON cost ~1.7 KB of garbage — and a string each to copy to the writer, and the writer an
 * INSERT per change. Measured on a 2-cpu Intel VM (2026-12-07, frozen builds alternated with the
 * code before): the writer's cpu per event in a closed loop of the registry on this store lower in
 * three of three pairs (pair means 6.6 / 6.9 / 6.6 against 8.5 / 7.7 / 7.6 µs), and in five of six
 * for a what-if of the same design; bench `events`' closed loop allocating 4,983 and 5,135 bytes
 * per event on the main thread against 5,427 and 5,770 in the two pairs read for it
 * (docs/perf-journal.md, "the change log as one row per batch").
 *
 * Readers see entries as before (`entriesOfRow`). Pruning still goes entry by entry: whole rows in
 * one DELETE, and the row it stops inside rewritten (`prepareLogRows`) — so a file of one entry
 * per row (low load, or written before version 6) prunes as fast as it did. Files before schema
 * version 6 hold one entry per row, as a JSON object: a row of one entry still is one.
 */
import type Database from 'better-sqlite3'
import type { LogEntry, LoggedChange } from '../change-log.js'
import type { LogPruning } from '../coordination.js'
import { changesText } from '../property-json.js'

/** One change-log row as a reader reads it (its entries are counted by its text). */
export interface LogRow {
  /** The number of its last entry. */
  seq: number
  /** Epoch ms of the commit that appended it. */
  at: number
  change: string
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
  const oldest = db.prepare('SELECT seq, entries FROM change_log ORDER BY seq LIMIT 1')
  // the last row of the oldest ones committed before keepSince (all of them when none is younger)
  const firstYoung = db.prepare('SELECT seq, entries FROM change_log WHERE at >= ? ORDER BY seq LIMIT 1')
  const entriesThrough = db.prepare('SELECT coalesce(sum(entries), 0) FROM change_log WHERE seq <= ?').pluck()
  const removeThrough = db.prepare('DELETE FROM change_log WHERE seq <= ?')
  const textOf = db.prepare('SELECT change FROM change_log WHERE seq = ?').pluck()
  const rewrite = db.prepare('UPDATE change_log SET entries = ?, change = ? WHERE seq = ?')
  return {
    append: (seq, at, entries, text) => insert.run(seq, at, entries, text),
    prune: ({ through, keepEntries, keepSince, limit }) => {
      const first = oldest.get() as { seq: number; entries: number } | undefined
      if (first === undefined || limit <= 0) return 0
      const newest = head.get() as number
      const young = firstYoung.get(keepSince) as { seq: number; entries: number } | undefined
      const byAge = young === undefined ? newest : young.seq - young.entries
      // the last entry that goes: never past `through`; by count (beyond the newest keepEntries)
      // or by age (a row's commit time is each of its entries'); at most `limit` of them
      const cut = Math.min(through, Math.max(newest - keepEntries, byAge), first.seq - first.entries + limit)
      if (cut < first.seq - first.entries + 1) return 0
      // whole rows in one statement; then the row the cut falls inside keeps the entries after it,
      // still numbered up to its seq
      const whole = entriesThrough.get(cut) as number
      removeThrough.run(cut)
      const straddling = oldest.get() as { seq: number; entries: number } | undefined
      if (straddling === undefined || straddling.seq - straddling.entries + 1 > cut) return whole
      const gone = cut - (straddling.seq - straddling.entries)
      const kept = changesOf(textOf.get(straddling.seq) as string).slice(gone)
      rewrite.run(kept.length, changesText(kept), straddling.seq)
      return whole + gone
    }
  }
}
