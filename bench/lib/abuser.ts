/**
 * The hostile device of the noisy-neighbour bench, in its own process (so its own cpu is not
 * the hub's): on `start` it runs one abuse in a loop until `stop`, reconnecting whenever the hub
 * closes it, and reports how often the hub refused or closed it. Every loop is bounded by the
 * `stop` command and paced by the hub's own answers; it only talks to 127.0.0.1.
 */
import { connect as tcpConnect, type Socket } from 'node:net'
import { MqttClient as MqttClientClass, type MqttClient } from 'mqtt'
import { generate } from 'mqtt-packet'
import { connectOne } from './child-fleet.js'
import { sleep } from './util.js'

export type Abuse = 'cpu-floor' | 'subscriptions' | 'sessions' | 'slow-consumer' | 'retained' | 'deep-json' | 'publish-flood' | 'connections' | 'wrong-logins'
/**
 * `cpu-floor` first: it sends the hub nothing, and only burns cpu beside it as the abusers do;
 * `wrong-logins` last: it leaves the abuser's address throttled for the abuses after it.
 */
export const ABUSES: Abuse[] = ['cpu-floor', 'subscriptions', 'sessions', 'slow-consumer', 'retained', 'deep-json', 'publish-flood', 'connections', 'wrong-logins']

export interface AbuseTarget {
  mqttUrl: string
  device: { id: string; token: string }
}

export type AbuserCommand = { cmd: 'start'; abuse: Abuse; target: AbuseTarget } | { cmd: 'stop' } | { cmd: 'exit' }
export type AbuserReply = { type: 'ready' } | { type: 'started' } | { type: 'stopped'; attempts: number; refused: number; cpuMs: number }

/** The hostile device's own host: another loopback address than the probe's 127.0.0.1. */
const ABUSER_ADDRESS = '127.0.0.2'
const FROM_ABUSER = { localAddress: ABUSER_ADDRESS }
const DEEP_JSON = Buffer.from(`{"a":${'['.repeat(10_000)}${']'.repeat(10_000)}}`)
const CHUNK = Buffer.alloc(64 * 1024, 0x61)

class Abuser {
  running = false
  attempts = 0
  refused = 0
  private readonly open = new Set<MqttClient | Socket>()

  async run(abuse: Abuse, target: AbuseTarget): Promise<void> {
    const { device } = target
    const url = new URL(target.mqttUrl)
    const login = { username: device.id, password: device.token }
    switch (abuse) {
      case 'cpu-floor':
        // a third of one cpu, about what the busiest abusers burn: on a 2-cpu machine the hub and
        // the probe share what is left, so this is the slowdown no hub could avoid
        while (this.running) {
          const until = performance.now() + 5
          while (performance.now() < until) this.attempts++
          await sleep(10)
        }
        return
      case 'subscriptions':
        return this.loop(async (n) => {
          const client = this.keep(await connectOne(target.mqttUrl, `abuse-subs-${n}`, login, FROM_ABUSER))
          for (let i = 0; this.running && client.connected; i++) {
            this.attempts++
            // mqtt.js fails a SUBSCRIBE that has any topic refused (SUBACK 0x80)
            await client.subscribeAsync(Array.from({ length: 100 }, (_, k) => `s/${n}/${i}/${k}`)).catch(() => this.refused++)
          }
        })
      case 'sessions':
        return this.loop(async (n) => {
          this.attempts++
          // a persistent session left behind each time
          const client = await connectOne(target.mqttUrl, `abuse-session-${n}`, login, { clean: false, localAddress: ABUSER_ADDRESS }).catch(() => undefined)
          if (!client) this.refused++
          else await client.endAsync().catch(() => undefined)
        })
      case 'slow-consumer':
        return this.loop(async (n) => {
          // a raw socket that subscribes, then reads nothing more: the kernel's buffers fill,
          // then the hub's (mqtt.js would go on reading through its pipe)
          const sink = tcpConnect({ port: Number(url.port), host: url.hostname, localAddress: ABUSER_ADDRESS })
          sink.on('error', () => undefined)
          this.open.add(sink)
          const closed = new Promise<void>((resolve) => sink.once('close', () => resolve()))
          let gone = false
          void closed.then(() => {
            gone = true
            this.open.delete(sink)
          })
          sink.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `abuse-sink-${n}`, keepalive: 300, username: login.username, password: Buffer.from(login.password) }))
          sink.write(generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood', qos: 0 }] }))
          await Promise.race([new Promise((resolve) => sink.once('data', resolve)), closed]) // CONNACK (and SUBACK), unless refused
          await sleep(20)
          sink.pause()
          // its own second connection publishes 400 × 64 KiB to it, as in the reported attack
          const publisher = this.keep(await connectOne(target.mqttUrl, `abuse-flooder-${n}`, login, FROM_ABUSER))
          for (let i = 0; i < 400 && this.running; i++) {
            this.attempts++
            await publisher.publishAsync('flood', CHUNK, { qos: 1 })
          }
          publisher.end(true)
          // reading again shows whether the hub closed it meanwhile (a paused socket sees no FIN)
          sink.resume()
          sink.on('data', () => undefined)
          await Promise.race([closed, sleep(1000)])
          if (gone) this.refused++
          sink.destroy()
        })
      case 'retained':
        return this.loop(async (n) => {
          const client = this.keep(await connectOne(target.mqttUrl, `abuse-retain-${n}`, login, FROM_ABUSER))
          for (let i = 0; this.running && client.connected; i++) {
            this.attempts++
            await client.publishAsync(`r/${n}/${i}`, CHUNK.subarray(0, 1024), { qos: 1, retain: true }).catch(() => this.refused++)
          }
        })
      case 'deep-json':
        return this.loop(async (n) => {
          const client = this.keep(await connectOne(target.mqttUrl, `abuse-deep-${n}`, login, FROM_ABUSER))
          while (this.running && client.connected) {
            this.attempts++
            await client.publishAsync('v1/devices/me/attributes', DEEP_JSON, { qos: 1 }).catch(() => this.refused++)
          }
        })
      case 'publish-flood':
        return this.loop(async (n) => {
          const client = this.keep(await connectOne(target.mqttUrl, `abuse-flood-${n}`, login, FROM_ABUSER))
          // QoS 0 on a topic of its own that no one reads, as fast as the socket takes them: each
          // one parsed, checked and routed by the hub, paced only by TCP
          for (let i = 0; this.running && client.connected; i++) {
            this.attempts++
            client.publish('flood/readings', `{"i":${i},"temperature":21.5}`, { qos: 0 })
            if (i % 256 !== 255) continue
            // what the socket has not sent yet stays under 64 KiB; and `stop` is heard
            await new Promise((resolve) => setImmediate(resolve))
            while (this.running && client.connected && client.stream.writableLength > 64 * 1024) await sleep(1)
          }
        })
      case 'connections':
        // idle sockets that never send CONNECT, held: as many as the hub lets in (5,000 at most),
        // trying again 20 times a second once it refuses them. (A host that opens and drops
        // connections as fast as it can is a flood for the kernel to stop: see the README.)
        return this.loop(async () => {
          const socket = tcpConnect({ port: Number(url.port), host: url.hostname, localAddress: ABUSER_ADDRESS })
          socket.on('error', () => undefined)
          this.open.add(socket)
          this.attempts++
          let refused = false
          socket.once('close', () => {
            this.open.delete(socket)
            if (!this.running) return // closed by the abuser's own stop
            this.refused++
            refused = true
          })
          await new Promise((resolve) => setImmediate(resolve))
          await sleep(1) // a refusal closes at once: give it the time to be seen
          if (refused || this.open.size >= 5_000) await sleep(50)
        })
      case 'wrong-logins':
        return this.loop(async (n) => {
          this.attempts++
          await connectOne(target.mqttUrl, `abuse-wrong-${n}`, { username: device.id, password: 'wrong' }, FROM_ABUSER).then(
            (c) => c.end(true),
            () => this.refused++
          )
        })
    }
  }

  private keep<T extends MqttClient>(client: T): T {
    this.open.add(client)
    client.once('close', () => this.open.delete(client))
    return client
  }

  /** Repeats `step` until stopped; a step the hub cut short is simply started again. */
  private async loop(step: (n: number) => Promise<void>): Promise<void> {
    for (let n = 0; this.running; n++) await step(n).catch(() => sleep(5))
  }

  close(): void {
    for (const c of this.open) {
      if (c instanceof MqttClientClass) c.end(true)
      else c.destroy()
    }
    this.open.clear()
  }
}


if (process.argv.includes('--child')) {
  const send = (reply: AbuserReply) => process.send!(reply)
  let abuser: Abuser | undefined
  let running: Promise<void> | undefined
  let cpuAtStart = process.cpuUsage()
  process.on('message', (command: AbuserCommand) => {
    if (command.cmd === 'start') {
      abuser = new Abuser()
      abuser.running = true
      cpuAtStart = process.cpuUsage()
      running = abuser.run(command.abuse, command.target)
      send({ type: 'started' })
    } else if (command.cmd === 'stop') {
      const current = abuser!
      current.running = false
      // its connections closed first: a step waiting on one of them ends with it
      current.close()
      void (running ?? Promise.resolve()).finally(() => {
        const cpu = process.cpuUsage(cpuAtStart)
        send({ type: 'stopped', attempts: current.attempts, refused: current.refused, cpuMs: (cpu.user + cpu.system) / 1000 })
      })
    } else {
      abuser?.close()
      process.exit(0)
    }
  })
  send({ type: 'ready' })
}
