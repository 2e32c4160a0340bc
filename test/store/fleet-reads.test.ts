/**
 * The FleetReads contract (fleet-reads-contract.ts) against each implementation:
 * - the caches: a SQLite store's commits, handed back by its change log (`store.follow`) to a
 *   real SessionRegistry, TopicBook and SubscriptionBook through the hub's own cache applier,
 *   read by MemoryFleetReads — what an embedded hub answers from;
 * - PostgreSQL: the store's indexed queries (`store.fleet`), on a schema of its own per run.
 */
import { rmSync } from 'node:fs'
import pino from 'pino'
import { HubMetrics } from '../../src/observability/metrics.js'
import { cacheApplier } from '../../src/registry/cache-applier.js'
import { MemoryFleetReads } from '../../src/registry/memory-fleet-reads.js'
import { SessionRegistry } from '../../src/registry/registry.js'
import { SubscriptionBook } from '../../src/registry/subscription-book.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import type { Decider } from '../../src/store/decision.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'
import { fleetReadsContract } from './fleet-reads-contract.js'

/** The registry here only follows the log: it decides nothing. */
const NO_DECISIONS: Decider = {
  fromCaches: true,
  decide: () => Promise.reject(new Error('this registry only follows the change log'))
}

fleetReadsContract('caches of a SQLite store', async () => {
  const dataDir = tempDir('iothub-fleet-')
  const store = new SqliteStore({ dataDir })
  const registry = new SessionRegistry(NO_DECISIONS, new TopicBook(), new SubscriptionBook(), () => 'owner-1', new HubMetrics(), pino({ level: 'silent' }))
  const ignored = { applyChange: () => undefined }
  // the log hands this process's commits to the caches before `commit` resolves
  store.follow(0, cacheApplier({ registry, devices: ignored, properties: ignored }))
  return {
    reads: new MemoryFleetReads(registry, registry.topics, registry.subscriptions),
    commit: (mutations) => store.commit(mutations),
    close: async () => {
      await store.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
})
