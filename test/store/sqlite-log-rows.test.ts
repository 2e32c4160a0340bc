/**
 * The SQLite store's change log as one row per committed batch (src/store/sqlite/log-rows.ts):
 * what a reader gets is the same entries, numbered without a gap, read from any position with
 * any limit; pruning still goes entry by entry, inside a row too; and a file written one entry
 * per row (schema version 5) is read, appended to and pruned alike after the upgrade.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import type { LogEntry } from '../../src/store/change-log.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { Mutation } from '../../src/store/store.js'
import { tempDir } from '../helpers/hub.js'
import { session } from './contract.js'

/** A batch of `size` logged changes, each one commit's worth of one session's put. */
const batch = (name: string, size: number): Mutation[] =>
  Array.from({ length: size }, (_, i) => ({ op: 'session.put' as const, session: session(`${name}-${i}`, { username: `user ${name} ${i} ü😀 "q"` }) }))

/** A store on a new directory, given to `use`, then closed and removed whatever `use` did. */
async function withStore(use: (store: SqliteStore, dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = tempDir('iothub-log-rows-')
  const store = new SqliteStore({ dataDir })
  try {
    await use(store, dataDir)
  } finally {
    try {
      await store.close()
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

/** Commits `sizes` batches, one commit each (so one transaction and one row each); answers the changes in order. */
async function commitBatches(store: SqliteStore, sizes: readonly number[], prefix = 'b'): Promise<Mutation[]> {
  const committed: Mutation[] = []
  for (const [b, size] of sizes.entries()) {
    const changes = batch(`${prefix}${b}`, size)
    await store.commit(changes)
    committed.push(...changes)
  }
  return committed
}

const seqs = (entries: readonly LogEntry[]): number[] => entries.map((e) => e.seq)

describe('SqliteStore: the change log, one row per batch', () => {
  it('reads every batch back whole and numbered without a gap, one row and one commit time per batch', async () => {
    await withStore(async (store, dataDir) => {
      const sizes = [1, 2, 37, 1, 256, 5]
      const committed = await commitBatches(store, sizes)
      const entries = await store.readLog(0, 1_000_000)
      assert.deepEqual(
        seqs(entries),
        committed.map((_, i) => i + 1)
      )
      assert.deepEqual(
        entries.map((e) => e.change),
        committed
      )
      let first = 0
      for (const size of sizes) {
        assert.equal(new Set(entries.slice(first, first + size).map((e) => e.at)).size, 1, 'one commit time per batch')
        first += size
      }
      const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
      try {
        const rows = db.prepare('SELECT seq, entries FROM change_log ORDER BY seq').all() as { seq: number; entries: number }[]
        let last = 0
        assert.deepEqual(
          rows,
          sizes.map((entries) => ({ seq: (last += entries), entries }))
        )
      } finally {
        db.close()
      }
    })
  })

  it('reads from any position with any limit, inside a row or across rows, as the whole log sliced', async () => {
    await withStore(async (store) => {
      await commitBatches(store, [3, 1, 10, 4])
      const whole = await store.readLog(0, 1_000_000)
      assert.equal(whole.length, 18)
      for (let after = 0; after <= 19; after++) {
        for (const limit of [0, 1, 2, 5, 11, 100]) {
          const expected = whole.filter((e) => e.seq > after).slice(0, limit)
          assert.deepEqual(await store.readLog(after, limit), expected, `readLog(${after}, ${limit})`)
        }
      }
    })
  })

  it('prunes entry by entry, inside a row too: the rest of the row stays, numbered as it was', async () => {
    await withStore(async (store) => {
      await commitBatches(store, [4, 10, 3])
      const whole = await store.readLog(0, 1_000_000)
      // by count, all but the newest 8: the first row, and 5 of the second row’s 10
      assert.equal(await store.coordination.pruneLog({ through: 17, keepEntries: 8, keepSince: 0, limit: 1000 }), 9)
      assert.deepEqual(await store.readLog(0, 1_000_000), whole.slice(9))
      // at most `limit`, inside the row again
      assert.equal(await store.coordination.pruneLog({ through: 17, keepEntries: 0, keepSince: 0, limit: 2 }), 2)
      assert.deepEqual(await store.readLog(0, 1_000_000), whole.slice(11))
      // never past `through`
      assert.equal(await store.coordination.pruneLog({ through: 12, keepEntries: 0, keepSince: 0, limit: 1000 }), 1)
      assert.deepEqual(seqs(await store.readLog(0, 1_000_000)), [13, 14, 15, 16, 17])
      assert.deepEqual(await store.readLog(13, 2), whole.slice(13, 15), 'a rewritten row still reads from inside')
      // by age: everything committed before now, through the end
      assert.equal(await store.coordination.pruneLog({ through: 17, keepEntries: 1_000_000, keepSince: Date.now() + 1, limit: 1000 }), 5)
      assert.deepEqual(await store.readLog(0, 1_000_000), [])
      const [next] = await commitBatches(store, [1], 'after')
      assert.deepEqual(await store.readLog(0, 10), [{ seq: 18, at: (await store.readLog(0, 10))[0]!.at, change: next }], 'the numbering goes on')
    })
  })

  it('prunes many rows of one entry and a row of several in one call; by age, the rows committed before keepSince', async () => {
    await withStore(async (store) => {
      await commitBatches(store, [1, 1, 1, 1, 1, 6])
      const whole = await store.readLog(0, 1_000_000)
      assert.equal(await store.coordination.pruneLog({ through: 11, keepEntries: 0, keepSince: 0, limit: 7 }), 7)
      assert.deepEqual(await store.readLog(0, 1_000_000), whole.slice(7))
      // by age: the rows left are all younger than a minute
      assert.equal(await store.coordination.pruneLog({ through: 11, keepEntries: 1_000_000, keepSince: Date.now() - 60_000, limit: 1000 }), 0)
      assert.deepEqual(await store.readLog(0, 1_000_000), whole.slice(7))
      // rows committed before a moment go, the first one after it and all behind it stay
      const moment = Date.now()
      while (Date.now() <= moment); // the clock's next millisecond: the next commit's time is after `moment`
      await commitBatches(store, [2, 1], 'young')
      assert.equal(await store.coordination.pruneLog({ through: 14, keepEntries: 1_000_000, keepSince: moment + 1, limit: 1000 }), 4)
      assert.deepEqual(seqs(await store.readLog(0, 1_000_000)), [12, 13, 14])
    })
  })

  it('upgrades a version 5 file, one entry per row: its entries read back, new batches append after them, pruning goes through both', async () => {
    const dataDir = tempDir('iothub-log-rows-')
    try {
      // a version 5 file: batches of one change each (then one entry per row), and no entries column
      const first = new SqliteStore({ dataDir })
      const old = await commitBatches(first, [1, 1, 1], 'old')
      await first.close()
      const db = new Database(join(dataDir, 'iothub.db'))
      db.exec('ALTER TABLE change_log DROP COLUMN entries')
      db.pragma('user_version = 5')
      db.close()

      const upgraded = new SqliteStore({ dataDir })
      try {
        assert.deepEqual(
          (await upgraded.readLog(0, 100)).map((e) => e.change),
          old
        )
        const added = await commitBatches(upgraded, [4], 'new')
        const entries = await upgraded.readLog(0, 100)
        assert.deepEqual(seqs(entries), [1, 2, 3, 4, 5, 6, 7])
        assert.deepEqual(
          entries.map((e) => e.change),
          [...old, ...added]
        )
        assert.equal(await upgraded.coordination.pruneLog({ through: 7, keepEntries: 2, keepSince: 0, limit: 1000 }), 5)
        assert.deepEqual(await upgraded.readLog(0, 100), entries.slice(5))
      } finally {
        await upgraded.close()
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})
