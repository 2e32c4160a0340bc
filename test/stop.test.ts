/**
 * A graceful stop (SIGTERM, hub.stop()) with clients still connected records every
 * connection's end before the store closes: clean sessions are gone, persistent ones are
 * offline with reason server_shutdown — read straight from the store, not through a restart,
 * which would otherwise repair what the stop left undone.
 */
import { loadAll } from './helpers/snapshot.js'
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import { Hub } from '../src/hub.js'
import { createLogger } from '../src/observability/logger.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import { apiClient } from './helpers/api-client.js'
import { connectClient, tempDir, testConfig } from './helpers/hub.js'

describe('graceful stop', () => {
  it('records the end of every connection still open before it closes the store', async () => {
    const dataDir = tempDir('iothub-stop-')
    const config = testConfig(dataDir)
    const hub = new Hub(config, { log: createLogger(config.logLevel) })
    const { mqtt, http } = await hub.start()
    const api = apiClient(`http://127.0.0.1:${http.port}`)
    const devices = (await api<{ id: string; token: string }[]>('POST', '/v1/devices', [{}, {}])).body
    const url = `mqtt://127.0.0.1:${mqtt!.port}`
    const clients = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        connectClient(url, { clientId: `stop-${i}`, clean: i % 2 === 0, username: devices[i % 2]!.id, password: devices[i % 2]!.token })
      )
    )
    await Promise.all(clients.map((c, i) => c.subscribeAsync(`stop/${i}`, { qos: 1 })))
    const stoppedAt = Date.now()
    await hub.stop() // the clients are still connected

    const store = new SqliteStore({ dataDir })
    try {
      const { sessions, topics } = await loadAll(store)
      assert.deepEqual(sessions.map((s) => s.id).sort(), ['stop-1', 'stop-3', 'stop-5', 'stop-7', 'stop-9'], 'clean sessions ended')
      for (const s of sessions) {
        assert.equal(s.connected, false, `${s.id} is offline`)
        assert.equal(s.disconnectReason, 'server_shutdown')
        assert.ok(s.disconnectedAt !== null && s.disconnectedAt >= stoppedAt && s.disconnectedAt <= Date.now())
      }
      assert.equal(topics.length, 5, 'persistent sessions keep their topics, clean ones lost theirs')
    } finally {
      await store.close()
      await Promise.all(clients.map((c) => c.endAsync(true)))
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})
