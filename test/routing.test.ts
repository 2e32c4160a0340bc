/**
 * The embedded broker's router (embedded/first-level-matcher.ts) with real devices and a real
 * superuser publishing: each device receives exactly what its filters match — while its level's
 * filters sit in an array, once it holds more than an array keeps (the trie), and after it let
 * them all go — and never what another device's filters match.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { FILTERS_PER_LEVEL } from '../src/embedded/first-level-matcher.js'
import { startTestHub, type TestHub } from './helpers/hub.js'

/** Collects what a client receives; `upTo(marker)` resolves with everything before the marker arrived. */
function inbox(client: MqttClient): { upTo(marker: string): Promise<string[]> } {
  const received: string[] = []
  const waiting = new Map<string, (seen: string[]) => void>()
  client.on('message', (topic, payload) => {
    const text = payload.toString()
    const done = waiting.get(text)
    if (done) {
      waiting.delete(text)
      done(received.splice(0))
    } else received.push(`${topic} ${text}`)
  })
  return { upTo: (marker) => new Promise((resolve) => waiting.set(marker, resolve)) }
}

/** The QoS each payload a client receives comes at; `all(payloads)` resolves once every one of them has come. */
function qosByPayload(client: MqttClient): { seen: Map<string, number>; all(payloads: string[]): Promise<void> } {
  const seen = new Map<string, number>()
  let waiting: { payloads: string[]; resolve: () => void } | undefined
  const complete = (payloads: string[]) => payloads.every((p) => seen.has(p))
  client.on('message', (_topic, payload, packet) => {
    seen.set(payload.toString(), packet.qos)
    if (waiting && complete(waiting.payloads)) waiting.resolve()
  })
  return { seen, all: (payloads) => new Promise((resolve) => (complete(payloads) ? resolve() : (waiting = { payloads, resolve }))) }
}

describe('routing publishes to devices by their filters', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(async () => {
    await t.stop()
  })

  // a lost marker is a lost delivery: the round never ends, and the deadline fails it (it takes well under a second)
  it('delivers exactly what each device’s filters match, in an array, in the trie, and back', { timeout: 30_000 }, async () => {
    const [a, b] = [await t.createDevice(), await t.createDevice()]
    const deviceA = await t.connect({ clientId: 'route-a', username: a.id, password: a.token })
    const deviceB = await t.connect({ clientId: 'route-b', username: b.id, password: b.token })
    const operator = await t.connect({ clientId: 'route-operator', username: 'admin', password: 'public' })
    const [toA, toB] = [inbox(deviceA), inbox(deviceB)]
    const publish = (topic: string, payload: string) => operator.publishAsync(topic, payload, { qos: 1 })
    // each device's last filter receives its markers: QoS 1 from one publisher arrives in order,
    // so once a marker is in, everything published before it to that device is too
    const round = async (published: [string, string][], marker: string): Promise<[string[], string[]]> => {
      const seen = Promise.all([toA.upTo(marker), toB.upTo(marker)])
      for (const [topic, payload] of published) await publish(topic, payload)
      await publish(`${a.id}/mark`, marker)
      await publish(`${b.id}/mark`, marker)
      return seen
    }
    await deviceB.subscribeAsync({ 't/0': { qos: 1 }, 't/+': { qos: 1 }, mark: { qos: 1 } })

    await deviceA.subscribeAsync({ 't/3': { qos: 1 }, 'u/#': { qos: 1 }, mark: { qos: 1 } })
    const inArray = await round(
      [
        [`${a.id}/t/3`, 'a3'],
        [`${a.id}/t/4`, 'not subscribed'],
        [`${a.id}/u`, 'u, by # with no level'],
        [`${b.id}/t/3`, 'b3'],
        [`${b.id}/t/0`, 'b0']
      ],
      'first'
    )
    assert.deepEqual(inArray, [
      ['t/3 a3', 'u u, by # with no level'],
      ['t/3 b3', 't/0 b0']
    ])

    // more filters under its level than an array keeps: the level moves to the trie
    const many = Array.from({ length: FILTERS_PER_LEVEL + 4 }, (_, i) => `t/${10 + i}`)
    await deviceA.subscribeAsync(Object.fromEntries(many.map((f) => [f, { qos: 1 }])))
    const inTrie = await round(
      [
        [`${a.id}/t/3`, 'a3'],
        [`${a.id}/${many.at(-1)!}`, 'a last'],
        [`${a.id}/t/9`, 'not subscribed'],
        [`${b.id}/${many.at(-1)!}`, 'b last']
      ],
      'second'
    )
    assert.deepEqual(inTrie, [[`t/3 a3`, `${many.at(-1)!} a last`], [`${many.at(-1)!} b last`]])

    // every filter let go: the level leaves the trie, and what it subscribes next is routed again
    await deviceA.unsubscribeAsync([...many, 't/3', 'u/#'])
    await deviceA.subscribeAsync('t/5', { qos: 1 })
    const back = await round(
      [
        [`${a.id}/t/3`, 'no longer subscribed'],
        [`${a.id}/t/5`, 'a5'],
        [`${b.id}/t/5`, 'b5']
      ],
      'third'
    )
    assert.deepEqual(back, [['t/5 a5'], ['t/5 b5']])
    await Promise.all([deviceA.endAsync(), deviceB.endAsync(), operator.endAsync()])
  })

  // MQTT 3.1.1 §3.8.4: a message goes out at the lower of its QoS and the highest granted to a
  // matching filter. Aedes lowers it only through an exact-topic subscription; through a QoS 1
  // filter with wildcards a QoS 2 publish went out at QoS 2. A lost delivery never resolves `all`:
  // the deadline fails it.
  it('delivers at the highest QoS a matching filter was granted, through wildcards as through exact topics', { timeout: 30_000 }, async () => {
    const d = await t.createDevice()
    const device = await t.connect({ clientId: 'qos-device', username: d.id, password: d.token })
    const watcher = await t.connect({ clientId: 'qos-watcher', username: 'admin', password: 'public' })
    const operator = await t.connect({ clientId: 'qos-operator', username: 'admin', password: 'public' })
    const [atDevice, atWatcher] = [qosByPayload(device), qosByPayload(watcher)]
    const granted = await device.subscribeAsync({ 'w/+': { qos: 1 }, 'x/#': { qos: 0 }, 'y/+': { qos: 1 }, 'y/2': { qos: 2 }, 'z/1': { qos: 2 }, 'v/+': { qos: 2 } })
    assert.deepEqual(
      granted.map((g) => [g.topic, g.qos]),
      [['w/+', 1], ['x/#', 0], ['y/+', 1], ['y/2', 2], ['z/1', 2], ['v/+', 2]],
      'granted as asked'
    )
    // a superuser has no mountpoint: its filters see the devices' full topics
    await watcher.subscribeAsync({ [`+/w/+`]: { qos: 1 }, [`${d.id}/z/1`]: { qos: 2 } })

    const published: [string, string, 0 | 1 | 2][] = [
      ['w/1', 'qos 2 through a qos 1 wildcard', 2],
      ['w/2', 'qos 1 through a qos 1 wildcard', 1],
      ['x/1', 'qos 2 through a qos 0 wildcard', 2],
      ['y/2', 'qos 2 through a qos 1 wildcard and a qos 2 topic', 2],
      ['y/3', 'qos 2 through the qos 1 wildcard alone', 2],
      ['z/1', 'qos 2 through a qos 2 topic', 2],
      ['v/1', 'qos 1 through a qos 2 wildcard', 1]
    ]
    for (const [topic, payload, qos] of published) await operator.publishAsync(`${d.id}/${topic}`, payload, { qos })
    await Promise.all([atDevice.all(published.map(([, payload]) => payload)), atWatcher.all([published[0]![1], published[1]![1], published[5]![1]])])

    assert.deepEqual(Object.fromEntries(atDevice.seen), {
      'qos 2 through a qos 1 wildcard': 1,
      'qos 1 through a qos 1 wildcard': 1,
      'qos 2 through a qos 0 wildcard': 0,
      'qos 2 through a qos 1 wildcard and a qos 2 topic': 2,
      'qos 2 through the qos 1 wildcard alone': 1,
      'qos 2 through a qos 2 topic': 2,
      'qos 1 through a qos 2 wildcard': 1
    })
    assert.deepEqual(Object.fromEntries(atWatcher.seen), {
      'qos 2 through a qos 1 wildcard': 1,
      'qos 1 through a qos 1 wildcard': 1,
      'qos 2 through a qos 2 topic': 2
    })
    await Promise.all([device.endAsync(), watcher.endAsync(), operator.endAsync()])
  })
})
