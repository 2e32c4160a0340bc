/**
 * When the store cannot write, the hub says so: the event is refused (CONNACK "server
 * unavailable"), the failure is logged and counted, /readyz turns 503 — and all of it
 * recovers once the store writes again. The failure is real: another process holds SQLite's
 * write lock on the hub's file.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { metricValue } from './helpers/metrics.js'

describe('store failure', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub({ storeBusyTimeout: 100 })
  })
  after(async () => {
    await t.stop()
  })

  it('refuses events, counts the failure, reports not ready, and recovers', async () => {
    const device = await t.createDevice()
    assert.equal((await t.api('GET', '/readyz', undefined, null)).status, 200)

    const locker = new Database(join(t.dataDir, 'iothub.db'))
    locker.exec('BEGIN IMMEDIATE')
    try {
      await assert.rejects(t.connect({ clientId: 'during-failure', username: device.id, password: device.token }), /Server unavailable/i)
      assert.equal((await t.api('GET', '/v1/sessions/during-failure')).status, 404, 'nothing half-applied')
      const ready = await t.api<{ status: string; checks: { store: { ok: boolean; detail: string } } }>('GET', '/readyz', undefined, null)
      assert.equal(ready.status, 503)
      assert.equal(ready.body.checks.store.ok, false)
      assert.match(ready.body.checks.store.detail, /locked/)
      const metrics = (await t.api<string>('GET', '/metrics', undefined, null)).body
      assert.match(metrics, /iothub_store_failures_total [1-9]/)
      assert.match(metrics, /iothub_rejected_inputs_total\{reason="store_unavailable"\} [1-9]/)
    } finally {
      locker.exec('ROLLBACK')
      locker.close()
    }

    const client = await t.connect({ clientId: 'after-failure', username: device.id, password: device.token })
    assert.equal((await t.api('GET', '/readyz', undefined, null)).status, 200)
    assert.equal((await t.api<{ connected: boolean }>('GET', '/v1/sessions/after-failure')).body.connected, true)
    await client.endAsync()
  })

  it('a client that disconnects while the store cannot write is gone at once, and its end is stored once it can', async () => {
    const device = await t.createDevice()
    const client = await t.connect({ clientId: 'leaves-during-failure', username: device.id, password: device.token, clean: true })
    const stored = (): unknown => {
      const reader = new Database(join(t.dataDir, 'iothub.db'), { readonly: true })
      try {
        return reader.prepare('SELECT id FROM sessions WHERE id = ?').get('leaves-during-failure')
      } finally {
        reader.close()
      }
    }
    assert.ok(stored(), 'connected: stored')
    const locker = new Database(join(t.dataDir, 'iothub.db'))
    locker.exec('BEGIN IMMEDIATE')
    try {
      await client.endAsync()
      await eventually(async () => (await t.api('GET', '/v1/sessions/leaves-during-failure')).status === 404 || undefined, 10_000, 'gone from the API at once')
      assert.equal(await metricValue(t.api, 'iothub_sessions_unstored_ends'), 1, 'its end waits for the store')
    } finally {
      locker.exec('ROLLBACK')
      locker.close()
    }
    await eventually(async () => (await metricValue(t.api, 'iothub_sessions_unstored_ends')) === 0 || undefined, 15_000, 'the end is stored')
    assert.equal(stored(), undefined, 'the SQLite file no longer holds the session')
  })
})

