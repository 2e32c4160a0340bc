/**
 * aedes-persistence's own abstract test suite — the conformance suite every Aedes persistence
 * must pass — run against our persistence on a real SQLite store, one fresh file per test.
 */
import { rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { test } from 'node:test'
import { StoreAedesPersistence } from '../../src/brokers/embedded/aedes-persistence.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'

type AbstractSuite = (options: { test: typeof test; persistence: () => Promise<unknown>; testAsync: boolean }) => void
const abstractPersistence = createRequire(import.meta.url)('aedes-persistence/abstract.js') as AbstractSuite

abstractPersistence({
  test,
  testAsync: true,
  persistence: async () => {
    const dataDir = tempDir('iothub-aedes-persistence-')
    const store = new SqliteStore({ dataDir })
    return new StoreAedesPersistence(store, new TopicBook(), {
      onDestroy: async () => {
        await store.close()
        rmSync(dataDir, { recursive: true, force: true })
      }
    })
  }
})
