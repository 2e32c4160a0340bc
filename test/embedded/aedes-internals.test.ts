/**
 * Pins, against a real Aedes broker and real MQTT clients, each behaviour of Aedes that
 * src/embedded/aedes-internals.ts relies on beyond Aedes' documented API. An upgrade of aedes
 * that changes one fails here, naming the function, instead of somewhere in a lifecycle test.
 */
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type AddressInfo, type Server } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Aedes, type AedesOptions, type Client, type PublishPacket } from 'aedes'
import mqtt from 'mqtt'
import { connectedClient, heldIncomingPacket, packetParser, routerWith, sentDisconnect, skipRouting, subscriptionsOf, type RouterMatcher } from '../../src/embedded/aedes-internals.js'
import { publishPacket, RawMqttClient } from '../helpers/raw-mqtt.js'

/** PUBREC (MQTT 3.1.1 §3.5), the broker's answer to a QoS 2 PUBLISH. */
const PUBREC = 5

interface Broker {
  aedes: Aedes
  server: Server
  port: number
  /** Every client Aedes handles, as it is handed over. */
  handled: Client[]
}

async function startBroker(options: AedesOptions = {}): Promise<Broker> {
  const aedes = new Aedes(options)
  await aedes.listen()
  const handled: Client[] = []
  const server = createServer((socket) => handled.push(aedes.handle(socket)))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { aedes, server, port: (server.address() as AddressInfo).port, handled }
}

async function stopBroker(broker: Broker): Promise<void> {
  await new Promise<void>((resolve) => broker.aedes.close(() => resolve()))
  await new Promise<void>((resolve) => broker.server.close(() => resolve()))
}

async function connectClient(port: number, clientId: string): Promise<mqtt.MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId, reconnectPeriod: 0 })
}

describe('aedes-internals: what the hub relies on in Aedes', () => {
  let broker: Broker
  before(async () => {
    broker = await startBroker()
  })
  after(async () => stopBroker(broker))

  it('connectedClient: a client is in aedes.clients from its CONNACK until it closes', async () => {
    assert.equal(connectedClient(broker.aedes, 'pin-table'), undefined)
    const client = await connectClient(broker.port, 'pin-table')
    const held = connectedClient(broker.aedes, 'pin-table')
    assert.equal(held?.id, 'pin-table', 'connectedClient no longer finds a connected client: aedes.clients changed')
    const closed = once(broker.aedes, 'clientDisconnect')
    await client.endAsync()
    await closed
    assert.equal(connectedClient(broker.aedes, 'pin-table'), undefined, 'connectedClient still finds a closed client')
  })

  it('sentDisconnect: true once the client sent DISCONNECT, false when its socket just dropped', async () => {
    const polite = await connectClient(broker.port, 'pin-polite')
    const politeClient = connectedClient(broker.aedes, 'pin-polite')!
    const gone = once(broker.aedes, 'clientDisconnect')
    await polite.endAsync()
    await gone
    assert.equal(sentDisconnect(politeClient), true, 'sentDisconnect: client._disconnected is no longer set by a DISCONNECT')

    const rude = await connectClient(broker.port, 'pin-rude')
    const rudeClient = connectedClient(broker.aedes, 'pin-rude')!
    const dropped = once(broker.aedes, 'clientDisconnect')
    rude.stream.destroy()
    await dropped
    assert.equal(sentDisconnect(rudeClient), false, 'sentDisconnect is true without a DISCONNECT')
    rude.end(true)
  })

  it('subscriptionsOf: the granted QoS by topic once SUBACKed, gone once UNSUBACKed', async () => {
    const client = await connectClient(broker.port, 'pin-subs')
    try {
      await client.subscribeAsync('pin/subs', { qos: 1 })
      const held = subscriptionsOf(connectedClient(broker.aedes, 'pin-subs')!)
      assert.equal(held['pin/subs']?.qos, 1, 'subscriptionsOf: client.subscriptions no longer maps the topic to its QoS')
      await client.unsubscribeAsync('pin/subs')
      assert.equal(subscriptionsOf(connectedClient(broker.aedes, 'pin-subs')!)['pin/subs'], undefined, 'subscriptionsOf keeps an unsubscribed topic')
    } finally {
      await client.endAsync()
    }
  })
})

describe('aedes-internals: packets seen first, publishes skipped, QoS 2 re-sends found', () => {
  it('packetParser: a listener prepended to the parser sees each packet before Aedes, and may rewrite it', async () => {
    const seenByHook: string[] = []
    const broker = await startBroker({
      authorizePublish: (_client, packet, done) => {
        seenByHook.push(packet.topic)
        done(null)
      }
    })
    const server = broker.server
    server.removeAllListeners('connection')
    const order: string[] = []
    server.on('connection', (socket) => {
      const client = broker.aedes.handle(socket)
      packetParser(client).prependListener('packet', (packet: { cmd: string; topic?: string }) => {
        order.push(packet.cmd)
        if (packet.cmd === 'publish') packet.topic = `mounted/${packet.topic}`
      })
    })
    const client = await connectClient(broker.port, 'pin-parser')
    try {
      await client.publishAsync('raw', 'x', { qos: 1 })
      assert.deepEqual(order.slice(0, 2), ['connect', 'publish'], 'packetParser: the parser no longer emits `packet` for each packet')
      assert.deepEqual(seenByHook, ['mounted/raw'], 'packetParser: a rewrite in the prepended listener no longer reaches Aedes')
    } finally {
      await client.endAsync()
      await stopBroker(broker)
    }
  })

  it('skipRouting: a skipped publish is acknowledged to its sender but reaches no subscriber', async () => {
    const broker = await startBroker()
    skipRouting(broker.aedes, (packet) => packet.topic === 'pin/skipped')
    const subscriber = await connectClient(broker.port, 'pin-sub')
    const publisher = await connectClient(broker.port, 'pin-pub')
    try {
      await subscriber.subscribeAsync('pin/#', { qos: 1 })
      const received: string[] = []
      subscriber.on('message', (topic) => received.push(topic))
      await publisher.publishAsync('pin/skipped', 'x', { qos: 1 }) // resolves on its PUBACK
      const routed = new Promise<void>((resolve) => subscriber.once('message', () => resolve()))
      await publisher.publishAsync('pin/routed', 'y', { qos: 1 })
      await routed
      assert.deepEqual(received, ['pin/routed'], 'skipRouting: aedes.publish is no longer where client publishes are routed')
    } finally {
      await subscriber.endAsync()
      await publisher.endAsync()
      await stopBroker(broker)
    }
  })

  it('heldIncomingPacket: finds a QoS 2 PUBLISH already received (a DUP re-send), not a new one', async () => {
    const answers: ('held' | 'new')[] = []
    let answered!: () => void
    const bothChecked = new Promise<void>((resolve) => (answered = resolve))
    const box: { aedes?: Aedes } = {}
    const broker = await startBroker({
      authorizePublish: (client, packet: PublishPacket, done) => {
        heldIncomingPacket(box.aedes!, client!, packet)
          .then(
            () => answers.push('held'),
            () => answers.push('new')
          )
          .finally(() => {
            done(null)
            if (answers.length === 2) answered()
          })
      }
    })
    box.aedes = broker.aedes
    const { client } = await RawMqttClient.connect(broker.port, { clientId: 'pin-qos2', clean: true })
    try {
      const first = publishPacket({ topic: 'pin/qos2', payload: 'x', qos: 2, messageId: 7 })
      client.send(first)
      await client.next(PUBREC)
      const again = Buffer.from(first)
      again[0] = again[0]! | 0x08 // DUP
      client.send(again)
      await bothChecked
      assert.deepEqual(answers, ['new', 'held'], 'heldIncomingPacket: persistence.incomingGetPacket no longer finds a received QoS 2 packet')
    } finally {
      client.destroy()
      await stopBroker(broker)
    }
  })

  it('routerWith: Aedes routes through the matcher it is given — adds on SUBSCRIBE, matches each PUBLISH, removes on UNSUBSCRIBE', async () => {
    const calls: string[] = []
    const filters = new Map<string, unknown[]>()
    const matcher: RouterMatcher = {
      add(filter, value) {
        calls.push(`add ${filter}`)
        filters.set(filter, [...(filters.get(filter) ?? []), value])
      },
      remove(filter, value) {
        calls.push(`remove ${filter}`)
        filters.set(filter, (filters.get(filter) ?? []).filter((v) => value !== undefined && v !== value))
      },
      match(topic) {
        calls.push(`match ${topic}`)
        return filters.get(topic) ?? []
      }
    }
    const broker = await startBroker({ mq: routerWith(matcher) })
    const subscriber = await connectClient(broker.port, 'pin-router-sub')
    const publisher = await connectClient(broker.port, 'pin-router-pub')
    try {
      await subscriber.subscribeAsync('pin/router', { qos: 1 })
      assert.ok(calls.includes('add pin/router'), `routerWith: a SUBSCRIBE no longer adds its filter to mq._matcher (calls: ${calls.join(', ')})`)
      const received = new Promise<string[]>((resolve) => subscriber.once('message', (topic, payload) => resolve([topic, payload.toString()])))
      await publisher.publishAsync('pin/router', 'routed', { qos: 1 })
      assert.deepEqual(await received, ['pin/router', 'routed'])
      assert.ok(calls.includes('match pin/router'), 'routerWith: a PUBLISH is no longer matched by mq._matcher')
      // Aedes answers UNSUBACK once the router has removed the filter
      await subscriber.unsubscribeAsync('pin/router')
      assert.ok(calls.includes('remove pin/router'), 'routerWith: an UNSUBSCRIBE no longer removes its filter from mq._matcher')
      assert.deepEqual(filters.get('pin/router'), [], 'routerWith: an UNSUBSCRIBE no longer removes its value from mq._matcher')
    } finally {
      await subscriber.endAsync()
      await publisher.endAsync()
      await stopBroker(broker)
    }
  })
})
