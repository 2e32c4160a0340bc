/**
 * Restart, as the README promises it: after a graceful stop and after `kill -9`, the hub comes
 * back with no ghost connections, the clean sessions of the previous run ended, the persistent
 * ones offline with their topics; a persistent client that returns finds its subscriptions in
 * place and the QoS 1 messages queued while it was away; retained messages are still there.
 *
 * Real mqtt.js clients against a real hub: in this process for the graceful stop, in a child
 * process (`node --import tsx src/main.ts`) for `kill -9`.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import Database from 'better-sqlite3'
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt'
import { Hub } from '../src/hub.js'
import { createLogger } from '../src/observability/logger.js'
import { apiClient, startChildHub, type ApiCall, type ChildHub } from './helpers/child-hub.js'
import { eventually, superuserLogin, tempDir, testConfig } from './helpers/hub.js'

/** Clean and persistent clients each, before the restart (plus one offline client and a publisher). */
const PER_KIND = 30

interface ApiSession {
  id: string
  clientId: string
  deviceId: string
  connected: boolean
  cleanStart: boolean
  disconnectedAt: string | null
  disconnectReason: string | null
  topics: { topic: string; brokerTopic: string; qos: number }[]
}

interface Page<T> {
  data: T[]
  next: string | null
}

/** A hub reachable over MQTT and HTTP. */
interface RunningHub {
  mqttUrl: string
  api: ApiCall
}

/** Starts hubs on one data dir, one after the other, and takes the running one down. */
interface HubRunner {
  /** Whether the running hub records its sessions' end when taken down (else the next start does). */
  readonly recordsEndAtTakeDown: boolean
  start(): Promise<RunningHub>
  /** Graceful stop, or kill -9: what the restart is "after". */
  takeDown(): Promise<void>
  /** Leaves nothing running and removes the data dir; safe to call in any state. */
  dispose(): Promise<void>
}

/** Hubs in this process; `takeDown` is `hub.stop()`, the graceful stop. */
function inProcessRunner(dataDir: string): HubRunner {
  let hub: Hub | undefined
  return {
    recordsEndAtTakeDown: true,
    async start() {
      const config = testConfig(dataDir)
      hub = new Hub(config, { log: createLogger(config.logLevel) })
      const { mqtt: mqttAddress, http } = await hub.start()
      return { mqttUrl: `mqtt://127.0.0.1:${mqttAddress!.port}`, api: apiClient(`http://127.0.0.1:${http.port}`) }
    },
    async takeDown() {
      await hub!.stop()
      hub = undefined
    },
    async dispose() {
      await hub?.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

/** Hubs in child processes; `takeDown` is SIGKILL: no stop code runs. */
function childProcessRunner(dataDir: string): HubRunner {
  let child: ChildHub | undefined
  return {
    recordsEndAtTakeDown: false,
    async start() {
      child = await startChildHub(dataDir)
      return child
    },
    async takeDown() {
      const exit = await child!.kill('SIGKILL')
      assert.equal(exit.signal, 'SIGKILL', `the hub was still running when killed (exit ${JSON.stringify(exit)})`)
      child = undefined
    },
    async dispose() {
      await child?.kill('SIGKILL')
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

interface Connected {
  client: MqttClient
  connack: IConnackPacket
  /** Every PUBLISH this client received, recorded from before its CONNACK. */
  messages: IPublishPacket[]
}

/**
 * Connects an mqtt.js client (never reconnecting) and waits for its CONNACK. Messages are
 * recorded from the start, since queued ones may arrive in the same read as the CONNACK.
 */
function connect(url: string, options: IClientOptions, opened: MqttClient[]): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { protocolVersion: 4, connectTimeout: 5000, ...options, reconnectPeriod: 0 })
    opened.push(client)
    const messages: IPublishPacket[] = []
    client.on('message', (_topic, _payload, packet) => messages.push(packet))
    client.once('connect', (connack) => {
      client.removeAllListeners('error')
      client.on('error', () => undefined) // the hub going away is expected here
      resolve({ client, connack, messages })
    })
    client.once('error', reject)
    client.once('close', () => reject(new Error(`${options.clientId} closed before CONNACK`)))
  })
}

const byTopic = (a: { topic: string }, b: { topic: string }) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0)
const payloads = (messages: IPublishPacket[]) => messages.map((m) => m.payload.toString())

/** For eventually(): true once `messages` holds `n`, else an error saying what arrived so far. */
const received = (messages: IPublishPacket[], n: number) => () => {
  if (messages.length >= n) return true
  throw new Error(`received ${JSON.stringify(payloads(messages))}`)
}

function describeRestart(cause: string, runner: (dataDir: string) => HubRunner, run: string): void {
  describe(`restart after ${cause}`, () => {
    const hubs = runner(tempDir(`iothub-restart-${run}-`))
    const opened: MqttClient[] = []
    let hub: RunningHub
    let devices: { id: string; token: string }[]
    /** When the first hub was gone (stop returned, or the killed process exited). */
    let downAt = 0

    const id = (kind: string, i?: number) => `${run}-${kind}${i === undefined ? '' : `-${i}`}`
    const topic = (...levels: (string | number)[]) => `restart/${run}/${levels.join('/')}`
    const cleanIds = Array.from({ length: PER_KIND }, (_, i) => id('clean', i))
    const persistentIds = Array.from({ length: PER_KIND }, (_, i) => id('persistent', i))
    const persistentTopics = (i: number) =>
      [
        { topic: topic('persistent', i, 'commands'), qos: 1 },
        { topic: topic('persistent', i, 'status'), qos: 0 },
        // a change topic: a subscription entity, which must survive with the session
        { topic: 'v1/devices/me/attributes', qos: 1 }
      ].sort(byTopic)
    /** The topics of persistent client i's session as the API shows them: its own, and the broker's. */
    const persistentSessionTopics = (i: number) =>
      persistentTopics(i).map((s) => ({ ...s, brokerTopic: mounted(PER_KIND + i, s.topic) }))
    /** The persistent clients the resume test reconnects; the others stay away for the queue test. */
    const RESUMED = PER_KIND - 5
    const queuedId = id('queued')
    const queuedTopic = topic('queued')
    const retainedTopic = topic('retained')
    const QUEUED = ['queued-1', 'queued-2', 'queued-3']
    // device i belongs to: clean i, persistent PER_KIND+i, then the queued client; the publisher
    // before the restart (and the retained reader) is the queued client's device, so what it
    // publishes lands in that device's namespace; the publishers after it are superusers, which
    // reach device n's `t` at the broker topic `mounted(n, t)`
    const credentials = (n: number) => ({ username: devices[n]!.id, password: devices[n]!.token })
    const persistentCredentials = (i: number) => credentials(PER_KIND + i)
    const mounted = (n: number, deviceTopic: string) => `${devices[n]!.id}/${deviceTopic}`
    const QUEUED_DEVICE = 2 * PER_KIND

    const session = async (clientId: string) => hub.api<ApiSession>('GET', `/v1/sessions/${encodeURIComponent(clientId)}`)
    const list = async (query: string) => {
      const r = await hub.api<Page<ApiSession>>('GET', `/v1/sessions?limit=1000${query}`)
      assert.equal(r.status, 200, JSON.stringify(r.body))
      assert.equal(r.body.next, null, 'one page holds every session')
      return r.body.data
    }

    before(
      async () => {
        hub = await hubs.start()
        const created = await hub.api<{ id: string; token: string }[]>(
          'POST',
          '/v1/devices',
          Array.from({ length: 2 * PER_KIND + 1 }, () => ({ owner: run }))
        )
        assert.equal(created.status, 201, JSON.stringify(created.body))
        devices = created.body

        // a persistent client that leaves before the restart: QoS 1 messages will queue for it
        const queued = await connect(hub.mqttUrl, { clientId: queuedId, clean: false, ...credentials(QUEUED_DEVICE) }, opened)
        await queued.client.subscribeAsync(queuedTopic, { qos: 1 })
        await queued.client.endAsync()
        await eventually(async () => (await session(queuedId)).body.connected === false, 5000, `${queuedId} offline`)

        // 30 clean and 30 persistent clients, connected and subscribed when the hub goes down
        await Promise.all([
          ...cleanIds.map(async (clientId, i) => {
            const { client } = await connect(hub.mqttUrl, { clientId, clean: true, ...credentials(i) }, opened)
            await client.subscribeAsync([topic('clean', i), 'v1/devices/me/commands'], { qos: 1 })
          }),
          ...persistentIds.map(async (clientId, i) => {
            const { client } = await connect(hub.mqttUrl, { clientId, clean: false, ...persistentCredentials(i) }, opened)
            await client.subscribeAsync(Object.fromEntries(persistentTopics(i).map((s) => [s.topic, { qos: s.qos as 0 | 1 }])))
          })
        ])
        const publisher = await connect(hub.mqttUrl, { clientId: id('publisher'), clean: true, ...credentials(QUEUED_DEVICE) }, opened)

        // what the restart must undo: 61 live connections (so "none after" is not vacuous)
        const live = await list('&connected=true')
        assert.equal(live.length, 2 * PER_KIND + 1, 'every client but the queued one is connected before the restart')

        // the last thing before the hub goes down: PUBACKed QoS 1 messages, one of them retained
        for (const payload of QUEUED) await publisher.client.publishAsync(queuedTopic, payload, { qos: 1 })
        await publisher.client.publishAsync(retainedTopic, 'kept across restarts', { qos: 1, retain: true })
        await hubs.takeDown()
        downAt = Date.now()

        await Promise.all(opened.map((c) => c.endAsync(true).catch(() => undefined)))
        opened.length = 0
        hub = await hubs.start()
      },
      { timeout: 45_000 }
    )

    after(async () => {
      await Promise.all(opened.map((c) => c.endAsync(true).catch(() => undefined)))
      await hubs.dispose()
    })

    it('has no ghost connection before anyone reconnects, and the clean sessions are gone', async () => {
      assert.deepEqual(await list('&connected=true'), [], 'no session is connected right after the restart')
      const emqx = await hub.api<{ data: unknown[]; meta: { count: number } }>('GET', '/api/v4/clients?conn_state=connected&_limit=1000')
      assert.equal(emqx.status, 200)
      assert.deepEqual(emqx.body.data, [], 'the EMQX view shows no connected client either')

      const all = await list('')
      assert.deepEqual(
        all.map((s) => s.id),
        [...persistentIds, queuedId].sort(),
        'only the persistent sessions remain (the clean clients and the publisher ended)'
      )
      for (const clientId of [...cleanIds, id('publisher')]) {
        const r = await session(clientId)
        assert.equal(r.status, 404, `clean session ${clientId} is gone: ${JSON.stringify(r.body)}`)
      }
    })

    it('keeps the persistent sessions’ subscription entities, ends the clean ones’, and shows every device offline', async () => {
      const entities = await hub.api<{ data: { sessionId: string; topic: string }[]; next: string | null }>('GET', '/v1/subscriptions?limit=1000')
      assert.equal(entities.body.next, null)
      assert.deepEqual(
        entities.body.data.map((e) => `${e.sessionId} ${e.topic}`).sort(),
        persistentIds.map((clientId) => `${clientId} v1/devices/me/attributes`).sort(),
        'one entity per persistent session; none of the clean sessions’'
      )
      const clientOf = (n: number) => (n < PER_KIND ? cleanIds[n]! : persistentIds[n - PER_KIND]!)
      for (let n = 0; n < 2 * PER_KIND; n++) {
        const info = await eventually(async () => {
          const device = await hub.api<{ properties: { connectinfo: { _online?: boolean; _clientid?: string } } }>('GET', `/v1/devices/${devices[n]!.id}`)
          return device.body.properties.connectinfo._online === false ? device.body.properties.connectinfo : undefined
        }, 5000, `device ${n} offline in its connectinfo`)
        assert.equal(info._clientid, clientOf(n), 'the connection it last had')
      }
    })

    it('keeps each persistent session offline, with its topics, ended by "server_shutdown"', async () => {
      for (const [i, clientId] of persistentIds.entries()) {
        const { status, body } = await session(clientId)
        assert.equal(status, 200, `${clientId}: ${JSON.stringify(body)}`)
        assert.equal(body.connected, false, `${clientId} is offline`)
        assert.equal(body.cleanStart, false)
        assert.equal(body.deviceId, devices[PER_KIND + i]!.id)
        assert.equal(body.disconnectReason, 'server_shutdown', `${clientId} ended by the shutdown`)
        assert.deepEqual([...body.topics].sort(byTopic), persistentSessionTopics(i), `${clientId} keeps its topics`)
        const endedAt = Date.parse(body.disconnectedAt ?? '')
        if (hubs.recordsEndAtTakeDown) assert.ok(endedAt <= downAt, `${clientId}: the stop recorded the end (${body.disconnectedAt})`)
        else assert.ok(endedAt >= downAt, `${clientId}: the next start recorded the end (${body.disconnectedAt})`)
      }
      const queued = await session(queuedId)
      assert.equal(queued.body.connected, false)
      assert.equal(queued.body.disconnectReason, 'client_disconnect', 'a session offline before the restart keeps its own reason')
      assert.ok(Date.parse(queued.body.disconnectedAt ?? '') < downAt, 'and its own end time')
      assert.deepEqual(queued.body.topics, [{ topic: queuedTopic, brokerTopic: mounted(QUEUED_DEVICE, queuedTopic), qos: 1 }])
    })

    it('resumes persistent sessions on a clean=false reconnect: session present, subscriptions in place', async () => {
      const resumed = await Promise.all(
        persistentIds
          .slice(0, RESUMED)
          .map((clientId, i) => connect(hub.mqttUrl, { clientId, clean: false, ...persistentCredentials(i) }, opened))
      )
      for (const [i, r] of resumed.entries()) assert.equal(r.connack.sessionPresent, true, `${persistentIds[i]}: CONNACK session present`)
      const resumedSession = await session(persistentIds[0]!)
      assert.equal(resumedSession.body.connected, true)
      assert.deepEqual([...resumedSession.body.topics].sort(byTopic), persistentSessionTopics(0))

      // no SUBSCRIBE after the restart: the stored subscriptions deliver
      const publisher = await connect(hub.mqttUrl, { clientId: id('publisher-after'), clean: true, ...superuserLogin() }, opened)
      await Promise.all(
        resumed.map((_, i) => publisher.client.publishAsync(mounted(PER_KIND + i, topic('persistent', i, 'commands')), `command-${i}`, { qos: 1 }))
      )
      await eventually(() => resumed.every((r) => r.messages.length > 0), 5000, 'every resumed client received its command')
      for (const [i, r] of resumed.entries()) {
        assert.deepEqual(payloads(r.messages), [`command-${i}`], `${persistentIds[i]} got its own command, once`)
        assert.equal(r.messages[0]!.topic, topic('persistent', i, 'commands'))
      }
    })

    it('delivers the QoS 1 messages queued before the restart when the offline client returns', async () => {
      const queued = await connect(hub.mqttUrl, { clientId: queuedId, clean: false, ...credentials(QUEUED_DEVICE) }, opened)
      assert.equal(queued.connack.sessionPresent, true, 'CONNACK session present')
      await eventually(received(queued.messages, QUEUED.length), 5000, `the queued messages ${JSON.stringify(QUEUED)}`)
      if (hubs.recordsEndAtTakeDown) {
        assert.deepEqual(payloads(queued.messages), QUEUED, 'all queued messages, in order, once')
      } else {
        // QoS 1 is at least once: killed between routing the last message and clearing its
        // journal entry, the hub publishes it again at start (src/embedded/publish-journal.ts)
        await new Promise((r) => setTimeout(r, 100))
        const got = payloads(queued.messages)
        assert.deepEqual([...new Set(got)], QUEUED, `all queued messages, in order: ${JSON.stringify(got)}`)
        assert.ok(got.length <= 2 * QUEUED.length, `each at most repeated once: ${JSON.stringify(got)}`)
      }
      for (const m of queued.messages) {
        assert.equal(m.topic, queuedTopic)
        assert.equal(m.qos, 1)
      }
    })

    it('queues QoS 1 messages for sessions offline since the shutdown, and delivers them on their return', async () => {
      const away = persistentIds.slice(RESUMED).map((clientId, k) => ({ clientId, i: RESUMED + k }))
      const publisher = await connect(hub.mqttUrl, { clientId: id('publisher-away'), clean: true, ...superuserLogin() }, opened)
      for (const { i } of away) {
        await publisher.client.publishAsync(mounted(PER_KIND + i, topic('persistent', i, 'commands')), `while-away-${i}`, { qos: 1 })
      }
      const back = await Promise.all(away.map(({ clientId, i }) => connect(hub.mqttUrl, { clientId, clean: false, ...persistentCredentials(i) }, opened)))
      await eventually(() => back.every((r) => r.messages.length > 0), 5000, 'every returning client received its queued message')
      for (const [k, r] of back.entries()) {
        assert.equal(r.connack.sessionPresent, true)
        assert.deepEqual(payloads(r.messages), [`while-away-${away[k]!.i}`], `${away[k]!.clientId} got what was queued for it`)
      }
    })

    it('keeps retained messages', async () => {
      const reader = await connect(hub.mqttUrl, { clientId: id('retained-reader'), clean: true, ...credentials(QUEUED_DEVICE) }, opened)
      await reader.client.subscribeAsync(retainedTopic, { qos: 1 })
      await eventually(received(reader.messages, 1), 5000, 'the retained message')
      assert.equal(reader.messages[0]!.topic, retainedTopic)
      assert.equal(reader.messages[0]!.payload.toString(), 'kept across restarts')
      assert.equal(reader.messages[0]!.retain, true)
    })
  })
}

describeRestart('a graceful stop', inProcessRunner, 'graceful')
describeRestart('kill -9', childProcessRunner, 'kill9')

/**
 * The README's promise behind "this holds after kill -9": an event is acknowledged only once
 * its transaction is on disk. Made deterministic with a slow store: another process holds
 * SQLite's write lock (as a backup would), so the hub's next commit waits; whatever the hub
 * PUBACKs meanwhile it acknowledged before storing, and a crash then must not take it back.
 */
describe('kill -9 right after a PUBACK', () => {
  const dataDir = tempDir('iothub-restart-puback-')
  const opened: MqttClient[] = []
  let child: ChildHub | undefined

  after(async () => {
    await Promise.all(opened.map((c) => c.endAsync(true).catch(() => undefined)))
    await child?.kill('SIGKILL')
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('keeps every PUBACKed QoS 1 message (retained, and queued for an offline session) while the store is slow', async () => {
    child = await startChildHub(dataDir)
    const created = await child.api<{ id: string; token: string }[]>('POST', '/v1/devices', [{ owner: 'puback' }])
    assert.equal(created.status, 201, JSON.stringify(created.body))
    const [device] = created.body as [{ id: string; token: string }]
    const subscriberLogin = { clientId: 'puback-subscriber', clean: false, username: device.id, password: device.token }
    // the publisher (and the reader of the retained message) is the subscriber's device, under
    // another client id: a device's messages stay in its own namespace
    const publisherLogin = { username: device.id, password: device.token }

    const subscriber = await connect(child.mqttUrl, subscriberLogin, opened)
    await subscriber.client.subscribeAsync('puback/queued', { qos: 1 })
    await subscriber.client.endAsync()
    const api = child.api
    await eventually(async () => (await api<ApiSession>('GET', '/v1/sessions/puback-subscriber')).body.connected === false, 5000, 'subscriber offline')
    const publisher = await connect(child.mqttUrl, { clientId: 'puback-publisher', clean: true, ...publisherLogin }, opened)

    const acked = new Set<string>()
    const publish = (name: string, topic: string, retain: boolean) =>
      publisher.client.publishAsync(topic, name, { qos: 1, retain }).then(() => acked.add(name))
    const locker = new Database(join(dataDir, 'iothub.db'))
    locker.exec('BEGIN IMMEDIATE')
    let ackedWhileLocked: string[] = []
    const publishes = Promise.all([publish('retained-message', 'puback/retained', true), publish('queued-message', 'puback/queued', false)])
    publishes.catch(() => undefined) // the crash may cut them short
    try {
      await Promise.race([publishes, sleep(1000)])
      ackedWhileLocked = [...acked]
      if (ackedWhileLocked.length > 0) await child.kill('SIGKILL') // acknowledged: a crash must not take it back
    } finally {
      locker.exec('ROLLBACK')
      locker.close()
    }
    if (ackedWhileLocked.length === 0) {
      // the hub waited for the store, as it should: both are acknowledged once stored
      await publishes
      await child.kill('SIGKILL')
    }
    await Promise.all(opened.map((c) => c.endAsync(true).catch(() => undefined)))

    child = await startChildHub(dataDir)
    const back = await connect(child.mqttUrl, subscriberLogin, opened)
    const reader = await connect(child.mqttUrl, { clientId: 'puback-reader', clean: true, ...publisherLogin }, opened)
    await reader.client.subscribeAsync('puback/retained', { qos: 1 })
    const survivors = () => [...payloads(back.messages), ...payloads(reader.messages)]
    // waits only as long as the messages take to arrive: a loaded machine may need seconds
    await eventually(() => [...acked].every((name) => survivors().includes(name)), 20_000).catch(() => undefined)
    const survived = survivors()
    const lost = [...acked].filter((name) => !survived.includes(name))
    assert.deepEqual(
      lost,
      [],
      `PUBACKed, then lost to kill -9: ${JSON.stringify(lost)} (PUBACKed while the store could not write: ` +
        `${JSON.stringify(ackedWhileLocked)}; received after the restart: ${JSON.stringify(survived)})`
    )
  })
})
