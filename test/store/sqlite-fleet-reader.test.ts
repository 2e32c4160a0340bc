/**
 * The SQLite store's start reads its fleet on a thread of its own (fleet-reader.ts): a table's
 * rows arrive in chunks, at most a few ahead of the loop taking them, and loops over several
 * tables may be interleaved, cut short or repeated.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { AHEAD, CHUNK } from '../../src/store/sqlite/fleet-read-protocol.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import type { Mutation } from '../../src/store/store.js'
import { tempDir } from '../helpers/hub.js'
import { session } from './contract.js'

/** More chunks of each table than the reader thread posts ahead of the loop taking them. */
const CLIENTS = (AHEAD + 2) * CHUNK + 100

describe('SqliteStore: the fleet read at start', () => {
  let dataDir: string
  let store: SqliteStore

  before(async () => {
    dataDir = tempDir('iothub-fleet-reader-')
    // the setup is one batch of ~40,000 writes: the default 5 s deadline is for live commits, and a
    // loaded machine (the writer thread starting, other tests beside it) can take longer than that
    store = new SqliteStore({ dataDir, synchronous: 'normal', timeoutMs: 120_000 })
    const mutations: Mutation[] = []
    for (let i = 0; i < CLIENTS; i++) {
      const id = `c-${String(i).padStart(5, '0')}`
      mutations.push({ op: 'session.put', session: session(id, { version: i }) })
      mutations.push({ op: 'topic.put', sessionId: id, subscription: { topic: `dev-${id}/v1/devices/me/attributes`, qos: 1 }, persistent: true })
    }
    await store.commit(mutations)
  })

  after(async () => {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('reads every row of a table of several chunks, as committed', async () => {
    const sessions = [...(await store.load()).sessions]
    assert.equal(sessions.length, CLIENTS)
    assert.deepEqual(sessions[CLIENTS - 1], session(`c-${String(CLIENTS - 1).padStart(5, '0')}`, { version: CLIENTS - 1 }))
    assert.deepEqual(
      sessions.map((s) => s.version),
      sessions.map((_, i) => i)
    )
  })

  it('serves loops over two tables taken in turns, each more chunks long than the reader runs ahead', async () => {
    const snapshot = await store.load()
    const topics = snapshot.topics[Symbol.iterator]()
    let pairs = 0
    for (const s of snapshot.sessions) {
      const t = topics.next()
      assert.ok(!t.done)
      assert.equal(t.value.sessionId, s.id)
      pairs++
    }
    assert.ok(topics.next().done)
    assert.equal(pairs, CLIENTS)
  })

  it('reads a table again after a loop over it stopped early', async () => {
    const snapshot = await store.load()
    let seen = 0
    for (const _ of snapshot.sessions) if (++seen === 10) break
    assert.equal([...snapshot.sessions].length, CLIENTS)
    // and after the reader thread stopped while this thread was idle
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal([...snapshot.topics].length, CLIENTS)
  })

  it('fails the loop with the reason when a table cannot be read', async () => {
    const other = new Database(join(dataDir, 'iothub.db'))
    other.exec('ALTER TABLE device_properties RENAME TO device_properties_away')
    try {
      const snapshot = await store.load()
      assert.throws(() => [...snapshot.deviceProperties], /reading deviceProperties failed: no such table: device_properties/)
      assert.equal([...snapshot.sessions].length, CLIENTS, 'the other tables are read as before')
    } finally {
      other.exec('ALTER TABLE device_properties_away RENAME TO device_properties')
      other.close()
    }
  })
})
