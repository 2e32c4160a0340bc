/** A SQLite store of a test's own, in a fresh directory: loaded, and closed and removed after the test. */
import { rmSync } from 'node:fs'
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from './hub.js'

export async function openTestStore(
  t: { after: (fn: () => Promise<void> | void) => void },
  prefix: string,
  options: Partial<Omit<SqliteStoreOptions, 'dataDir'>> = {}
): Promise<SqliteStore> {
  const dataDir = tempDir(prefix)
  const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000, ...options })
  t.after(async () => {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  })
  await store.load()
  return store
}
