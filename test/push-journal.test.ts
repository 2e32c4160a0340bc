/**
 * A push is stored with its change (src/devices/push-journal.ts): a hub that dies after the
 * change is committed and before the broker has routed its push publishes it at the next start,
 * so a persistent session that was offline still receives it; and pushes that were routed leave
 * nothing in the journal.
 *
 * The window between the commit and the routing is made wide, and certain, with a real lock: the
 * hub on PostgreSQL, another connection holding the broker's queue table (`outgoing`) locked, so
 * the push's enqueue for the offline session waits while the change itself commits; the hub is
 * then killed with SIGKILL (a child process, `node --import tsx src/main.ts`).
 *
 * EMQX mode's side is in push-journal-emqx.test.ts (pushes EMQX refused) and
 * push-journal-emqx-commands.test.ts (commands in order): in one file with these, the tests took
 * 157 s of the runner's 180 s per file in one CI run, and went over it in the next.
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
import { metricValue } from './helpers/metrics.js'
import { createDatabase } from './helpers/postgres.js'
import type { DeviceProperties } from '../src/devices/device-properties.js'
import type { BrokerMessage, Dispatcher } from '../src/devices/dispatcher.js'
import { DownstreamChanges, type PushOutcome } from '../src/devices/downstream-changes.js'
import { LatePushes } from '../src/devices/late-pushes.js'
import { PushJournal } from '../src/devices/push-journal.js'
import { createLogger } from '../src/observability/logger.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import type { StoredPush } from '../src/store/store.js'

interface Created {
  id: string
  token: string
}

/** An mqtt.js client (never reconnecting) once its CONNACK came, with every message it received, from before the CONNACK (as `topic payload` with `withTopic`). */
async function connect(url: string, options: IClientOptions, opened: MqttClient[], withTopic = false): Promise<{ client: MqttClient; received: string[] }> {
  const client = mqtt.connect(url, { protocolVersion: 4, connectTimeout: 5000, ...options, reconnectPeriod: 0 })
  opened.push(client)
  const received: string[] = []
  client.on('message', (topic, payload) => received.push(withTopic ? `${topic} ${payload.toString()}` : payload.toString()))
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve())
    client.once('error', reject)
  })
  client.on('error', () => undefined) // the hub going away is expected here
  return { client, received }
}

/**
 * The SQLite store of a stopped hub's `dataDir`, loaded, and a journal of pushes in it: to write
 * what a run leaves behind (a change's transaction with its push's record, no removal).
 */
async function stoppedHubJournal(dataDir: string): Promise<{ store: SqliteStore; journal: PushJournal }> {
  const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000 })
  await store.load()
  return { store, journal: new PushJournal(store, createLogger('silent')) }
}

/** Waits until the hub's SQLite file (in `dataDir`) holds no push record. */
async function journalEmptied(dataDir: string, what: string): Promise<void> {
  const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
  try {
    await eventually(() => (db.prepare('SELECT count(*) AS n FROM push_journal').get() as { n: number }).n === 0, 10_000, what)
  } finally {
    db.close()
  }
}

describe('pushes across a crash', () => {
  const opened: MqttClient[] = []
  const children: Pick<ChildHub, 'kill'>[] = []
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
      assert.equal((await database.query('SELECT seq FROM push_journal')).length, 1, 'the push is journaled with its change')
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
    await eventually(async () => (await database.query('SELECT seq FROM push_journal')).length === 0, 10_000, 'the journal emptied once routed')
  })

  it('on SQLite: a push a previous run stored with its change and did not route reaches the subscribed session, as the hub', async (t) => {
    const dataDir = tempDir('iothub-push-journal-')
    t.after(() => rmSync(dataDir, { recursive: true, force: true }))
    const first = await startTestHub({}, dataDir)
    const device = await first.createDevice()
    const clientId = `pushed-${device.id}`
    const persistent = await first.connect({ clientId, clean: false, username: device.id, password: device.token })
    await persistent.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await persistent.endAsync()
    await first.hub.stop()

    // what a crash between a change's commit and its push's routing leaves: the change's
    // transaction with the push's record, as the dispatcher makes it, and no removal
    const { store, journal } = await stoppedHubJournal(dataDir)
    const record = journal.record({
      topic: `${device.id}/v1/devices/me/attributes`,
      payload: Buffer.from('{"mode":"replayed"}'),
      qos: 1,
      retain: false
    })
    await store.commit([{ op: 'device.property', deviceId: device.id, name: 'attributes', value: { mode: 'replayed' }, updatedAt: Date.now() }, record.mutation])
    await store.close()

    const second = await startTestHub({}, dataDir)
    t.after(() => second.stop())
    // listening from before the CONNACK: the queued push may come in the same read
    const { received } = await connect(second.mqttUrl, { clientId, clean: false, username: device.id, password: device.token }, opened, true)
    await eventually(() => received.length > 0, 10_000, 'the stored push')
    assert.deepEqual(received, ['v1/devices/me/attributes {"mode":"replayed"}'])
    await journalEmptied(dataDir, 'its record removed')
  })

  it('a late attributes push says the values stored now; one whose keys the device no longer has is not published', async (t) => {
    const dataDir = tempDir('iothub-push-journal-')
    t.after(() => rmSync(dataDir, { recursive: true, force: true }))
    const first = await startTestHub({}, dataDir)
    const [changed, emptied] = [await first.createDevice(), await first.createDevice()]
    const logins = [changed, emptied].map((d) => ({ clientId: `late-${d.id}`, clean: false, username: d.id, password: d.token }))
    for (const login of logins) {
      const client = await first.connect(login)
      await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
      await client.subscribeAsync('v1/devices/me/commands', { qos: 1 })
      await client.endAsync()
    }
    await first.hub.stop()

    // what a run leaves when its broker refused a push and took a later one of the same device
    // (EMQX back in between): the first change's record, then a second change routed at once
    const { store, journal } = await stoppedHubJournal(dataDir)
    const record = (id: string, topic: string, payload: string) => journal.record({ topic: `${id}/v1/devices/me/${topic}`, payload: Buffer.from(payload), qos: 1, retain: false }).mutation
    const attributes = (id: string, value: object) => ({ op: 'device.property' as const, deviceId: id, name: 'attributes', value, updatedAt: Date.now() })
    await store.commit([attributes(changed.id, { mode: 'eco', fan: 1 }), record(changed.id, 'attributes', '{"mode":"eco","fan":1}')])
    await store.commit([record(changed.id, 'commands', '{"id":"c1","name":"reboot","params":{}}')])
    await store.commit([attributes(changed.id, { mode: 'turbo', fan: 1 })])
    // the device's attributes gone since (the device deleted and made again, say)
    await store.commit([record(emptied.id, 'attributes', '{"mode":"eco"}')])
    await store.close()

    const second = await startTestHub({}, dataDir)
    t.after(() => second.stop())
    const [back, other] = [await connect(second.mqttUrl, logins[0]!, opened, true), await connect(second.mqttUrl, logins[1]!, opened, true)]
    await eventually(() => back.received.length === 2, 10_000, 'the left pushes')
    assert.deepEqual(back.received, ['v1/devices/me/attributes {"mode":"turbo","fan":1}', 'v1/devices/me/commands {"id":"c1","name":"reboot","params":{}}'])
    // whatever the start published came before this change's push
    assert.equal((await second.api('PATCH', `/v1/devices/${emptied.id}/attributes`, { marker: 1 })).status, 200)
    await eventually(() => other.received.length > 0, 10_000, 'the marker push')
    assert.deepEqual(other.received, ['v1/devices/me/attributes {"marker":1}'])
    await journalEmptied(dataDir, 'every left record removed')
  })

  it('a command an earlier run left, older than IOTHUB_COMMAND_EXPIRY, is dropped at the next start, unpublished; a younger one is published', async (t) => {
    const dataDir = tempDir('iothub-push-journal-')
    t.after(() => rmSync(dataDir, { recursive: true, force: true }))
    const expirySeconds = 60
    const first = await startTestHub({ commandExpiry: expirySeconds }, dataDir)
    const device = await first.createDevice()
    const login = { clientId: `expiry-${device.id}`, clean: false, username: device.id, password: device.token }
    const client = await first.connect(login)
    await client.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    await client.endAsync()
    await first.hub.stop()

    // what a run leaves when it dies before its commands were routed: one recorded two minutes
    // ago (by its clock), one just now
    const { store, journal } = await stoppedHubJournal(dataDir)
    const now = Date.now()
    const staleAt = now - 2 * expirySeconds * 1000
    const push = (name: string, at: number) => {
      const { mutation } = journal.record({ topic: `${device.id}/v1/devices/me/commands`, payload: Buffer.from(`{"id":"${name}","name":"${name}"}`), qos: 1, retain: false })
      assert.equal(mutation.op, 'push.put')
      return mutation.op === 'push.put' ? { ...mutation, push: { ...mutation.push, at } } : mutation
    }
    // the commands as the API stored them with their pushes, sent when those were recorded
    const sent = (name: string, at: number) => ({ id: name, name, status: 'sent', sentAt: at * 1e6 })
    await store.commit([
      { op: 'device.property', deviceId: device.id, name: 'commands', value: { stale: sent('stale', staleAt), fresh: sent('fresh', now) }, updatedAt: now },
      push('stale', staleAt),
      push('fresh', now)
    ])
    await store.close()

    const second = await startTestHub({ commandExpiry: expirySeconds }, dataDir)
    t.after(() => second.stop())
    const { received } = await connect(second.mqttUrl, login, opened, true)
    await eventually(() => received.length > 0, 10_000, 'the younger command')
    await journalEmptied(dataDir, 'both records removed')
    assert.equal(await metricValue(second.api, 'iothub_pushes_total{property="commands",outcome="expired"}'), 1)
    // queued for the session in their order: the stale one, had it been published, would have come first
    assert.deepEqual(received, ['v1/devices/me/commands {"id":"fresh","name":"fresh"}'])
    const commands = (await second.api<{ properties: { commands: Record<string, { status: string }> } }>('GET', `/v1/devices/${device.id}`)).body.properties.commands
    assert.deepEqual([commands.stale?.status, commands.fresh?.status], ['expired', 'sent'])
  })

  it("a late attributes push takes its device's turn: a change asked for meanwhile is stored and pushed after it", async (t) => {
    const dataDir = tempDir('iothub-push-journal-')
    const hub = await startTestHub({}, dataDir)
    t.after(async () => {
      await hub.stop()
      rmSync(dataDir, { recursive: true, force: true })
    })
    const device = await hub.createDevice()
    assert.equal((await hub.api('PATCH', `/v1/devices/${device.id}/attributes`, { mode: 'eco' })).status, 200)
    const { client, received } = await connect(hub.mqttUrl, { clientId: `turn-${device.id}`, username: device.id, password: device.token }, opened)
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    const inside = hub.hub as unknown as { properties: DeviceProperties; dispatcher: Dispatcher; broker: { publish(message: BrokerMessage): Promise<void> } }
    const late = new LatePushes(inside.properties, createLogger('silent'))
    const push: StoredPush = { run: 'earlier', seq: 1, topic: `${device.id}/v1/devices/me/attributes`, payload: Buffer.from('{"mode":"old"}'), qos: 1, at: 0 }

    // the late push's publish is held (a slow broker): a change of the device asked for meanwhile
    // must wait for it. Were it not to, its push would come first, and the late one's older value
    // after it; the hold ends then, or after 1.5 s at the latest.
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    const livePushed = new Promise<void>((resolve) => client.once('message', () => resolve()))
    void Promise.race([livePushed, new Promise((resolve) => setTimeout(resolve, 1500))]).then(() => release())
    const sent = late.send(push, async (message) => {
      await held
      await inside.broker.publish(message)
    })
    const changes = new DownstreamChanges(inside.properties, inside.dispatcher)
    const live = changes.mergeAttributes(device.id, { mode: 'turbo' }, Buffer.from('{"mode":"turbo"}'))
    assert.equal(await sent, true)
    assert.deepEqual((await live).pushedTo, [`turn-${device.id}`])
    await eventually(() => received.length === 2, 10_000, 'both pushes')
    // the late push says the value stored when its turn came, and the live change's comes last
    assert.deepEqual(received, ['{"mode":"eco"}', '{"mode":"turbo"}'])
  })

  it('a push made while the hub stops, after its broker closed, is kept and reaches the session once, at the next start', async (t) => {
    const dataDir = tempDir('iothub-push-journal-')
    t.after(() => rmSync(dataDir, { recursive: true, force: true }))
    const first = await startTestHub({}, dataDir)
    const device = await first.createDevice()
    const login = { clientId: `late-${device.id}`, clean: false, username: device.id, password: device.token }
    const client = await first.connect(login)
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await client.endAsync()
    await eventually(async () => (await first.api<{ connected: boolean }>('GET', `/v1/sessions/${login.clientId}`)).body.connected === false, 10_000, 'offline')
    // a change whose push comes after the broker closed (an API request still running as the hub
    // stops): Aedes would queue it for the offline session and then fail, and the kept push would
    // come a second time
    const hub = first.hub as unknown as { carrier: { stop(): Promise<void> }; properties: DeviceProperties; dispatcher: Dispatcher }
    const changes = new DownstreamChanges(hub.properties, hub.dispatcher)
    const stopCarrier = hub.carrier.stop.bind(hub.carrier)
    let late: PushOutcome | undefined
    hub.carrier.stop = async () => {
      await stopCarrier()
      late = await changes.mergeAttributes(device.id, { late: true }, Buffer.from('{"late":true}'))
    }
    await first.hub.stop()
    assert.match(late?.pushError ?? '', /^stored, not pushed: /, JSON.stringify(late))

    const second = await startTestHub({}, dataDir)
    t.after(() => second.stop())
    const { received } = await connect(second.mqttUrl, login, opened)
    await eventually(() => received.length > 0, 10_000, 'the kept push')
    const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
    try {
      await eventually(() => (db.prepare('SELECT count(*) AS n FROM push_journal').get() as { n: number }).n === 0, 10_000, 'its record removed')
      // everything queued for the session has been sent by now: a second copy would be here
      await eventually(() => (db.prepare('SELECT count(*) AS n FROM outgoing').get() as { n: number }).n === 0, 10_000, 'the queue acknowledged')
    } finally {
      db.close()
    }
    assert.deepEqual(received, ['{"late":true}'])
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

    await journalEmptied(dataDir, 'the journal emptied')
    // nothing pushed twice: 10 patches, the command and the fleet push, each once
    assert.equal(received.length, 12, JSON.stringify(received))
  })
})
