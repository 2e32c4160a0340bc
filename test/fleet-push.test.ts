/**
 * Fleet pushes (`PATCH /v1/devices/attributes`, `POST /v1/devices/commands`) on a hub in
 * embedded mode with SQLite, with real mqtt.js devices logging in with their tokens: a selection
 * by ids or by owner/group changes every device it names and no other, each subscribed session
 * gets exactly one push with what the device's own route would send, the change log has one
 * `device.property` per changed device, bad input stores nothing, a large selection streams in
 * bounded pages and in-flight changes, and a push stopped by the store says where to resume.
 */
import type { FleetPushReport } from '../src/devices/fleet-push.js'
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { MAX_RUNNING_FLEET_PUSHES } from '../src/api/routes/fleet-pushes.js'
import { FLEET_PAGE, FLEET_PUSH_IN_FLIGHT } from '../src/devices/fleet-push.js'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { rejectedCount } from './helpers/metrics.js'
import { SseStream } from './helpers/sse.js'

interface Received {
  topic: string
  payload: Record<string, unknown>
}

/** What a fleet push answers: its report, the command it sent, and why it stopped (503). */
type FleetAnswer = FleetPushReport & { command?: { id: string; name: string; params?: unknown }; message?: string }

interface PropertyEvent {
  type: string
  deviceId: string
  name: string
  value: Record<string, unknown>
}

interface Device {
  id: string
  token: string
  client?: MqttClient
  received: Received[]
}

describe('fleet pushes (embedded, SQLite)', () => {
  let t: TestHub
  const devices = new Map<string, Device>()
  const attributesOf = async (id: string) => (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', `/v1/devices/${id}`)).body.properties.attributes
  const commandsOf = async (id: string) => (await t.api<{ properties: { commands?: Record<string, unknown> } }>('GET', `/v1/devices/${id}`)).body.properties.commands ?? {}

  /** A device of `owner`/`group`; connected and subscribed to `topics` unless `topics` is null. */
  const device = async (id: string, owner: string, group: string, topics: string[] | null) => {
    const made = await t.createDevice({ id, owner, group })
    const d: Device = { id, token: made.token, received: [] }
    if (topics !== null) {
      d.client = await t.connect({ clientId: id, username: id, password: made.token })
      d.client.on('message', (topic, payload) => d.received.push({ topic, payload: JSON.parse(payload.toString()) as Record<string, unknown> }))
      if (topics.length > 0) await d.client.subscribeAsync(topics, { qos: 1 })
    }
    devices.set(id, d)
    return d
  }

  /**
   * Waits until every connected device has received what was routed to it so far: a command sent
   * to each through its own route (every one of them subscribes to commands) comes after any
   * earlier push on the same connection.
   */
  const fence = async () => {
    const connected = [...devices.values()].filter((d) => d.client)
    const marks = await Promise.all(
      connected.map(async (d) => (await t.api<{ command: { id: string } }>('POST', `/v1/devices/${d.id}/commands`, { name: 'fence' })).body.command.id)
    )
    await eventually(() => connected.every((d, i) => d.received.some((r) => r.payload.id === marks[i])), 20_000, 'every fence command delivered')
  }
  const attributePushes = (d: Device) => d.received.filter((r) => r.topic === 'v1/devices/me/attributes')
  const commandPushes = (d: Device, name: string) => d.received.filter((r) => r.topic === 'v1/devices/me/commands' && r.payload.name === name)

  /** The device.property events of `name` committed while `push` ran (a stream opened before it, read up to a marker change after it). */
  const propertyEventsOf = async (name: string, push: () => Promise<void>): Promise<PropertyEvent[]> => {
    const { stream } = await SseStream.open(`${t.httpUrl}/v1/events?types=device.property`, { authorization: BASIC_ADMIN })
    try {
      await push()
      await t.api('PATCH', '/v1/devices/fp-marker/attributes', { marker: Math.random() })
      await stream!.until((s) => s.events<PropertyEvent>().some((e) => e.deviceId === 'fp-marker'), 10_000, 'the marker event')
      return stream!.events<PropertyEvent>().filter((e) => e.deviceId !== 'fp-marker' && e.name === name)
    } finally {
      stream!.close()
    }
  }

  before(async () => {
    t = await startTestHub()
    await device('fp-a1', 'alice', 'g1', ['v1/devices/me/attributes', 'v1/devices/me/commands'])
    await device('fp-a2', 'alice', 'g1', ['v1/devices/me/attributes', 'v1/devices/me/commands'])
    await device('fp-a3', 'alice', 'g2', ['v1/devices/me/#'])
    // connected, but not subscribed to its attributes
    await device('fp-a4', 'alice', 'g1', ['v1/devices/me/commands'])
    // never connected
    await device('fp-a5', 'alice', 'g1', null)
    await device('fp-b1', 'bob', 'g1', ['v1/devices/me/attributes', 'v1/devices/me/commands'])
    await t.createDevice({ id: 'fp-marker', owner: 'nobody' })
  })
  after(async () => {
    await t.stop()
  })

  it('by ids: changes each named device, pushes once to each subscribed session, reports unknown ids, leaves the others alone', async () => {
    let answer: { status: number; body: FleetAnswer } | undefined
    const events = await propertyEventsOf('attributes', async () => {
      answer = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { ids: ['fp-a1', 'fp-a4', 'ghost-1', 'fp-a5', 'fp-b1', 'ghost-2'], attributes: { mode: 'eco', run: 'ids' } })
    })
    assert.equal(answer!.status, 200, JSON.stringify(answer!.body))
    const body = answer!.body
    assert.deepEqual(
      { attempted: body.attempted, matched: body.matched, changed: body.changed, pushed: body.pushed, sessions: body.sessions, failed: body.failed, pushFailed: body.pushFailed, complete: body.complete },
      { attempted: 6, matched: 4, changed: 4, pushed: 2, sessions: 2, failed: 0, pushFailed: 0, complete: true }
    )
    assert.deepEqual([...body.unknown].sort(), ['ghost-1', 'ghost-2'])
    assert.equal(body.unknownCount, 2)
    assert.equal(typeof body.tookMs, 'number')

    await fence()
    for (const id of ['fp-a1', 'fp-b1']) {
      assert.deepEqual(attributePushes(devices.get(id)!), [{ topic: 'v1/devices/me/attributes', payload: { mode: 'eco', run: 'ids' } }], `${id}: exactly the patch, once`)
    }
    for (const id of ['fp-a2', 'fp-a3', 'fp-a4']) assert.deepEqual(attributePushes(devices.get(id)!), [], `${id} got no push`)
    for (const id of ['fp-a1', 'fp-a4', 'fp-a5', 'fp-b1']) assert.deepEqual(await attributesOf(id), { mode: 'eco', run: 'ids' }, `${id} stored`)
    for (const id of ['fp-a2', 'fp-a3']) assert.deepEqual(await attributesOf(id), {}, `${id} untouched`)
    assert.equal((await t.api('GET', '/v1/devices/ghost-1')).status, 404, 'an unknown id is not made')

    assert.deepEqual(events.map((e) => e.deviceId).sort(), ['fp-a1', 'fp-a4', 'fp-a5', 'fp-b1'], 'one device.property per changed device')
    for (const e of events) assert.deepEqual(e.value, { mode: 'eco', run: 'ids' })
  })

  it('by owner and group: the same merge as each device’s own route, pushed as that route pushes it', async () => {
    // what one device's own route stores and pushes, for comparison
    const own = await t.api<{ attributes: Record<string, unknown> }>('PATCH', '/v1/devices/fp-a1/attributes', { level: 2 })
    assert.equal(own.status, 200)
    let answer: { status: number; body: FleetAnswer } | undefined
    const events = await propertyEventsOf('attributes', async () => {
      answer = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { owner: 'alice', group: 'g1', attributes: { level: 3 } })
    })
    assert.equal(answer!.status, 200, JSON.stringify(answer!.body))
    assert.deepEqual([answer!.body.matched, answer!.body.changed, answer!.body.pushed, answer!.body.sessions, answer!.body.unknownCount], [4, 4, 2, 2, 0])
    await fence()
    const a1 = attributePushes(devices.get('fp-a1')!)
    assert.deepEqual(a1.map((r) => r.payload), [{ mode: 'eco', run: 'ids' }, { level: 2 }, { level: 3 }], 'the fleet push sends the patch, as the route does')
    assert.deepEqual(attributePushes(devices.get('fp-a2')!).map((r) => r.payload), [{ level: 3 }])
    assert.deepEqual(attributePushes(devices.get('fp-a3')!), [], 'another group')
    assert.equal(attributePushes(devices.get('fp-b1')!).length, 1, 'another owner: only the earlier push')
    assert.deepEqual(await attributesOf('fp-a1'), { mode: 'eco', run: 'ids', level: 3 }, 'merged into what was stored')
    assert.deepEqual(await attributesOf('fp-a5'), { mode: 'eco', run: 'ids', level: 3 })
    assert.deepEqual(await attributesOf('fp-a3'), {})
    assert.deepEqual(await attributesOf('fp-b1'), { mode: 'eco', run: 'ids' })
    assert.deepEqual(events.map((e) => e.deviceId).sort(), ['fp-a1', 'fp-a2', 'fp-a4', 'fp-a5'])
  })

  it('all: true reaches every device; a wildcard subscriber gets it too', async () => {
    const answer = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { all: true, attributes: { fleet: 'all' } })
    assert.equal(answer.status, 200)
    assert.equal(answer.body.changed, 7, 'every registered device, the marker too')
    await fence()
    assert.deepEqual(attributePushes(devices.get('fp-a3')!).map((r) => r.payload), [{ fleet: 'all' }])
  })

  it('commands: one id for every device, answered; a repeated call with that id sends nothing twice', async () => {
    const sent = await t.api<FleetAnswer>('POST', '/v1/devices/commands', { owner: 'alice', command: { name: 'reboot', params: { delay: 5 } } })
    assert.equal(sent.status, 200, JSON.stringify(sent.body))
    const id = sent.body.command!.id
    assert.ok(id.length > 0)
    assert.deepEqual(sent.body.command, { id, name: 'reboot', params: { delay: 5 } })
    // alice's five: four connected subscribe to commands (a3 through its wildcard), a5 is offline
    assert.deepEqual([sent.body.matched, sent.body.changed, sent.body.alreadySent, sent.body.pushed, sent.body.sessions], [5, 5, 0, 4, 4])
    await fence()
    for (const d of ['fp-a1', 'fp-a2', 'fp-a3', 'fp-a4']) {
      assert.deepEqual(commandPushes(devices.get(d)!, 'reboot').map((r) => r.payload), [{ id, name: 'reboot', params: { delay: 5 } }], d)
    }
    assert.deepEqual(commandPushes(devices.get('fp-b1')!, 'reboot'), [])
    const stored = (await commandsOf('fp-a5'))[id] as { status: string; name: string }
    assert.deepEqual([stored.status, stored.name], ['sent', 'reboot'])

    // a device answers it on its response topic, as for a command sent to it alone
    await devices.get('fp-a1')!.client!.publishAsync('v1/devices/me/command/response', JSON.stringify({ id, result: 'ok' }), { qos: 1 })
    assert.equal(((await commandsOf('fp-a1'))[id] as { status: string }).status, 'answered')

    // again, with the id, and one more device: only the new one gets it
    const again = await t.api<FleetAnswer>('POST', '/v1/devices/commands', { ids: ['fp-a1', 'fp-a2', 'fp-b1'], command: { id, name: 'reboot', params: { delay: 5 } } })
    assert.equal(again.status, 200)
    assert.deepEqual([again.body.matched, again.body.changed, again.body.alreadySent, again.body.pushed], [3, 1, 2, 1])
    await fence()
    assert.equal(commandPushes(devices.get('fp-a1')!, 'reboot').length, 1, 'not sent twice')
    assert.equal(commandPushes(devices.get('fp-b1')!, 'reboot').length, 1)
    assert.equal(((await commandsOf('fp-a1'))[id] as { status: string }).status, 'answered', 'the answer is kept')
  })

  it('refuses bad bodies with 400, counted, storing nothing', async () => {
    const before = await attributesOf('fp-a2')
    const cases: [string, string, unknown][] = [
      ['PATCH', 'no selector', { attributes: { x: 1 } }],
      ['PATCH', 'two selectors', { ids: ['fp-a2'], owner: 'alice', attributes: { x: 1 } }],
      ['PATCH', 'ids and all', { ids: ['fp-a2'], all: true, attributes: { x: 1 } }],
      ['PATCH', 'all: false', { all: false, attributes: { x: 1 } }],
      ['PATCH', 'empty ids', { ids: [], attributes: { x: 1 } }],
      ['PATCH', 'too many ids', { ids: Array.from({ length: 10_001 }, (_, i) => `d-${i}`), attributes: { x: 1 } }],
      ['PATCH', 'an id that cannot be one', { ids: ['fp-a2', 'a/b'], attributes: { x: 1 } }],
      ['PATCH', 'an id twice', { ids: ['fp-a2', 'fp-a2'], attributes: { x: 1 } }],
      ['PATCH', 'after with ids', { ids: ['fp-a2'], after: 'fp-a1', attributes: { x: 1 } }],
      ['PATCH', 'no attributes', { ids: ['fp-a2'] }],
      ['PATCH', 'empty attributes', { ids: ['fp-a2'], attributes: {} }],
      ['PATCH', 'attributes not an object', { ids: ['fp-a2'], attributes: [1] }],
      ['PATCH', 'attributes larger than a property', { ids: ['fp-a2'], attributes: { big: 'x'.repeat(300 * 1024) } }],
      ['PATCH', 'an unknown field', { ids: ['fp-a2'], attributes: { x: 1 }, connected: true }],
      ['PATCH', 'an owner too long', { owner: 'o'.repeat(257), attributes: { x: 1 } }],
      ['POST', 'a command without a name', { ids: ['fp-a2'], command: { params: {} } }],
      ['POST', 'no command', { ids: ['fp-a2'] }],
      ['POST', 'params larger than a property', { ids: ['fp-a2'], command: { name: 'x', params: 'x'.repeat(300 * 1024) } }],
      ['POST', 'a command id that cannot be one', { ids: ['fp-a2'], command: { name: 'x', id: 'a b' } }]
    ]
    for (const [method, what, body] of cases) {
      const counted = await rejectedCount(t.api, 'bad_api_request')
      const path = method === 'PATCH' ? '/v1/devices/attributes' : '/v1/devices/commands'
      const answer = await t.api<{ message: string }>(method, path, body)
      assert.equal(answer.status, 400, `${what}: ${JSON.stringify(answer.body)}`)
      assert.ok(answer.body.message.length > 0, `${what}: a message`)
      assert.equal(await rejectedCount(t.api, 'bad_api_request'), counted + 1, `${what}: counted`)
    }
    // a body over the route's limit: 413, counted too
    const counted = await rejectedCount(t.api, 'bad_api_request')
    const huge = await t.api('PATCH', '/v1/devices/attributes', { ids: ['fp-a2'], attributes: { big: 'x'.repeat(3 * 1024 * 1024) } })
    assert.equal(huge.status, 413)
    assert.equal(await rejectedCount(t.api, 'bad_api_request'), counted + 1)

    assert.deepEqual(await attributesOf('fp-a2'), before, 'nothing stored')
    assert.ok(!Object.values(await commandsOf('fp-a2')).some((c) => (c as { name: string }).name === 'x'), 'no command stored')
  })

  it('routes the fleet paths apart from device ids: "attributes" and "commands" cannot be made, GET still names a device', async () => {
    for (const id of ['attributes', 'commands']) {
      const made = await t.api<{ message: string }>('POST', '/v1/devices', { id })
      assert.equal(made.status, 400, id)
      assert.match(made.body.message, /reserved/)
    }
    assert.equal((await t.api('GET', '/v1/devices/attributes')).status, 404, 'GET /v1/devices/attributes is the device route')
    assert.equal((await t.api('PATCH', '/v1/devices/fp-a2', { desc: 'still a device route' })).status, 200)
  })

  it('a large selection streams: bounded pages, bounded changes in flight', async () => {
    const N = 5000
    const made = await t.api('POST', '/v1/devices', Array.from({ length: N }, (_, i) => ({ id: `bulk-${String(i).padStart(5, '0')}`, owner: 'bulk' })))
    assert.equal(made.status, 201)
    // watch how the push reads the fleet and how many device changes it has going at once
    const fleet = t.hub.fleet as { devices: typeof t.hub.fleet.devices }
    const pages: number[] = []
    const read = fleet.devices.bind(fleet)
    fleet.devices = async (filter, page) => {
      const found = await read(filter, page)
      pages.push(found.devices.length)
      return found
    }
    const properties = t.hub.properties as { update: typeof t.hub.properties.update }
    const update = properties.update.bind(properties)
    let inFlight = 0
    let most = 0
    properties.update = (async (...args: Parameters<typeof update>) => {
      most = Math.max(most, ++inFlight)
      try {
        return await update(...args)
      } finally {
        inFlight--
      }
    }) as typeof update
    try {
      const answer = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { owner: 'bulk', attributes: { wave: 1 } })
      assert.equal(answer.status, 200)
      assert.deepEqual([answer.body.matched, answer.body.changed, answer.body.complete], [N, N, true])
    } finally {
      fleet.devices = read
      properties.update = update
    }
    assert.ok(pages.length >= Math.ceil(N / FLEET_PAGE), `read in pages: ${pages.join(',')}`)
    assert.ok(Math.max(...pages) <= FLEET_PAGE, `no page over ${FLEET_PAGE}`)
    assert.ok(most <= FLEET_PUSH_IN_FLIGHT && most > 1, `changes in flight at once: ${most}`)
    for (const id of ['bulk-00000', 'bulk-02500', 'bulk-04999']) assert.deepEqual(await attributesOf(id), { wave: 1 })
  })
})

describe('a fleet push the store stops', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub({ storeBusyTimeout: 50, storeTimeout: 1000 })
  })
  after(async () => {
    await t.stop()
  })

  it('answers 503 with how far it got, and resumes after it to the end', async () => {
    const N = 1200
    const ids = Array.from({ length: N }, (_, i) => `stop-${String(i).padStart(5, '0')}`)
    assert.equal((await t.api('POST', '/v1/devices', ids.map((id) => ({ id, group: 'stop' })))).status, 201)
    // another process takes SQLite's write lock once 300 changes were asked for: the rest fail
    const properties = t.hub.properties as { update: typeof t.hub.properties.update }
    const update = properties.update.bind(properties)
    const locker = new Database(join(t.dataDir, 'iothub.db'))
    let asked = 0
    properties.update = ((...args: Parameters<typeof update>) => {
      if (++asked === 300) locker.exec('BEGIN IMMEDIATE')
      return update(...args)
    }) as typeof update
    let stopped: { status: number; body: FleetAnswer }
    try {
      stopped = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { group: 'stop', attributes: { v: 1 } })
    } finally {
      properties.update = update
      locker.exec('ROLLBACK')
      locker.close()
    }
    assert.equal(stopped.status, 503, JSON.stringify(stopped.body).slice(0, 300))
    const s = stopped.body
    assert.equal(s.complete, false)
    assert.match(s.message!, /stopped after \d+ devices/)
    assert.ok(s.attempted < N, `attempted ${s.attempted}`)
    assert.ok(s.failed > 0)
    assert.equal(s.matched, s.changed + s.failed, 'every attempted device is counted')
    assert.equal(s.resumeAfter, ids[s.attempted - 1], 'the walk is a prefix: it resumes after the last attempted')
    assert.equal(s.errors.length, s.failed)

    // what it says to do: the same call, after resumeAfter, then the failed ones by id
    const rest = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { group: 'stop', after: s.resumeAfter, attributes: { v: 1 } })
    assert.equal(rest.status, 200)
    assert.equal(rest.body.changed, N - s.attempted)
    const retried = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { ids: s.errors.map((e) => e.id), attributes: { v: 1 } })
    assert.equal(retried.status, 200)
    const missing: string[] = []
    for (const id of ids) {
      const attributes = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', `/v1/devices/${id}`)).body.properties.attributes
      if (attributes.v !== 1) missing.push(id)
    }
    assert.deepEqual(missing, [], 'every device of the selection changed in the end')
  })
})

describe('fleet pushes at once', () => {
  it('one more than MAX_RUNNING_FLEET_PUSHES answers 429 with Retry-After and changes nothing; the running ones finish', async () => {
    // the store waits, not fails, while another process holds SQLite's write lock
    const t = await startTestHub({ storeBusyTimeout: 60_000, storeTimeout: 60_000 })
    try {
      assert.equal((await t.api('POST', '/v1/devices', [{ id: 'busy-1' }, { id: 'busy-extra' }])).status, 201)
      const properties = t.hub.properties as { update: typeof t.hub.properties.update }
      const update = properties.update.bind(properties)
      let asked = 0
      let allRunning!: () => void
      const running = new Promise<void>((resolve) => (allRunning = resolve))
      properties.update = ((...args: Parameters<typeof update>) => {
        if (++asked === MAX_RUNNING_FLEET_PUSHES) allRunning()
        return update(...args)
      }) as typeof update
      const locker = new Database(join(t.dataDir, 'iothub.db'))
      locker.exec('BEGIN IMMEDIATE')
      let pushes: Promise<{ status: number; body: FleetAnswer }>[] = []
      let refused: Response
      const refusedBefore = await rejectedCount(t.api, 'too_many_fleet_pushes')
      try {
        pushes = Array.from({ length: MAX_RUNNING_FLEET_PUSHES }, (_, i) => t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { ids: ['busy-1'], attributes: { n: i } }))
        await running // each has asked for its device's change, which waits on the store
        refused = await fetch(`${t.httpUrl}/v1/devices/attributes`, {
          method: 'PATCH',
          headers: { authorization: BASIC_ADMIN, 'content-type': 'application/json' },
          body: JSON.stringify({ ids: ['busy-extra'], attributes: { refused: true } })
        })
      } finally {
        properties.update = update
        locker.exec('ROLLBACK')
        locker.close()
      }
      assert.equal(refused.status, 429)
      assert.equal(refused.headers.get('retry-after'), '1')
      assert.match(((await refused.json()) as { message: string }).message, new RegExp(`at most ${MAX_RUNNING_FLEET_PUSHES} at once`))
      assert.equal(await rejectedCount(t.api, 'too_many_fleet_pushes'), refusedBefore + 1, 'the refusal is counted')
      for (const pushed of await Promise.all(pushes)) assert.deepEqual([pushed.status, pushed.body.changed], [200, 1])
      const extra = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', '/v1/devices/busy-extra')).body
      assert.deepEqual(extra.properties.attributes, {}, 'the refused push changed nothing')
    } finally {
      await t.stop()
    }
  })
})

describe('a fleet push the hub’s stop cuts short', () => {
  it('finishes the devices in flight and answers 503 with where to resume', async () => {
    const t = await startTestHub()
    try {
      const N = 3000
      assert.equal((await t.api('POST', '/v1/devices', Array.from({ length: N }, (_, i) => ({ id: `halt-${String(i).padStart(5, '0')}`, owner: 'halt' })))).status, 201)
      const properties = t.hub.properties as { update: typeof t.hub.properties.update }
      const update = properties.update.bind(properties)
      let asked = 0
      let stopping: Promise<void> | undefined
      properties.update = ((...args: Parameters<typeof update>) => {
        // the hub is asked to stop while the push is under way
        if (++asked === 500) stopping = t.hub.stop()
        return update(...args)
      }) as typeof update
      const answer = await t.api<FleetAnswer>('PATCH', '/v1/devices/attributes', { owner: 'halt', attributes: { v: 1 } })
      await stopping
      assert.equal(answer.status, 503, JSON.stringify(answer.body).slice(0, 300))
      assert.match(answer.body.message!, /the hub is stopping/)
      assert.ok(answer.body.attempted >= 500 && answer.body.attempted < N, `attempted ${answer.body.attempted}`)
      assert.equal(answer.body.changed, answer.body.attempted, 'what was taken was finished')
      assert.equal(answer.body.resumeAfter, `halt-${String(answer.body.attempted - 1).padStart(5, '0')}`)
    } finally {
      await t.stop()
    }
  })
})
