/**
 * Wills live in the store: a client the hub lost in a crash (kill -9) never sent DISCONNECT,
 * so its will is published as soon as the hub is back — not after Aedes' four heartbeat
 * intervals — while the will of a client that disconnected properly is not.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { startChildHub, type ChildHub } from './helpers/child-hub.js'
import { connectClient, eventually, superuserLogin, tempDir } from './helpers/hub.js'

describe('wills across a crash', () => {
  const dataDir = tempDir('iothub-wills-')
  let hub: ChildHub | undefined
  const clients: MqttClient[] = []
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await hub?.kill()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('publishes the will of a client lost to kill -9 at restart, and not that of one that said DISCONNECT', async () => {
    hub = await startChildHub(dataDir)
    const created = await hub.api<{ id: string; token: string }[]>('POST', '/v1/devices', [{}, {}])
    const [lost, polite] = created.body
    const will = (topic: string) => ({ topic, payload: Buffer.from(`${topic} is gone`), qos: 1 as const, retain: true })
    clients.push(await connectClient(hub.mqttUrl, { clientId: 'will-lost', username: lost!.id, password: lost!.token, will: will('wills/lost') }))
    const leaving = await connectClient(hub.mqttUrl, { clientId: 'will-polite', username: polite!.id, password: polite!.token, will: will('wills/polite') })
    await leaving.endAsync() // DISCONNECT: its will is discarded
    // the will's removal is queued before the session's end, and batches commit in order:
    // once the ended session is gone from the API, the removal is on disk
    const api = hub.api
    await eventually(async () => (await api('GET', '/v1/sessions/will-polite')).status === 404, 5000, 'polite session ended')
    await hub.kill('SIGKILL')

    hub = await startChildHub(dataDir)
    // each will is in its device's namespace (`{deviceId}/wills/…`): a superuser watches both
    const watcher = await connectClient(hub.mqttUrl, { clientId: 'will-watcher', ...superuserLogin() })
    clients.push(watcher)
    const retained: Record<string, string> = {}
    watcher.on('message', (topic, payload) => (retained[topic] = payload.toString()))
    await watcher.subscribeAsync('+/wills/#', { qos: 1 })
    await new Promise((r) => setTimeout(r, 300))
    assert.deepEqual(retained, { [`${lost!.id}/wills/lost`]: 'wills/lost is gone' })
  })
})
