/**
 * The device commands that use issue 15's device routes (`devices list|update|delete|rotate-token`,
 * `sessions kick`), as child processes against a real hub with mqtt.js clients: what each prints,
 * and that the hub did it (the old token refused, the sessions kicked, the device gone).
 */
import assert from 'node:assert/strict'
import { iothub, lines } from './helpers/cli.js'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { connectClient, eventually, startTestHub, type TestHub } from './helpers/hub.js'


const cells = (line: string): string[] => line.split(/ {2,}/)

describe('iothub devices list|update|delete|rotate-token, sessions kick', () => {
  let hub: TestHub
  let url: string[]
  const clients: MqttClient[] = []
  before(async () => {
    hub = await startTestHub()
    url = ['--url', hub.httpUrl]
  })
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync()))
    await hub.stop()
  })

  it('devices list: filters, a table without tokens, and the API\'s JSON', async () => {
    const a = await hub.createDevice({ id: 'list-alpha', owner: 'pia', name: 'Kitchen' })
    await hub.createDevice({ id: 'list-beta', owner: 'pia' })
    await hub.createDevice({ id: 'list-gamma', owner: 'quinn' })
    clients.push(await hub.connect({ clientId: a.id, username: a.id, password: a.token }))
    const listed = await iothub(['devices', 'list', '--owner', 'pia', ...url])
    assert.equal(listed.code, 0, listed.stderr)
    const [header, ...rows] = lines(listed.stdout)
    assert.deepEqual(cells(header!), ['ID', 'NAME', 'OWNER', 'GROUP', 'ONLINE', 'CREATED'])
    assert.deepEqual(rows.map((r) => cells(r)[0]), ['list-alpha', 'list-beta'])
    assert.doesNotMatch(listed.stdout, new RegExp(a.token))
    const connected = await iothub(['devices', 'list', '--connected', 'true', '--json', ...url])
    const page = JSON.parse(connected.stdout) as { data: { id: string }[] }
    assert.deepEqual(page, (await hub.api('GET', '/v1/devices?connected=true&limit=100')).body)
    assert.deepEqual(page.data.map((d) => d.id), ['list-alpha'])
    const search = await iothub(['devices', 'list', '--q', 'KITCH', '--json', ...url])
    assert.deepEqual((JSON.parse(search.stdout) as { data: { id: string }[] }).data.map((d) => d.id), ['list-alpha'])
  })

  it('devices update changes what it is given; nothing to change is a wrong command line', async () => {
    await hub.createDevice({ id: 'upd-1', owner: 'pia' })
    const run = await iothub(['devices', 'update', 'upd-1', '--name', 'Porch', '--ext', '{"floor":2}', '--json', ...url])
    assert.equal(run.code, 0, run.stderr)
    const shown = (await hub.api<{ name: string; ext: unknown; owner: string }>('GET', '/v1/devices/upd-1')).body
    assert.deepEqual([shown.name, shown.ext, shown.owner], ['Porch', { floor: 2 }, 'pia'])
    assert.equal((JSON.parse(run.stdout) as { name: string }).name, 'Porch')
    const nothing = await iothub(['devices', 'update', 'upd-1', ...url])
    assert.equal(nothing.code, 2)
    assert.match(nothing.stderr, /nothing to change/)
    const unknown = await iothub(['devices', 'update', 'nope', '--name', 'x', ...url])
    assert.equal(unknown.code, 1)
    assert.match(unknown.stderr, /HTTP 404/)
  })

  it('devices rotate-token --kick: a new token shown once, the old one refused, its session kicked', async () => {
    const d = await hub.createDevice({ id: 'rot-1' })
    const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token, reconnectPeriod: 0 })
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
    const run = await iothub(['devices', 'rotate-token', 'rot-1', '--kick', ...url])
    assert.equal(run.code, 0, run.stderr)
    const [header, row] = lines(run.stdout)
    assert.deepEqual(cells(header!), ['ID', 'TOKEN', 'KICKED'])
    const [id, token, kicked] = cells(row!)
    assert.deepEqual([id, kicked], ['rot-1', '1'])
    assert.notEqual(token, d.token)
    await closed
    await assert.rejects(connectClient(hub.mqttUrl, { clientId: 'rot-1', username: 'rot-1', password: d.token, reconnectPeriod: 0 }))
    const again = await connectClient(hub.mqttUrl, { clientId: 'rot-1', username: 'rot-1', password: token!, reconnectPeriod: 0 })
    await again.endAsync()
  })

  it('sessions kick disconnects a session; devices delete ends its sessions and removes it', async () => {
    const d = await hub.createDevice({ id: 'del-1' })
    const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token, reconnectPeriod: 0 })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()))
    const kick = await iothub(['sessions', 'kick', 'del-1', ...url])
    assert.equal(kick.code, 0, kick.stderr)
    assert.equal(kick.stdout.trim(), 'kicked del-1')
    await closed
    await eventually(async () => (await hub.api<{ connected?: boolean }>('GET', '/v1/sessions/del-1')).status === 404, 10_000, 'the session ended')
    const again = await hub.connect({ clientId: d.id, username: d.id, password: d.token, reconnectPeriod: 0 })
    await again.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    const run = await iothub(['devices', 'delete', 'del-1', '--json', ...url])
    assert.equal(run.code, 0, run.stderr)
    assert.deepEqual(JSON.parse(run.stdout), { id: 'del-1', sessionsEnded: 1, subscriptionsDeleted: 1 })
    assert.equal((await hub.api('GET', '/v1/devices/del-1')).status, 404)
    const gone = await iothub(['sessions', 'kick', 'del-1', ...url])
    assert.equal(gone.code, 1)
    assert.match(gone.stderr, /HTTP 404/)
  })
})
