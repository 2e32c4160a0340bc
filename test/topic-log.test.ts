/**
 * A session's topic changes are logged once, in the session's own entry (store.ts, `carried`).
 * With real mqtt.js devices on a real hub (SQLite): the change log holds no entry of its own for
 * a subscribe's, an unsubscribe's or an end's topic rows; the topics the registry follows from
 * the log are the rows of the topics table — while connected, offline, and after a restart; and
 * an offline persistent session still gets what its remaining topic is sent.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import type { IPublishPacket, MqttClient } from 'mqtt'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

interface TopicRow {
  topic: string
  qos: number
  persistent: number
}

/** The topics table's rows of `sessionId`, as stored. */
function storedTopics(dataDir: string, sessionId: string): TopicRow[] {
  const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
  try {
    return db.prepare('SELECT topic, qos, persistent FROM topics WHERE session_id = ? ORDER BY topic').all(sessionId) as TopicRow[]
  } finally {
    db.close()
  }
}

/** The same session's topics as the registry follows them from the change log. */
function followedTopics(t: TestHub, sessionId: string): TopicRow[] {
  return [...t.hub.registry.topics.entriesOf(sessionId).values()]
    .map((e) => ({ topic: e.subscription.topic, qos: e.subscription.qos, persistent: e.persistent ? 1 : 0 }))
    .sort((a, b) => a.topic.localeCompare(b.topic))
}

function received(client: MqttClient): IPublishPacket[] {
  const packets: IPublishPacket[] = []
  client.on('message', (_topic, _payload, packet) => packets.push(packet))
  return packets
}

describe('topic changes in the change log', () => {
  let t: TestHub
  let device: { id: string; token: string }
  let keptClient: MqttClient
  const persistent = { clientId: 'topic-log-kept', clean: false }
  before(async () => {
    t = await startTestHub()
    device = await t.createDevice()
  })
  after(async () => {
    await t.stop()
  })

  it('logs a subscribe’s, an unsubscribe’s and an end’s topic rows only in the session’s own entries', async () => {
    const position = (await t.hub.store.readLog(0, 1_000_000)).at(-1)?.seq ?? 0
    keptClient = await t.connect({ ...persistent, username: device.id, password: device.token })
    await keptClient.subscribeAsync({ 'v1/devices/me/attributes': { qos: 1 }, 'custom/a': { qos: 1 } })
    await keptClient.unsubscribeAsync('custom/a')

    const other = await t.createDevice()
    const clean = await t.connect({ clientId: 'topic-log-clean', clean: true, username: other.id, password: other.token })
    await clean.subscribeAsync({ 'custom/b': { qos: 0 } })
    await clean.endAsync()
    await eventually(() => t.hub.registry.record('topic-log-clean') === undefined, 5000, 'the clean session ended')
    await t.hub.registry.settled()

    const entries = await t.hub.store.readLog(position, 1000)
    const ops = (id: string) =>
      entries
        .map((e) => e.change)
        .filter((c) => ('sessionId' in c ? c.sessionId : 'id' in c ? c.id : c.op === 'session.put' ? c.session.id : undefined) === id)
        .map((c) => c.op)
    assert.deepEqual(ops('topic-log-kept'), ['session.put', 'session.version', 'session.version'], 'connect, subscribe, unsubscribe')
    assert.deepEqual(ops('topic-log-clean'), ['session.put', 'session.version', 'session.delete'], 'connect, subscribe, end')
    const subscribe = entries.find((e) => e.change.op === 'session.version' && e.change.id === 'topic-log-kept' && e.change.subscribed)
    assert.deepEqual(
      subscribe?.change.op === 'session.version' ? subscribe.change.subscribed?.map((s) => s.topic).sort() : undefined,
      [`${device.id}/custom/a`, `${device.id}/v1/devices/me/attributes`],
      'the version entry names what was subscribed'
    )

    const kept1 = [{ topic: `${device.id}/v1/devices/me/attributes`, qos: 1, persistent: 1 }]
    assert.deepEqual(storedTopics(t.dataDir, 'topic-log-kept'), kept1)
    assert.deepEqual(followedTopics(t, 'topic-log-kept'), kept1)
    assert.deepEqual(storedTopics(t.dataDir, 'topic-log-clean'), [])
    assert.deepEqual(followedTopics(t, 'topic-log-clean'), [])
  })

  it('queues for the offline persistent session on the topic it kept, and delivers it on its return', async () => {
    await keptClient.endAsync()
    await eventually(() => t.hub.registry.record('topic-log-kept')?.connected === false, 5000, 'offline')
    const pushed = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${device.id}/attributes`, { mode: 'eco' })
    assert.deepEqual(pushed.body.pushedTo, ['topic-log-kept'])

    const back = await t.connect({ ...persistent, username: device.id, password: device.token })
    const packets = received(back)
    await eventually(() => packets.length === 1, 5000, 'the queued push delivered')
    assert.equal(packets[0]!.topic, 'v1/devices/me/attributes')
    assert.deepEqual(JSON.parse(packets[0]!.payload.toString()), { mode: 'eco' })
    await back.endAsync()
  })

  it('holds after a restart what the rows hold', async () => {
    await eventually(() => t.hub.registry.record('topic-log-kept')?.connected === false, 5000, 'offline')
    await t.hub.stop()
    const again = await startTestHub({}, t.dataDir)
    try {
      const rows = storedTopics(again.dataDir, 'topic-log-kept')
      assert.equal(rows.length, 1)
      assert.deepEqual(followedTopics(again, 'topic-log-kept'), rows)
    } finally {
      t = again // the after() hook stops it and removes the data
    }
  })
})
