/**
 * The `iothub` commands that talk to a running hub, run as they are run (child processes of
 * src/main.ts) against a real hub on a SQLite file with real mqtt.js clients: each command's
 * table and --json against what the API says, paging, the connection flags and their
 * environment variables, and `status`'s exit status when the hub is not ready. (test/cli.test.ts:
 * the command line itself; test/cli-devices.test.ts: the device commands that change devices.)
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import type { MqttClient } from 'mqtt'
import { assertOneLineError, iothub, lines } from './helpers/cli.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

/** The cells of a table line (columns are two or more spaces apart). */
const cells = (line: string): string[] => line.split(/ {2,}/)

describe('iothub against a running hub', () => {
  let hub: TestHub
  let connection: string[]
  const clients: MqttClient[] = []
  let devices: { id: string; token: string }[]
  before(async () => {
    hub = await startTestHub()
    connection = ['--url', hub.httpUrl]
  })
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync()))
    await hub.stop()
  })

  it('devices create prints each token once, as a table or as JSON lines', async () => {
    const table = await iothub(['devices', 'create', '--count', '2', '--owner', 'olga', '--group', 'g1', ...connection])
    assert.equal(table.code, 0, table.stderr)
    const [header, ...rows] = lines(table.stdout)
    assert.deepEqual(cells(header!), ['ID', 'TOKEN', 'OWNER', 'GROUP'])
    assert.equal(rows.length, 2)
    const json = await iothub(['devices', 'create', '--id', 'cli-dev-1', '--name', 'Hall', '--ext', '{"model":"T1"}', '--owner', 'olga', '--json', ...connection])
    assert.equal(json.code, 0, json.stderr)
    const made = lines(json.stdout).map((l) => JSON.parse(l) as { id: string; token: string })
    assert.equal(made.length, 1)
    assert.equal(made[0]!.id, 'cli-dev-1')
    devices = [...rows.map((r) => ({ id: cells(r)[0]!, token: cells(r)[1]! })), made[0]!]
    // the tokens printed are the devices' own: they log in
    for (const d of devices) {
      const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token })
      await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
      clients.push(client)
    }
    const shown = (await hub.api<{ name: string; owner: string; ext: unknown }>('GET', '/v1/devices/cli-dev-1')).body
    assert.deepEqual([shown.name, shown.owner, shown.ext], ['Hall', 'olga', { model: 'T1' }])
    // a device id taken: what the hub said, exit 1
    assertOneLineError(await iothub(['devices', 'create', '--id', 'cli-dev-1', ...connection]), 1, /^iothub: the hub refused: HTTP 409/)
  })

  it('devices get, sessions list|get, subscriptions list: tables of what the API says, and its JSON with --json', async () => {
    const device = await iothub(['devices', 'get', 'cli-dev-1', ...connection])
    assert.equal(device.code, 0, device.stderr)
    const byField = new Map(lines(device.stdout).slice(1).map((l) => [cells(l)[0], cells(l).slice(1).join('  ')]))
    assert.equal(byField.get('id'), 'cli-dev-1')
    assert.equal(byField.get('owner'), 'olga')
    assert.equal(byField.get('ext'), '{"model":"T1"}')
    const deviceJson = await iothub(['devices', 'get', 'cli-dev-1', '--json', ...connection])
    assert.deepEqual(JSON.parse(deviceJson.stdout), (await hub.api('GET', '/v1/devices/cli-dev-1')).body)
    assertOneLineError(await iothub(['devices', 'get', 'nope', ...connection]), 1, /HTTP 404 no device nope/)

    const sessions = await iothub(['sessions', 'list', '--connected', 'true', ...connection])
    assert.equal(sessions.code, 0, sessions.stderr)
    const [header, ...rows] = lines(sessions.stdout)
    assert.deepEqual(cells(header!), ['CLIENT ID', 'DEVICE', 'PROTOCOL', 'NODE', 'CONNECTED', 'PEER', 'TOPICS', 'SINCE'])
    assert.deepEqual(rows.map((r) => cells(r)[0]).sort(), devices.map((d) => d.id).sort())
    assert.ok(rows.every((r) => cells(r)[2] === 'mqtt' && cells(r)[4] === 'yes' && cells(r)[6] === '1'), rows.join('\n'))
    const sessionsJson = await iothub(['sessions', 'list', '--json', ...connection])
    assert.deepEqual(JSON.parse(sessionsJson.stdout), (await hub.api('GET', '/v1/sessions?limit=100')).body)
    const one = await iothub(['sessions', 'get', 'cli-dev-1', '--json', ...connection])
    assert.deepEqual(JSON.parse(one.stdout), (await hub.api('GET', '/v1/sessions/cli-dev-1')).body)

    // paging: one a page tells how to go on; --all walks every page
    const first = await iothub(['subscriptions', 'list', '--limit', '1', ...connection])
    assert.equal(lines(first.stdout).length, 2)
    assert.match(first.stderr, /^more: --cursor \S+ \(or --all\)$/m)
    const all = await iothub(['subscriptions', 'list', '--limit', '1', '--all', '--json', ...connection])
    const listed = JSON.parse(all.stdout) as { data: { deviceId: string; topic: string }[]; next: null }
    assert.equal(listed.next, null)
    assert.deepEqual(listed.data.map((s) => s.deviceId).sort(), devices.map((d) => d.id).sort())
    assert.deepEqual(listed.data, (await hub.api<{ data: unknown[] }>('GET', '/v1/subscriptions')).body.data)
    const mine = await iothub(['subscriptions', 'list', '--device', 'cli-dev-1', ...connection])
    assert.deepEqual(lines(mine.stdout).slice(1).map((l) => [cells(l)[1], cells(l)[3]]), [['cli-dev-1', 'v1/devices/me/attributes']])
  })

  it('status shows readiness, counts and replicas; --json is GET /v1/status', async () => {
    await eventually(async () => ((await hub.api<{ counts: { connected: number } }>('GET', '/v1/status')).body.counts.connected === 3), 30_000, 'the counts')
    const status = await iothub(['status', ...connection])
    assert.equal(status.code, 0, status.stderr)
    const byField = new Map(lines(status.stdout).map((l) => [cells(l)[0]!.trim(), cells(l).slice(1).join('  ')]))
    assert.equal(byField.get('node'), hub.hub.config.node)
    assert.equal(byField.get('ready'), 'yes')
    assert.equal(byField.get('store')?.split(';')[0], 'sqlite, healthy')
    assert.equal(byField.get('devices'), '3')
    assert.equal(byField.get('connected'), `3 (mqtt 3; by node: ${hub.hub.config.node} 3)`)
    assert.equal(byField.get('subscriptions'), '3')
    assert.ok(byField.has('REPLICA'), status.stdout)
    const json = JSON.parse((await iothub(['status', '--json', ...connection])).stdout) as { node: string; counts: unknown; replicas: unknown[] }
    const api = (await hub.api<{ counts: unknown }>('GET', '/v1/status')).body
    assert.equal(json.node, hub.hub.config.node)
    assert.deepEqual(json.counts, api.counts)
    assert.equal(json.replicas.length, 1)
  })

  it('takes the connection from IOTHUB_URL, IOTHUB_API_USER and IOTHUB_API_PASSWORD; wrong credentials are the hub refusing', async () => {
    const fromEnv = await iothub(['status', '--json'], { IOTHUB_URL: hub.httpUrl, IOTHUB_API_USER: 'admin', IOTHUB_API_PASSWORD: 'public' })
    assert.equal(fromEnv.code, 0, fromEnv.stderr)
    assert.equal((JSON.parse(fromEnv.stdout) as { node: string }).node, hub.hub.config.node)
    // IOTHUB_HTTP_PORT alone names the port on loopback, as the hub takes it
    const port = new URL(hub.httpUrl).port
    assert.equal((await iothub(['status', '--json'], { IOTHUB_HTTP_PORT: port })).code, 0)
    assertOneLineError(await iothub(['status'], { IOTHUB_URL: hub.httpUrl, IOTHUB_API_PASSWORD: 'wrong' }), 1, /^iothub: the hub refused: HTTP 401/)
    // a flag wins over its variable
    assert.equal((await iothub(['status', '--api-password', 'public'], { IOTHUB_URL: hub.httpUrl, IOTHUB_API_PASSWORD: 'wrong' })).code, 0)
  })
})

describe('iothub status against a hub that is not ready', () => {
  let hub: TestHub
  before(async () => {
    hub = await startTestHub({ storeBusyTimeout: 100 })
  })
  after(async () => {
    await hub.stop()
  })

  it('prints why and exits 3, as a table and as JSON; 0 again once the hub is ready', async () => {
    const device = await hub.createDevice()
    // a real failure: another process holds SQLite's write lock, so the hub's next write fails
    const locker = new Database(join(hub.dataDir, 'iothub.db'))
    locker.exec('BEGIN IMMEDIATE')
    try {
      await assert.rejects(hub.connect({ clientId: 'cli-not-ready', username: device.id, password: device.token }), /Server unavailable/i)
      const table = await iothub(['status', '--url', hub.httpUrl])
      assert.equal(table.code, 3, `${table.stdout}\n${table.stderr}`)
      const byField = new Map(lines(table.stdout).map((l) => [cells(l)[0]!.trim(), cells(l).slice(1).join('  ')]))
      assert.equal(byField.get('ready'), 'no')
      assert.match(byField.get('store') ?? '', /FAILING/)
      assert.equal(lines(table.stderr).length, 1, table.stderr)
      assert.match(table.stderr, /^iothub: the hub is not ready \(failing: .*store.*\)/)
      const json = await iothub(['status', '--json', '--url', hub.httpUrl])
      assert.equal(json.code, 3, json.stderr)
      assert.equal((JSON.parse(json.stdout) as { ready: boolean }).ready, false)
    } finally {
      locker.exec('ROLLBACK')
      locker.close()
    }
    const client = await hub.connect({ clientId: 'cli-ready-again', username: device.id, password: device.token })
    try {
      const again = await iothub(['status', '--url', hub.httpUrl])
      assert.equal(again.code, 0, again.stderr)
      assert.equal(again.stderr, '')
    } finally {
      await client.endAsync()
    }
  })
})
