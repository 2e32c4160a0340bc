/** The Store contract against SQLite, plus what only SQLite has: its file, WAL, lock failures. */
import { loadAll } from '../helpers/snapshot.js'
import assert from 'node:assert/strict'
import { rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { subscriptionEntityOf } from '../../src/domain/subscription.js'
import { SCHEMA_VERSION } from '../../src/store/sqlite/schema.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'
import { rewriteAsVersion3 } from '../helpers/sqlite-version-3.js'
import { session, storeContract } from './contract.js'

storeContract('sqlite', async () => {
  const dataDir = tempDir('iothub-store-')
  return {
    open: async (options = {}) =>
      new SqliteStore({
        dataDir,
        maxBatch: options.maxBatch,
        observer: options.onBatch ? { committed: (commits) => options.onBatch!(commits), failed: () => undefined } : undefined
      }),
    destroy: async () => rmSync(dataDir, { recursive: true, force: true })
  }
})

describe('SqliteStore', () => {
  it('keeps its data in one WAL-mode SQLite file', async () => {
    const dataDir = tempDir('iothub-store-')
    const store = new SqliteStore({ dataDir })
    await store.commit([{ op: 'retained.delete', topic: 'x' }])
    await store.close()
    const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal')
    db.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('keeps its WAL bounded while writes never pause: its checkpoints restart it', async () => {
    // With the writer never idle, the checkpointer thread's checkpoints cannot reach the WAL's
    // end, and only one that does lets the WAL start again from its beginning: without the
    // writer's own checkpoint the file would grow by everything written (here ~100 MB).
    const dataDir = tempDir('iothub-store-')
    const store = new SqliteStore({ dataDir })
    const wal = join(dataDir, 'iothub.db-wal')
    const padding = 'x'.repeat(2_000)
    let largest = 0
    let next = 0
    const writeOne = async (): Promise<void> => {
      const n = next++
      await store.commit(Array.from({ length: 10 }, (_, i) => ({ op: 'session.put' as const, session: session(`c-${(n * 10 + i) % 5_000}`, { username: `${padding}${n}` }) })))
      largest = Math.max(largest, statSync(wal).size)
      if (next < 2_500) await writeOne()
    }
    await Promise.all(Array.from({ length: 16 }, writeOne)) // 16 commits in flight at all times
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
    assert.ok(largest > 0, 'the WAL was written')
    assert.ok(largest < 16 * 1024 * 1024, `the WAL grew to ${(largest / 1024 / 1024).toFixed(1)} MiB`)
  })

  it('reports a failure in health() when another process holds the write lock, and recovers', async () => {
    const dataDir = tempDir('iothub-store-')
    const failures: Error[] = []
    const store = new SqliteStore({ dataDir, busyTimeoutMs: 50, observer: { committed: () => undefined, failed: (e) => failures.push(e) } })
    const other = new Database(join(dataDir, 'iothub.db'))
    other.exec('BEGIN IMMEDIATE')
    await assert.rejects(store.commit([{ op: 'retained.delete', topic: 'x' }]), /store commit failed: database is locked/)
    assert.equal(store.health().ok, false)
    assert.match(store.health().lastError ?? '', /locked/)
    assert.equal(failures.length, 1)
    other.exec('ROLLBACK')
    other.close()
    await store.commit([{ op: 'retained.delete', topic: 'x' }])
    // cleared by the commit; counted still, for a watcher that looks later (store-return.ts)
    assert.deepEqual(store.health(), { ok: true, lastError: null, failures: 1 })
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('refuses a commit at its deadline while the write lock is held, and does not commit it once the lock is let go', async (t) => {
    const dataDir = tempDir('iothub-store-')
    // a busy timeout far past the deadline: the refusal must come from the deadline
    const store = new SqliteStore({ dataDir, busyTimeoutMs: 60_000, timeoutMs: 1000 })
    const other = new Database(join(dataDir, 'iothub.db'))
    // closed whatever happens: a store left open keeps its writer thread, and the test process, alive
    t.after(async () => {
      if (other.open) {
        if (other.inTransaction) other.exec('ROLLBACK')
        other.close()
      }
      await store.close()
      rmSync(dataDir, { recursive: true, force: true })
    })
    // the writer thread has started (on a loaded machine that alone can take over the deadline):
    // its start-up is not what the deadline measures here
    await untilAnswered(() => store.probe())
    other.exec('BEGIN IMMEDIATE')
    const device = (id: string) => ({ id, name: id, owner: '', group: '', desc: '', ext: {}, tokenHash: 'x', createdAt: 0, updatedAt: 0 })
    const started = Date.now()
    await assert.rejects(store.commit([{ op: 'device.put', device: device('late') }]), /store did not answer within 1000 ms/)
    assert.ok(Date.now() - started < 30_000, 'refused at the deadline, not after the busy timeout')
    await assert.rejects(store.probe(), /store did not answer within 1000 ms/)
    assert.equal(store.health().ok, false)
    // the writer thread is still waiting for the lock with the refused batch: let it have it
    other.exec('ROLLBACK')
    other.close()
    // the writer first finishes the refused batch (its busy handler polls for the lock): on a
    // loaded machine that can outlast the 1 s deadline, so a commit refused meanwhile is tried
    // again — a refused commit is rolled back, which is what this test checks of the first
    await untilAnswered(() => store.commit([{ op: 'device.put', device: device('after') }]))
    await untilAnswered(() => store.probe())
    const { ok, lastError, failures } = store.health()
    assert.deepEqual({ ok, lastError }, { ok: true, lastError: null })
    // the refused commit and probe at least (retries on a loaded machine add more)
    assert.ok(failures >= 2, `failures counted: ${failures}`)
    assert.deepEqual((await loadAll(store)).devices.map((d) => d.id), ['after'], 'the refused batch was rolled back, not committed late')
  })

  it('refuses a data file written by a newer schema version', async () => {
    const dataDir = tempDir('iothub-store-')
    const db = new Database(join(dataDir, 'iothub.db'))
    db.pragma('user_version = 99')
    db.close()
    assert.throws(() => new SqliteStore({ dataDir }), /schema version 99/)
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('upgrades a version 1 file in place: new tables, and its sessions’ topics mounted under their device', async () => {
    const dataDir = tempDir('iothub-store-')
    const v1 = new SqliteStore({ dataDir })
    await v1.close()
    // make it what issue 2's hub wrote: sessions as documents, no subscription or property tables, no mountpoint
    const db = new Database(join(dataDir, 'iothub.db'))
    rewriteAsVersion3(db)
    db.exec('DROP TABLE subscriptions; DROP TABLE device_properties')
    db.prepare('INSERT INTO sessions (id, doc) VALUES (?, ?)').run('old', JSON.stringify({ id: 'old', clientId: 'old', deviceId: 'dev-1' }))
    const topic = db.prepare('INSERT INTO topics (session_id, topic, qos, persistent) VALUES (?, ?, 1, 1)')
    topic.run('old', 'v1/devices/me/attributes')
    topic.run('old', '$SYS/whatever')
    db.prepare('INSERT INTO sessions (id, doc) VALUES (?, ?)').run('wild', JSON.stringify({ id: 'wild', clientId: 'wild', deviceId: '+' }))
    topic.run('wild', 'v1/devices/me/attributes')
    db.pragma('user_version = 1')
    db.close()

    const upgraded = new SqliteStore({ dataDir })
    const snapshot = await loadAll(upgraded)
    const mountpoints = Object.fromEntries(snapshot.sessions.map((x) => [x.id, x.mountpoint]))
    assert.deepEqual(mountpoints, { old: 'dev-1/', wild: '' }, 'a device id that cannot name a namespace is not mounted')
    assert.deepEqual(snapshot.topics.map((t) => `${t.sessionId} ${t.subscription.topic}`).sort(), ['old $SYS/whatever', 'old dev-1/v1/devices/me/attributes', 'wild v1/devices/me/attributes'])
    await upgraded.commit([{ op: 'device.property', deviceId: 'dev-1', name: 'attributes', value: {}, updatedAt: 1 }])
    await upgraded.close()
    const check = new Database(join(dataDir, 'iothub.db'), { readonly: true })
    assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION)
    check.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('upgrades a version 3 file in place: sessions and subscription entities become columns, read back equal', async () => {
    const dataDir = tempDir('iothub-store-')
    const store = new SqliteStore({ dataDir })
    const entity = (sessionId: string, deviceTopic: string, at: number) => {
      const made = subscriptionEntityOf(session(sessionId), 'owner-1', `dev-${sessionId}/${deviceTopic}`, at)
      assert.ok(made)
      return made
    }
    // an entity as this hub makes it (broker topic and filter follow from its fields), one of
    // four properties, and one whose broker topic and filter do not follow (made elsewhere)
    const made = entity('a', 'v1/devices/me/attributes', 1)
    const everything = entity('b', 'v1/devices/me/#', 2)
    const foreign = { ...entity('c', 'v1/devices/me/telemetry', 3), brokerTopic: 'elsewhere/v1/devices/me/telemetry', filter: 'insert into x select y' }
    await store.commit([
      { op: 'session.put', session: session('a') },
      { op: 'session.put', session: session('b', { username: null, peerHost: null, peerPort: null, sockPort: null, cleanStart: true, expiryInterval: 0 }) },
      { op: 'session.put', session: session('c', { protocol: 'coap', clientId: 'c', deviceId: 'dev-c', connected: false, disconnectedAt: 1_700_000_100_000, disconnectReason: 'keepalive_timeout' }) },
      { op: 'session.version', id: 'c', version: 7 },
      { op: 'subscription.put', subscription: made },
      { op: 'subscription.put', subscription: everything },
      { op: 'subscription.put', subscription: foreign }
    ])
    const before = await loadAll(store)
    assert.equal(before.sessions.length, 3)
    assert.deepEqual(before.sessions.find((s) => s.id === 'c')?.version, 7)
    assert.deepEqual(sortById(before.subscriptions), sortById([made, everything, foreign]), 'read back as written')
    await store.close()

    const db = new Database(join(dataDir, 'iothub.db'))
    // written compactly: what follows from an entity's other fields is not stored
    const stored = db.prepare('SELECT id, broker_topic, filter FROM subscriptions ORDER BY id').raw().all()
    assert.deepEqual(
      stored,
      [made, everything, foreign].map((e) => [e.id, e === foreign ? e.brokerTopic : null, e === foreign ? e.filter : null]).sort((x, y) => (x[0]! < y[0]! ? -1 : 1))
    )
    rewriteAsVersion3(db)
    db.close()

    const upgraded = new SqliteStore({ dataDir })
    const after = await loadAll(upgraded)
    assert.deepEqual(sortById(after.sessions), sortById(before.sessions))
    assert.deepEqual(sortById(after.subscriptions), sortById(before.subscriptions))
    assert.deepEqual(await upgraded.readSession('b'), before.sessions.find((s) => s.id === 'b'))
    // and written to as today's file
    await upgraded.commit([{ op: 'session.version', id: 'a', version: 9 }, { op: 'subscription.delete', id: made.id }])
    assert.equal((await upgraded.readSession('a'))?.version, 9)
    assert.equal((await loadAll(upgraded)).subscriptions.length, 2)
    await upgraded.close()
    const check = new Database(join(dataDir, 'iothub.db'), { readonly: true })
    assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION)
    assert.deepEqual(check.prepare("SELECT name FROM pragma_table_info('sessions') WHERE name IN ('doc', 'incarnation')").pluck().all(), ['incarnation'])
    assert.equal(check.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'subscriptions_by_session'").pluck().get(), 1)
    check.close()
    rmSync(dataDir, { recursive: true, force: true })
  })
})

const sortById = <T extends { id: string }>(items: readonly T[]): T[] => [...items].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))

/**
 * Runs `attempt` until the store answers it within its deadline (a StoreTimeoutError is tried
 * again), for at most a minute: a store that never answers fails the test rather than hanging it.
 */
async function untilAnswered<T>(attempt: () => Promise<T>): Promise<T> {
  const giveUpAt = Date.now() + 60_000
  for (;;) {
    try {
      return await attempt()
    } catch (error) {
      if (!(error instanceof Error && /store did not answer within/.test(error.message)) || Date.now() > giveUpAt) throw error
    }
  }
}
