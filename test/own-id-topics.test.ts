/**
 * A device's topics are mounted under `{deviceId}/`; what reaches it has that prefix taken off
 * once. A device may name topics that themselves begin with its id (`{id}/status`, routed as
 * `{id}/{id}/status`): the prefix must come off once only, however a message reaches it — live,
 * re-sent unacknowledged on a reconnect, or from its queue after the hub restarted.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import { startTestHub, superuserLogin, tempDir, type TestHub } from './helpers/hub.js'
import { PacketType, publishTopic, RawMqttClient, subscribePacket, type RawPacket } from './helpers/raw-mqtt.js'

/** A QoS 1 PUBLISH's topic and payload (after the topic comes its message id). */
function topicAndPayload(p: RawPacket): string {
  const topic = publishTopic(p)
  return `${topic} ${p.body.subarray(2 + Buffer.byteLength(topic) + 2).toString()}`
}

describe('a device topic that begins with the device id', () => {
  it('reaches the device with the prefix taken off once: live, re-sent on reconnect, and from its queue after a restart', async () => {
    const dataDir = tempDir('iothub-own-id-')
    let t: TestHub = await startTestHub({}, dataDir)
    const raws: RawMqttClient[] = []
    try {
      const device = await t.createDevice()
      const own = `${device.id}/status`
      const login = { clientId: `own-${device.id}`, username: device.id, password: device.token, clean: false }
      const connect = async (hub: TestHub) => {
        const { client, returnCode } = await RawMqttClient.connect(Number(new URL(hub.mqttUrl).port), login)
        raws.push(client)
        assert.equal(returnCode, 0)
        return client
      }
      // the raw client never sends PUBACK: every message stays the device's to be sent again
      const receive = async (client: RawMqttClient, count: number) => {
        const got: string[] = []
        for (let i = 0; i < count; i++) got.push(topicAndPayload(await client.next(PacketType.PUBLISH, 10_000)))
        return got
      }

      const first = await connect(t)
      first.send(subscribePacket(1, [{ topic: own, qos: 1 }]))
      await first.next(PacketType.SUBACK)
      const publisher = await t.connect({ clientId: 'own-id-publisher', ...superuserLogin() })
      await publisher.publishAsync(`${device.id}/${own}`, 'live', { qos: 1 })
      assert.deepEqual(await receive(first, 1), [`${own} live`])
      first.destroy()
      await publisher.publishAsync(`${device.id}/${own}`, 'queued', { qos: 1 })

      const again = await connect(t)
      assert.deepEqual(await receive(again, 2), [`${own} live`, `${own} queued`])
      again.destroy()

      await t.hub.stop()
      t = await startTestHub({}, dataDir)
      const afterRestart = await connect(t)
      assert.deepEqual(await receive(afterRestart, 2), [`${own} live`, `${own} queued`])
    } finally {
      for (const raw of raws) raw.destroy()
      await t.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})
