/**
 * Devices, complete, on an embedded hub (SQLite file, real mqtt.js clients, real HTTP): listed,
 * changed, their tokens replaced, deleted — each through the change log, so the event stream
 * tells it — and bad input refused with a clear 4xx, counted, nothing stored changed.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { connectClient, eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { metricValue, rejectedCount } from './helpers/metrics.js'
import { SseStream } from './helpers/sse.js'
import type { BatchWriter } from '../src/store/group-commit.js'

interface ApiDevice {
  id: string
  name: string
  owner: string
  group: string
  desc: string
  ext: Record<string, unknown>
  createdAt: string
  updatedAt: string
  properties: Record<string, unknown>
}

interface Page<T> {
  data: T[]
  next: string | null
}

interface HubEvent {
  seq: number
  type: string
  deviceId: string
  owner: string
  clientId?: string
  reason?: string | null
  device?: Record<string, unknown>
}

const ATTRIBUTES = 'v1/devices/me/attributes'

/** Resolves when the client's connection has closed (the broker closed it). */
const closed = (client: MqttClient): Promise<void> => new Promise((resolve) => (client.connected ? client.once('close', () => resolve()) : resolve()))

async function refused(t: TestHub, username: string, password: string): Promise<void> {
  await assert.rejects(connectClient(t.mqttUrl, { clientId: `${username}-try-${Math.random().toString(36).slice(2, 8)}`, username, password }), /Not authorized/i)
}

describe('devices, complete (embedded, SQLite)', () => {
  let t: TestHub
  let events: SseStream

  before(async () => {
    t = await startTestHub()
    const opened = await SseStream.open(`${t.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
    assert.equal(opened.status, 200)
    events = opened.stream!
  })
  after(async () => {
    events.close()
    await t.stop()
  })

  /** The events of the stream for `deviceId` once `check` holds for them. */
  async function eventsOf(deviceId: string, check: (seen: HubEvent[]) => boolean, what: string): Promise<HubEvent[]> {
    let seen: HubEvent[] = []
    await events.until(() => check((seen = events.events<HubEvent>().filter((e) => e.deviceId === deviceId))), 20_000, what)
    return seen
  }

  it('lists devices without tokens, filtered by owner, group, connected and a search, paged by cursor', async () => {
    await t.api('POST', '/v1/devices', [
      { id: 'ls-1', owner: 'lister', group: 'north', name: 'Boiler Room' },
      { id: 'ls-2', owner: 'lister', group: 'south', name: 'attic' },
      { id: 'ls-3', owner: 'lister', group: 'north', name: 'Cellar boiler' },
      { id: 'ls-4', owner: 'other', group: 'north', name: 'boiler' }
    ])
    const tokens = new Map<string, string>()
    const made = await t.createDevice({ id: 'ls-5', owner: 'lister', group: 'south', name: 'live' })
    tokens.set(made.id, made.token)
    const live = await t.connect({ clientId: 'ls-5-c', username: made.id, password: made.token })

    const list = async (query: string) => (await t.api<Page<ApiDevice>>('GET', `/v1/devices?${query}`)).body
    const all = await list('owner=lister')
    assert.deepEqual(all.data.map((d) => d.id), ['ls-1', 'ls-2', 'ls-3', 'ls-5'])
    assert.equal(all.next, null)
    for (const d of all.data) assert.ok(!('token' in d) && !('tokenHash' in d), `${d.id} shows no token`)
    assert.equal(all.data[0]!.name, 'Boiler Room')
    assert.ok('connectinfo' in all.data[0]!.properties, 'items as GET /v1/devices/{id} renders them')
    assert.deepEqual((await list('owner=lister&group=north')).data.map((d) => d.id), ['ls-1', 'ls-3'])
    assert.deepEqual((await list('q=BOILER')).data.map((d) => d.id), ['ls-1', 'ls-3', 'ls-4'])
    assert.deepEqual((await list('q=ls-2')).data.map((d) => d.id), ['ls-2'])
    assert.deepEqual((await list('owner=lister&connected=true')).data.map((d) => d.id), ['ls-5'])
    assert.deepEqual((await list('owner=lister&connected=false')).data.map((d) => d.id), ['ls-1', 'ls-2', 'ls-3'])

    // walked a page of one at a time, by the cursor each page gives
    const walked: string[] = []
    let cursor: string | null = null
    do {
      const page: Page<ApiDevice> = await list(`owner=lister&limit=1${cursor ? `&cursor=${cursor}` : ''}`)
      walked.push(...page.data.map((d) => d.id))
      cursor = page.next
    } while (cursor !== null)
    assert.deepEqual(walked, ['ls-1', 'ls-2', 'ls-3', 'ls-5'])
    await live.endAsync()
  })

  it('changes a device (PATCH): name, desc, group, ext; told as device.changed, without its token', async () => {
    const made = await t.createDevice({ id: 'pt-1', owner: 'patcher', name: 'before', ext: { a: 1 } })
    const before = (await t.api<ApiDevice>('GET', '/v1/devices/pt-1')).body
    const { status, body } = await t.api<ApiDevice>('PATCH', '/v1/devices/pt-1', { name: 'after', desc: 'a thermostat', group: 'g2', ext: { b: 2 } })
    assert.equal(status, 200)
    assert.deepEqual([body.name, body.desc, body.group, body.ext, body.owner], ['after', 'a thermostat', 'g2', { b: 2 }, 'patcher'])
    assert.ok(!('token' in body))
    assert.ok(body.updatedAt >= before.updatedAt)
    assert.equal(body.createdAt, before.createdAt)
    assert.deepEqual((await t.api<ApiDevice>('GET', '/v1/devices/pt-1')).body, body)
    // one field alone leaves the others
    assert.deepEqual((await t.api<ApiDevice>('PATCH', '/v1/devices/pt-1', { desc: 'only this' })).body.name, 'after')
    // the token is the device's still
    const client = await t.connect({ clientId: 'pt-1', username: made.id, password: made.token })
    await client.endAsync()

    const seen = await eventsOf('pt-1', (e) => e.filter((x) => x.type === 'device.changed').length === 2, 'two device.changed')
    const changed = seen.filter((e) => e.type === 'device.changed')
    assert.equal(changed[0]!.device!.name, 'after')
    assert.equal(changed[0]!.owner, 'patcher')
    for (const e of seen) assert.ok(!JSON.stringify(e).includes('token'), `${e.type} carries no token nor its hash`)
  })

  it('a PATCH of the values the device has changes nothing: no write, no device.changed, the same updatedAt', async () => {
    await t.createDevice({ id: 'pt-same', owner: 'patcher', name: 'kept', ext: { a: { b: [1, 2] } } })
    const before = (await t.api<ApiDevice>('GET', '/v1/devices/pt-same')).body
    for (const same of [{ name: 'kept' }, { ext: { a: { b: [1, 2] } } }, { name: 'kept', desc: before.desc, group: before.group }]) {
      const { status, body } = await t.api<ApiDevice>('PATCH', '/v1/devices/pt-same', same)
      assert.equal(status, 200)
      assert.deepEqual(body, before, `PATCH ${JSON.stringify(same)} answers the device as it is`)
    }
    // then a real change: the first device.changed of the device is that one
    await t.api('PATCH', '/v1/devices/pt-same', { name: 'renamed' })
    const seen = await eventsOf('pt-same', (e) => e.some((x) => x.type === 'device.changed'), 'a device.changed')
    const changed = seen.filter((e) => e.type === 'device.changed')
    assert.deepEqual(
      changed.map((e) => e.device!.name),
      ['renamed']
    )
  })

  it('refuses bad input with a clear 4xx, counts it, and changes nothing stored', async () => {
    await t.createDevice({ id: 'bad-1', owner: 'o1', name: 'kept', ext: { keep: true } })
    const before = (await t.api<ApiDevice>('GET', '/v1/devices/bad-1')).body
    const counted = await rejectedCount(t.api, 'bad_api_request')
    const cases: [method: string, path: string, body: unknown, status: number, message: RegExp][] = [
      ['PATCH', '/v1/devices/bad-1', { colour: 'red' }, 400, /unknown field "colour"/],
      ['PATCH', '/v1/devices/bad-1', { owner: 'o2' }, 400, /owner cannot be changed/],
      ['PATCH', '/v1/devices/bad-1', { id: 'bad-2' }, 400, /id cannot be changed/],
      ['PATCH', '/v1/devices/bad-1', { token: 'mine' }, 400, /token cannot be changed/],
      ['PATCH', '/v1/devices/bad-1', {}, 400, /at least one/],
      ['PATCH', '/v1/devices/bad-1', { ext: { big: 'x'.repeat(300 * 1024) } }, 400, /bytes of JSON/],
      ['PATCH', '/v1/devices/bad-1', { name: { first: 'x' } }, 400, /name must be string/],
      ['PATCH', '/v1/devices/nope', { name: 'x' }, 404, /no device nope/],
      ['DELETE', '/v1/devices/nope', undefined, 404, /no device nope/],
      ['POST', '/v1/devices/nope/token', undefined, 404, /no device nope/],
      ['POST', '/v1/devices/bad-1/token?kick=maybe', undefined, 400, /kick must be boolean/],
      ['GET', '/v1/devices?cursor=not-ours!', undefined, 400, /cursor/],
      ['GET', '/v1/devices?connected=perhaps', undefined, 400, /connected must be boolean/],
      ['GET', '/v1/devices?colour=red', undefined, 400, /unknown field "colour"/],
      ['POST', '/v1/devices', { id: 'bad-1' }, 409, /already exists/],
      ['DELETE', '/v1/sessions/nobody-here', undefined, 404, /no session nobody-here/]
    ]
    for (const [method, path, body, status, message] of cases) {
      const answer = await t.api<{ statusCode: number; message: string }>(method, path, body)
      assert.equal(answer.status, status, `${method} ${path} ${JSON.stringify(body)?.slice(0, 60)}: ${JSON.stringify(answer.body)}`)
      assert.equal(answer.body.statusCode, status)
      assert.match(answer.body.message, message)
    }
    // every one counted but the session's 404 (the EMQX-compatible kick's twin counts none either)
    assert.equal(await rejectedCount(t.api, 'bad_api_request'), counted + cases.length - 1)
    assert.deepEqual((await t.api<ApiDevice>('GET', '/v1/devices/bad-1')).body, before, 'nothing stored changed')
    assert.equal((await t.api('GET', '/v1/devices/nope')).status, 404)
  })

  it('replaces a token (POST /v1/devices/{id}/token): shown once; the old one refused at once; kick=true closes live connections', async () => {
    const made = await t.createDevice({ id: 'rot-1', owner: 'rotor' })
    const live = await t.connect({ clientId: 'rot-1-a', username: made.id, password: made.token })

    const first = await t.api<{ id: string; token: string; kicked: number }>('POST', '/v1/devices/rot-1/token')
    assert.equal(first.status, 200)
    assert.equal(first.body.id, 'rot-1')
    assert.equal(first.body.kicked, 0)
    assert.match(first.body.token, /^[A-Za-z0-9_-]{32}$/)
    assert.notEqual(first.body.token, made.token)
    await refused(t, 'rot-1', made.token)
    assert.ok(live.connected, 'without kick a live connection stays')
    const second = await t.connect({ clientId: 'rot-1-b', username: 'rot-1', password: first.body.token })
    assert.ok(!('token' in (await t.api<ApiDevice>('GET', '/v1/devices/rot-1')).body))

    const wentAway = Promise.all([closed(live), closed(second)])
    const kicked = await t.api<{ token: string; kicked: number }>('POST', '/v1/devices/rot-1/token?kick=true')
    assert.equal(kicked.status, 200)
    assert.equal(kicked.body.kicked, 2)
    await wentAway
    await refused(t, 'rot-1', first.body.token)
    const third = await t.connect({ clientId: 'rot-1-c', username: 'rot-1', password: kicked.body.token })
    await third.endAsync()

    const seen = await eventsOf('rot-1', (e) => e.filter((x) => x.type === 'device.changed').length === 2, 'two device.changed')
    for (const e of seen) assert.ok(!JSON.stringify(e).includes('token'), `${e.type} carries no token nor its hash`)
    const ended = seen.filter((e) => e.type === 'session.ended').map((e) => [e.clientId, e.reason])
    assert.deepEqual(ended.slice(0, 2).sort(), [['rot-1-a', 'kicked'], ['rot-1-b', 'kicked']])
  })

  it('deletes a device: its sessions kicked and ended, subscription entities deleted, its token refused; device.deleted told', async () => {
    const made = await t.createDevice({ id: 'del-1', owner: 'deleter' })
    const live = await t.connect({ clientId: 'del-1', username: made.id, password: made.token, clean: false })
    await live.subscribeAsync(ATTRIBUTES, { qos: 1 })
    const offline = await t.connect({ clientId: 'del-1-b', username: made.id, password: made.token, clean: false })
    await offline.subscribeAsync('v1/devices/me/#', { qos: 1 })
    await offline.endAsync()
    await eventually(async () => (await t.api<{ connected: boolean }>('GET', '/v1/sessions/del-1-b')).body.connected === false, 20_000, 'del-1-b offline')
    await t.api('PATCH', '/v1/devices/del-1/attributes', { mode: 'eco' })
    assert.equal((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=del-1')).body.data.length, 2)

    const wentAway = closed(live)
    const { status, body } = await t.api<{ id: string; sessionsEnded: number; subscriptionsDeleted: number }>('DELETE', '/v1/devices/del-1')
    assert.equal(status, 200)
    assert.deepEqual(body, { id: 'del-1', sessionsEnded: 2, subscriptionsDeleted: 2 })
    await wentAway
    assert.equal((await t.api('GET', '/v1/devices/del-1')).status, 404)
    assert.equal((await t.api('GET', '/v1/sessions/del-1')).status, 404)
    assert.equal((await t.api('GET', '/v1/sessions/del-1-b')).status, 404)
    assert.deepEqual((await t.api<{ data: unknown[] }>('GET', '/v1/subscriptions?deviceId=del-1')).body.data, [])
    assert.deepEqual((await t.api<Page<ApiDevice>>('GET', '/v1/devices?owner=deleter')).body.data, [])
    await refused(t, 'del-1', made.token)
    assert.equal((await t.api('DELETE', '/v1/devices/del-1')).status, 404)

    const seen = await eventsOf('del-1', (e) => e.some((x) => x.type === 'device.deleted'), 'device.deleted')
    const tail = seen.slice(seen.findIndex((e) => e.type === 'session.ended'))
    // one stored change: ends, entities, and the device, in one batch of the log
    assert.deepEqual(tail.map((e) => e.type).sort(), ['device.deleted', 'session.ended', 'session.ended', 'subscription.deleted', 'subscription.deleted'])
    assert.ok(tail.every((e) => e.type === 'device.deleted' || e.reason === 'device_deleted' || e.type === 'subscription.deleted'))
    assert.ok(tail.every((e) => e.owner === 'deleter'), 'the owner is told, though the device is gone')
    const deleted = tail.find((e) => e.type === 'device.deleted')!
    assert.equal(deleted.seq, Math.max(...tail.map((e) => e.seq)))
    assert.ok(!JSON.stringify(tail).includes('token'))

    // a new device of the same id is a new device: its own token, nothing of the old one's
    const again = await t.createDevice({ id: 'del-1' })
    await refused(t, 'del-1', made.token)
    assert.deepEqual((await t.api<ApiDevice>('GET', '/v1/devices/del-1')).body.properties.attributes, {})
    const back = await t.connect({ clientId: 'del-1', username: 'del-1', password: again.token })
    await back.endAsync()
  })

  /**
   * Holds the store's writer from the batch that deletes `deviceId` on, every later batch in its
   * order behind it, until `letThrough`: the deletion is decided and not yet stored for as long
   * as a test needs, once the property changes asked before are stored. `held` resolves once the
   * deletion's batch has come.
   */
  async function holdDeletion(deviceId: string): Promise<{ held: Promise<void>; letThrough: () => void; restore: () => void }> {
    // every property change asked before (a connect's connectinfo, say) stored first: then the
    // only change under way while the deletion is held is the one the test asks
    await t.hub.properties.settled()
    const writer = (t.hub.store as unknown as { writer: BatchWriter }).writer
    const writeBatch = writer.writeBatch.bind(writer)
    let letThrough!: () => void
    const gate = new Promise<void>((resolve) => (letThrough = resolve))
    let deletionCame!: () => void
    const held = new Promise<void>((resolve) => (deletionCame = resolve))
    let posted: Promise<unknown> = Promise.resolve()
    writer.writeBatch = (items, control) => {
      if (items.some((item) => 'mutations' in item && item.mutations.some((m) => m.op === 'device.delete' && m.id === deviceId))) {
        posted = posted.then(() => gate)
        deletionCame()
      }
      // every batch after the deletion's waits behind it, as the writer thread would take them
      return posted.then(() => writeBatch(items, control))
    }
    return { held, letThrough, restore: () => ((writer.writeBatch = writeBatch), letThrough()) }
  }

  /** Changes of devices' properties under way (decided and being stored, or waiting): the one a race test asks, once holdDeletion has settled the rest. */
  const propertyChangesUnderWay = () => (t.hub.properties as unknown as { queue: { pendingKeys: number } }).queue.pendingKeys

  // The race: a deletion decided (under its sessions' locks) and not yet stored, a property change
  // decided meanwhile (under the property queue's) from caches that still show the device.
  it('a property change asked while its device’s deletion is being stored waits for it and is refused: nothing of it outlives the device', async () => {
    await t.createDevice({ id: 'race-1' })
    const deletion = await holdDeletion('race-1')
    try {
      const deleted = t.api('DELETE', '/v1/devices/race-1')
      await deletion.held
      const patched = t.api('PATCH', '/v1/devices/race-1/attributes', { left: 'behind' })
      // the change has reached the device's property queue: decided already (the race), or waiting
      await eventually(() => propertyChangesUnderWay() > 0, 5000, 'the property change under way')
      deletion.letThrough()
      assert.equal((await deleted).status, 200)
      assert.equal((await patched).status, 404, 'the change found the device gone')
    } finally {
      deletion.restore()
    }
    await t.createDevice({ id: 'race-1' })
    assert.deepEqual((await t.api<ApiDevice>('GET', '/v1/devices/race-1')).body.properties.attributes, {}, 'a device made again with its id starts empty')
  })

  // The same race from the device's side: its own publish, let through by the broker while the
  // deletion is not yet stored, is decided against the device as stored — gone by then.
  it('a device’s own property publish taken while its deletion is being stored changes nothing: nothing of it outlives the device', async () => {
    const made = await t.createDevice({ id: 'race-2' })
    const device = await t.connect({ clientId: 'race-2', username: made.id, password: made.token })
    device.on('error', () => undefined) // closed by the deletion
    const deletion = await holdDeletion('race-2')
    try {
      const deleted = t.api('DELETE', '/v1/devices/race-2')
      await deletion.held
      device.publishAsync('v1/devices/me/telemetry', JSON.stringify({ rpm: 900 }), { qos: 1 }).catch(() => undefined)
      await eventually(() => propertyChangesUnderWay() > 0, 5000, 'the publish’s change under way')
      deletion.letThrough()
      assert.equal((await deleted).status, 200)
      await eventually(() => propertyChangesUnderWay() === 0, 5000, 'the publish’s change settled')
    } finally {
      deletion.restore()
    }
    assert.equal(await metricValue(t.api, 'iothub_upstream_total{property="telemetry",outcome="no_device"}'), 1, 'counted as a publish of no device')
    await t.createDevice({ id: 'race-2' })
    assert.deepEqual((await t.api<ApiDevice>('GET', '/v1/devices/race-2')).body.properties.telemetry, {}, 'a device made again with its id starts empty')
  })

  it('kicks a session (DELETE /v1/sessions/{id}): 204, the broker closes it; an offline one is discarded; then 404', async () => {
    const made = await t.createDevice({ id: 'kick-1' })
    const client = await t.connect({ clientId: 'kick-1', username: made.id, password: made.token, clean: false })
    const wentAway = closed(client)
    const kicked = await t.api('DELETE', '/v1/sessions/kick-1')
    assert.equal(kicked.status, 204)
    await wentAway
    assert.equal((await t.api<{ connected: boolean; disconnectReason: string }>('GET', '/v1/sessions/kick-1')).body.disconnectReason, 'kicked')
    assert.equal((await t.api('DELETE', '/v1/sessions/kick-1')).status, 204, 'the offline session discarded')
    assert.equal((await t.api('GET', '/v1/sessions/kick-1')).status, 404)
    assert.equal((await t.api('DELETE', '/v1/sessions/kick-1')).status, 404)
  })
})
