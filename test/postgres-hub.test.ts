/**
 * The whole hub on PostgreSQL (IOTHUB_STORE=postgres), as `npm start` opens it (Hub.open): a
 * database of its own per test file, on the machine's PostgreSQL (127.0.0.1:5432, trust auth;
 * IOTHUB_TEST_DATABASE_URL overrides the server). Embedded mode across a restart, and EMQX
 * mode — where several hub replicas would share this store — across a restart.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { startEmqxTestHub } from './helpers/emqx-hub.js'
import { eventually, startTestHub, tempDir } from './helpers/hub.js'
import { databaseUrl as databaseUrlOf, onServer } from './helpers/postgres.js'

const DATABASE = `iothub_hub_test_${process.pid}`
const databaseUrl = (): string => databaseUrlOf(DATABASE)

describe('the hub on PostgreSQL', () => {
  before(() => onServer(`CREATE DATABASE ${DATABASE}`))
  after(() => onServer(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`))

  it('embedded mode: a persistent session, its entity and a queued message survive a restart', async () => {
    const store = { store: 'postgres' as const, databaseUrl: databaseUrl() }
    const dataDir = tempDir()
    const first = await startTestHub(store, dataDir)
    const device = await first.createDevice({ id: 'pg-device' })
    const client = await first.connect({ clientId: 'pg-device', username: device.id, password: device.token, clean: false })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await client.endAsync()
    await eventually(async () => (await first.api<{ connected: boolean }>('GET', '/v1/sessions/pg-device')).body.connected === false, 3000, 'offline')
    assert.equal((await first.api<{ pushedTo: string[] }>('PATCH', '/v1/devices/pg-device/attributes', { mode: 'eco' })).body.pushedTo.length, 1)
    await first.hub.stop()

    const second = await startTestHub(store, dataDir)
    try {
      const session = (await second.api<{ connected: boolean; topics: unknown[] }>('GET', '/v1/sessions/pg-device')).body
      assert.deepEqual([session.connected, session.topics.length], [false, 1])
      const returning = await second.connect({ clientId: 'pg-device', username: device.id, password: device.token, clean: false })
      const received = await new Promise<string>((resolve) => returning.on('message', (_topic, payload) => resolve(payload.toString())))
      assert.deepEqual(JSON.parse(received), { mode: 'eco' }, 'the push queued while offline is delivered from PostgreSQL')
    } finally {
      await second.stop()
    }
  })

  it('embedded mode lists every device, however many more than IOTHUB_CACHE_DEVICES, before and after a restart', async () => {
    // the embedded broker holds the fleet: its device listing is read from memory, which must
    // then hold every device, not the last IOTHUB_CACHE_DEVICES used (an EMQX-mode replica's
    // cache); past 100,000 devices: test/registry/device-directory.test.ts
    const overrides = { store: 'postgres' as const, databaseUrl: databaseUrl(), cacheDevices: 100 }
    const dataDir = tempDir()
    const ids = Array.from({ length: 130 }, (_, i) => `many-${String(i).padStart(3, '0')}`)
    const listed = async (hub: Awaited<ReturnType<typeof startTestHub>>): Promise<string[]> => {
      const seen: string[] = []
      let cursor: string | null = null
      do {
        const page: { data: { id: string }[]; next: string | null } = (await hub.api<{ data: { id: string }[]; next: string | null }>('GET', `/v1/devices?q=many-&limit=50${cursor ? `&cursor=${cursor}` : ''}`)).body
        seen.push(...page.data.map((d) => d.id))
        cursor = page.next
      } while (cursor !== null)
      return seen.sort()
    }
    const first = await startTestHub(overrides, dataDir)
    try {
      const created = await first.api('POST', '/v1/devices', ids.map((id) => ({ id, owner: 'many' })))
      assert.equal(created.status, 201, JSON.stringify(created.body))
      assert.deepEqual(await listed(first), ids)
    } finally {
      await first.hub.stop()
    }
    const second = await startTestHub(overrides, dataDir)
    try {
      assert.deepEqual(await listed(second), ids, 'every stored device is loaded at start')
    } finally {
      await second.stop()
    }
  })

  it('EMQX mode: sessions and entities recorded from hooks survive a restart', async () => {
    const overrides = { store: 'postgres' as const, databaseUrl: databaseUrl() }
    const first = await startEmqxTestHub({ version: 5, overrides })
    const { standin, dataDir } = first
    await first.createDevice('pg-emqx')
    standin.addClient({ clientid: 'pg-emqx', username: 'pg-emqx', ipAddress: '127.0.0.1', port: 3001, mountpoint: 'pg-emqx/' })
    standin.subscribe('pg-emqx', 'pg-emqx/v1/devices/me/attributes', 1)
    const base = { node: 'emqx@127.0.0.1', clientid: 'pg-emqx', username: 'pg-emqx' }
    await first.webhook({ event: 'client.connected', ...base, peername: '127.0.0.1:3001', mountpoint: 'pg-emqx/' })
    await first.webhook({ event: 'session.subscribed', ...base, peerhost: '127.0.0.1', topic: 'pg-emqx/v1/devices/me/attributes', qos: 1 })
    await first.stop({ keepData: true, keepStandin: true })

    const second = await startEmqxTestHub({ version: 5, overrides, standin, dataDir })
    try {
      const report = (await second.api<{ ghostsEnded: number; sessionsAdded: number; topicsAdded: number }>('GET', '/v1/reconcile/last')).body
      assert.deepEqual([report.ghostsEnded, report.sessionsAdded, report.topicsAdded], [0, 0, 0], 'nothing to fix: the store kept it all')
      const entities = (await second.api<{ data: { sessionId: string }[] }>('GET', '/v1/subscriptions?deviceId=pg-emqx')).body.data
      assert.deepEqual(entities.map((e) => e.sessionId), ['pg-emqx'])
    } finally {
      await second.stop()
    }
  })
})
