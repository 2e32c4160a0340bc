/**
 * The publish journal (src/embedded/publish-journal.ts) keeps a QoS 1 publish acknowledged before
 * a crash until it is routed. What it replays at start is delivered as the first routing would
 * have been: a device's own change-topic publish is not echoed back to that device.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import type { PublishPacket } from 'aedes'
import { PublishJournal } from '../../src/embedded/publish-journal.js'
import { createLogger } from '../../src/observability/logger.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { eventually, startTestHub, tempDir } from '../helpers/hub.js'

describe('the publish journal across a crash', () => {
  it("replays a publish with its sender: a device's own command is not delivered back to it, a superuser's is", async () => {
    const dataDir = tempDir('iothub-journal-')
    const first = await startTestHub({}, dataDir)
    const device = await first.createDevice()
    const clientId = `journal-${device.id}`
    const persistent = await first.connect({ clientId, clean: false, username: device.id, password: device.token })
    await persistent.subscribeAsync('v1/devices/me/commands', { qos: 1 })
    await persistent.endAsync()
    await first.hub.stop()

    // what a crash between the PUBACK and the routing leaves: the journal's entries, as it writes
    // them, of the device's own publish and then a superuser's, both on the device's command topic
    const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000 })
    const journal = new PublishJournal(store, createLogger('silent'))
    journal.load((await store.load()).journal)
    const command = (payload: string, sender?: string) =>
      ({ cmd: 'publish', topic: `${device.id}/v1/devices/me/commands`, payload: Buffer.from(payload), qos: 1, retain: false, dup: false, ...(sender ? { clientId: sender } : {}) }) as PublishPacket
    await journal.accept(command('its own', clientId))
    await journal.accept(command('from the operator'))
    await store.close()

    const t = await startTestHub({}, dataDir)
    try {
      // both were replayed into the offline session's queue, in order; the device hears the second only
      const received: string[] = []
      const back = await t.connect({ clientId, clean: false, username: device.id, password: device.token })
      back.on('message', (_topic, payload) => received.push(payload.toString()))
      await eventually(() => received.length > 0, 5000, 'the queued command')
      // queued in order: had its own come back, it would be first
      assert.deepEqual(received, ['from the operator'])
    } finally {
      await t.stop()
    }
    rmSync(dataDir, { recursive: true, force: true })
  })
})
