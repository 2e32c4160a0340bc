/**
 * A push is stored with its change (embedded mode's publish journal): a hub that dies after the
 * change is committed and before the broker has routed its push publishes it at the next start,
 * so a persistent session that was offline still receives it; and pushes that were routed leave
 * nothing in the journal.
 *
 * The window between the commit and the routing is made wide, and certain, with a real lock: the
 * hub on PostgreSQL, another connection holding the broker's queue table (`outgoing`) locked, so
 * the push's enqueue for the offline session waits while the change itself commits; the hub is
 * then killed with SIGKILL (a child process, `node --import tsx src/main.ts`).
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import pg from 'pg'
import { startChildHub, type ChildHub } from './helpers/child-hub.js'
import { eventually, startTestHub, tempDir } from './helpers/hub.js'
import { createDatabase } from './helpers/postgres.js'

interface Created {
  id: string
  token: string
}

/** An mqtt.js client (never reconnecting) once its CONNACK came, with every message it receives from then. */
async function connect(url: string, options: IClientOptions, opened: MqttClient[]): Promise<{ client: MqttClient; received: string[] }> {
  const client = mqtt.connect(url, { protocolVersion: 4, connectTimeout: 5000, ...options, reconnectPeriod: 0 })
  opened.push(client)
  const received: string[] = []
  client.on('message', (_topic, payload) => received.push(payload.toString()))
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  client.on('error', () => undefined) // the hub going away is expected here
  return { client, received }
}

describe('pushes across a crash', () => {
  const opened: MqttClient[] = []
  const children: ChildHub[] = []
  after(async () => {
    await Promise.all(opened.map((c) => c.endAsync(true).catch(() => undefined)))
    await Promise.all(children.map((c) => c.kill('SIGKILL')))
  })

  it('a push whose change was stored is published at the next start when the hub died before routing it', async (t) => {
    const database = await createDatabase('iothub_push_journal')
    const dataDir = tempDir('iothub-push-journal-')
    t.after(async () => {
      await Promise.all(children.map((c) => c.kill('SIGKILL')))
      await database.drop()
      rmSync(dataDir, { recursive: true, force: true })
    })
    // a long store timeout: the push must still be waiting for its enqueue when the hub is killed
    const env = { IOTHUB_STORE: 'postgres', IOTHUB_DATABASE_URL: database.url, IOTHUB_STORE_TIMEOUT: '60000' }
    const first = await startChildHub(dataDir, { env })
    children.push(first)
    const created = await first.api<Created[]>('POST', '/v1/devices', [{ owner: 'journal' }])
    assert.equal(created.status, 201, JSON.stringify(created.body))
    const [device] = created.body as [Created]
    const login = { clientId: `journal-${device.id}`, clean: false, username: device.id, password: device.token }
    const subscriber = await connect(first.mqttUrl, login, opened)
    await subscriber.client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await subscriber.client.endAsync()
    await eventually(async () => (await first.api<{ connected: boolean }>('GET', `/v1/sessions/${login.clientId}`)).body.connected === false, 10_000, 'the subscriber offline')

    const locker = new pg.Client({ connectionString: database.url })
    await locker.connect()
    try {
      await locker.query('BEGIN')
      await locker.query('LOCK TABLE outgoing IN ACCESS EXCLUSIVE MODE')
      const patched = first.api('PATCH', `/v1/devices/${device.id}/attributes`, { mode: 'journaled' })
      patched.catch(() => undefined) // the hub dies before it answers
      // the change is committed, and its push waits to be queued for the offline session
      await eventually(
        async () => (await database.query<{ value: unknown }>("SELECT value FROM device_properties WHERE device_id = $1 AND name = 'attributes'", [device.id]))[0]?.value,
        15_000,
        'the change committed'
      )
      await eventually(
        async () => Number((await database.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", [database.name]))[0]!.n) > 0,
        15_000,
        "the push's enqueue waiting for the lock"
      )
      assert.equal((await database.query('SELECT seq FROM publish_journal')).length, 1, 'the push is journaled with its change')
      assert.equal((await first.kill('SIGKILL')).signal, 'SIGKILL')
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined)
      await locker.end()
    }
    assert.deepEqual((await database.query('SELECT client_id FROM outgoing')).length, 0, 'nothing was queued before the crash')

    const second = await startChildHub(dataDir, { env })
    children.push(second)
    const back = await connect(second.mqttUrl, login, opened)
    await eventually(() => back.received.length > 0, 15_000, 'the journaled push')
    assert.deepEqual(back.received.map((p) => JSON.parse(p) as unknown), [{ mode: 'journaled' }])
    await eventually(async () => (await database.query('SELECT seq FROM publish_journal')).length === 0, 10_000, 'the journal emptied once routed')
  })

  it('routed pushes, pushes to no one and refused changes leave nothing in the journal', async (t) => {
    const dataDir = tempDir('iothub-push-journal-')
    const hub = await startTestHub({}, dataDir)
    t.after(async () => {
      await hub.stop()
      rmSync(dataDir, { recursive: true, force: true })
    })
    const subscribed = await hub.createDevice()
    const unsubscribed = await hub.createDevice()
    const client = await hub.connect({ clientId: `routed-${subscribed.id}`, clean: false, username: subscribed.id, password: subscribed.token })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await client.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    const received: string[] = []
    client.on('message', (_topic, payload) => received.push(payload.toString()))

    for (let i = 0; i < 10; i++) {
      assert.equal((await hub.api('PATCH', `/v1/devices/${subscribed.id}/attributes`, { step: i })).status, 200)
      assert.equal((await hub.api('PATCH', `/v1/devices/${unsubscribed.id}/attributes`, { step: i })).status, 200)
    }
    const command = { id: 'cmd-1', name: 'reboot', params: {} }
    assert.equal((await hub.api('POST', `/v1/devices/${subscribed.id}/commands`, command)).status, 200)
    // sent already: nothing stored, nothing pushed
    assert.equal((await hub.api('POST', `/v1/devices/${subscribed.id}/commands`, command)).status, 409)
    assert.equal((await hub.api('PATCH', '/v1/devices/no-such-device/attributes', { step: 0 })).status, 404)
    const fleet = await hub.api<{ changed: number }>('PATCH', '/v1/devices/attributes', { ids: [subscribed.id, unsubscribed.id], attributes: { fleet: true } })
    assert.equal(fleet.status, 200, JSON.stringify(fleet.body))
    await eventually(() => received.length === 12, 10_000, 'every push to the subscriber')

    const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
    try {
      await eventually(() => (db.prepare('SELECT count(*) AS n FROM publish_journal').get() as { n: number }).n === 0, 10_000, 'the journal emptied')
    } finally {
      db.close()
    }
  })
})
