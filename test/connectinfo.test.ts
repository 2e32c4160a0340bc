/**
 * A device entity's `connectinfo` follows its sessions: written on every connect and
 * disconnect, `_online` true while any session of the device is connected, the takeover's new
 * connection shown, and offline after a restart (graceful or not) until the device returns.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { eventually, startTestHub, tempDir, type TestHub } from './helpers/hub.js'

interface ConnectInfo {
  _clientid: string
  _online: boolean
  _owner: string
  _peerhost: string
  _protocol: string
  _socketport: string
  _username: string
  _timestamp: number
}

async function connectinfo(t: TestHub, deviceId: string): Promise<ConnectInfo> {
  return (await t.api<{ properties: { connectinfo: ConnectInfo } }>('GET', `/v1/devices/${deviceId}`)).body.properties.connectinfo
}

/** Waits until the device's connectinfo satisfies `check`, and returns it. */
async function until(t: TestHub, deviceId: string, check: (c: ConnectInfo) => boolean, what: string): Promise<ConnectInfo> {
  return eventually(async () => {
    const c = await connectinfo(t, deviceId)
    return check(c) ? c : undefined
  }, 3000, what)
}

describe('connectinfo', () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(async () => {
    await t.stop()
  })

  it('is empty before the first connect, then tKeel core’s shape on connect and disconnect', async () => {
    const d = await t.createDevice({ owner: 'tenant-ci' })
    assert.deepEqual(await connectinfo(t, d.id), {})
    const client = await t.connect({ clientId: 'ci-one', username: d.id, password: d.token })
    const online = await until(t, d.id, (c) => c._online === true, 'online')
    assert.deepEqual(online, {
      _clientid: 'ci-one',
      _online: true,
      _owner: 'tenant-ci',
      _peerhost: '127.0.0.1',
      _protocol: 'mqtt',
      _socketport: new URL(t.mqttUrl).port,
      _username: d.id,
      _timestamp: online._timestamp
    })
    await client.endAsync()
    const offline = await until(t, d.id, (c) => c._online === false, 'offline')
    assert.equal(offline._clientid, 'ci-one')
    assert.ok(offline._timestamp >= online._timestamp)
  })

  it('stays online while any of the device’s sessions is connected, and shows the newest', async () => {
    const d = await t.createDevice()
    const first = await t.connect({ clientId: 'ci-a', username: d.id, password: d.token })
    await until(t, d.id, (c) => c._online && c._clientid === 'ci-a', 'first online')
    await new Promise((r) => setTimeout(r, 5)) // a later connectedAt
    const second = await t.connect({ clientId: 'ci-b', username: d.id, password: d.token })
    await until(t, d.id, (c) => c._online && c._clientid === 'ci-b', 'newest shown')
    await second.endAsync()
    const stillOnline = await until(t, d.id, (c) => c._clientid === 'ci-a', 'back to the one still connected')
    assert.equal(stillOnline._online, true)
    await first.endAsync()
    await until(t, d.id, (c) => !c._online, 'offline when the last one went')
  })

  it('follows a takeover: the new connection, still online', async () => {
    const d = await t.createDevice()
    const old = await t.connect({ clientId: 'ci-take', username: d.id, password: d.token })
    const before = await until(t, d.id, (c) => c._online, 'online')
    const fresh = await t.connect({ clientId: 'ci-take', username: d.id, password: d.token })
    await eventually(() => !old.connected, 3000, 'old connection closed')
    const after = await until(t, d.id, (c) => c._online && c._timestamp > before._timestamp, 'the new connection shown')
    assert.equal(after._clientid, 'ci-take')
    await fresh.endAsync()
    await until(t, d.id, (c) => !c._online, 'offline')
  })

  it('makes no connectinfo for a superuser', async () => {
    await t.connect({ clientId: 'ci-admin', username: 'admin', password: 'public' })
    assert.equal((await t.api('GET', '/v1/devices/admin')).status, 404)
  })
})

describe('connectinfo across a restart', () => {
  it('is offline after the hub restarts, until the device returns', async () => {
    const dataDir = tempDir()
    let t = await startTestHub({}, dataDir)
    const d = await t.createDevice()
    await t.connect({ clientId: 'ci-restart', clean: false, username: d.id, password: d.token })
    await until(t, d.id, (c) => c._online, 'online')
    await t.hub.stop()

    t = await startTestHub({}, dataDir)
    try {
      const restarted = await until(t, d.id, (c) => !c._online, 'offline after restart')
      assert.equal(restarted._clientid, 'ci-restart')
      await t.connect({ clientId: 'ci-restart', clean: false, username: d.id, password: d.token })
      await until(t, d.id, (c) => c._online, 'online again')
    } finally {
      await t.stop()
    }
  })

  it('is brought offline at start when a crash lost the write that said so', async () => {
    const dataDir = tempDir()
    let t = await startTestHub({}, dataDir)
    const d = await t.createDevice()
    const client = await t.connect({ clientId: 'ci-lost', username: d.id, password: d.token })
    const online = await until(t, d.id, (c) => c._online, 'online')
    await client.endAsync()
    await until(t, d.id, (c) => !c._online, 'offline')
    await t.hub.stop()
    // what a kill -9 between the session's end and the connectinfo write leaves behind
    const db = new Database(join(dataDir, 'iothub.db'))
    db.prepare("UPDATE device_properties SET value = ? WHERE device_id = ? AND name = 'connectinfo'").run(JSON.stringify(online), d.id)
    db.close()

    t = await startTestHub({}, dataDir)
    try {
      const fixed = await until(t, d.id, (c) => !c._online, 'offline after the restart')
      assert.equal(fixed._clientid, 'ci-lost')
    } finally {
      await t.stop()
    }
  })
})
