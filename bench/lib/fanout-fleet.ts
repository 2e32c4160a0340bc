/**
 * The client side of the fan-out benchmark (bench/fanout.ts), run as a child process so that
 * neither the devices' nor the load generator's cpu is the broker's. One process holds both:
 * the N device clients (mqtt.js) and the load generator (HTTP requests to the hub, or MQTT
 * publishes to bare Aedes), so a push's send time and its receipt time are read on the same
 * clock (`performance.now()`).
 *
 * Protocol over IPC: the child says `ready`; then
 *   - `setup`: for the hub, registers the N devices (`POST /v1/devices`, bulk) and takes their
 *     tokens; connects the N devices (MQTT 3.1.1, clean session, client id = device id, for the
 *     hub username = id and password = token), each subscribing to its attributes topic at QoS
 *     1; opens the load generator's connections (bare: `publishers` MQTT clients); → `setup-done`;
 *   - `fanout`: one push per device for devices [0, count): the hub gets one
 *     `PATCH /v1/devices/{id}/attributes` per device, bare Aedes one QoS 1 PUBLISH per device on
 *     `{id}/v1/devices/me/attributes`, `concurrency` in flight (a request or a publish is in
 *     flight until its response or its PUBACK) — or, `fleet`, ONE `PATCH /v1/devices/attributes`
 *     to the hub for all of them; waits until every device has its push (or a timeout), then a
 *     short grace period for duplicates; → `fanout-done` with the report;
 *   - `teardown`: ends every client; → `teardown-done`.
 *
 * A push's payload is the same JSON in both runs (the hub publishes the PATCH body as it was
 * sent): `{"device":id,"seq":i,"phase":p,"sentAt":ms,"setpoint":21.5}`, and BENCH_FANOUT_ATTRIBUTE_KEYS
 * more (`ATTRIBUTE_KEYS`; the fleet push's attributes too). A device checks that
 * what it receives is meant for it (device, seq, phase, topic) and counts exactly-once.
 */
import { Pool } from 'undici'
import { performance } from 'node:perf_hooks'
import type { MqttClient } from 'mqtt'
import { ChildLink, connectOne, cpuMsSince, forkedToRun, pool } from './child-fleet.js'
import { basicAuthHeader, registerDevices } from './devices.js'
import { envInt, nowMs, percentiles, sleep } from './util.js'

/**
 * BENCH_FANOUT_ATTRIBUTE_KEYS: keys a push carries beside its own five, each one attribute as a
 * device might report it (`"attr007":{"value":7.5,"unit":"celsius","label":"sensor 7"}`, ~60
 * bytes), the same in every target's payload. 0 by default: the pushes the targets were set for.
 * Larger documents show what the hub's path does per byte of a property (serializing it, storing
 * it, logging it) that the floors do not.
 */
export const ATTRIBUTE_KEYS = envInt('BENCH_FANOUT_ATTRIBUTE_KEYS', 0, 0)
const EXTRA_ATTRIBUTES = Array.from({ length: ATTRIBUTE_KEYS }, (_, k) => `,"attr${String(k).padStart(3, '0')}":${JSON.stringify({ value: k + 0.5, unit: 'celsius', label: `sensor ${k}` })}`).join('')

/** A push's JSON: its own keys, then the extra attributes. */
const pushBody = (fields: Record<string, unknown>): string => JSON.stringify(fields).slice(0, -1) + EXTRA_ATTRIBUTES + '}'

/** What a device subscribes to on the hub: its own topic, under its mountpoint in the broker. */
export const HUB_ATTRIBUTES_TOPIC = 'v1/devices/me/attributes'

/** The broker topic the hub routes a device's attribute push on; bare Aedes' devices subscribe to it directly. */
export const brokerAttributesTopic = (deviceId: string): string => `${deviceId}/${HUB_ATTRIBUTES_TOPIC}`

/** Device ids, the same for both targets (so topics and payloads have the same length). */
export const deviceId = (i: number): string => `fanout-${String(i).padStart(6, '0')}`

/**
 * `hub`: the hub (devices log in with their tokens and subscribe their own topic; pushes are API
 * calls). `bare`: bare Aedes (anonymous devices on the broker topic; pushes are MQTT publishes).
 * `floor`: bare Aedes behind a minimal HTTP endpoint (anonymous devices as for bare; pushes are
 * the hub's API calls) — what any hub pays for one HTTP request per push, and nothing else.
 * `durable`: the floor storing each push as one durable row before it publishes it.
 */
export type FanoutTarget = 'hub' | 'floor' | 'durable' | 'bare'

export interface SetupCommand {
  cmd: 'setup'
  target: FanoutTarget
  mqttUrl: string
  /** The hub's API; null for bare Aedes. */
  httpUrl: string | null
  /** HTTP Basic credentials of the hub's API, `user:password`. */
  apiAuth: string
  devices: number
  /** Devices connecting at a time during setup. */
  connectConcurrency: number
  /** Pushes in flight during a fan-out; also the hub API's keep-alive connections. */
  concurrency: number
  /** Bare only: MQTT publisher connections the pushes are spread over. */
  publishers: number
}

export interface FanoutCommand {
  cmd: 'fanout'
  /** Tags the payloads: a push of another phase is counted as stray. */
  phase: string
  /** Devices [0, count) get one push each. */
  count: number
  timeoutMs: number
  graceMs: number
  /**
   * Hub only: the pushes as ONE fleet push, `PATCH /v1/devices/attributes` with `all: true` (the
   * freshly started hub holds only these devices; `count` must be all of them), the same payload
   * for every device: `{"phase":p,"sentAt":ms,"setpoint":21.5}`.
   */
  fleet?: boolean
}

export type FanoutFleetCommand = SetupCommand | FanoutCommand | { cmd: 'teardown' } | { cmd: 'exit' }

export interface SetupReport {
  /** Hub only: time of the bulk device registration, ms. */
  createMs: number
  /** Time to connect and subscribe every device, ms. */
  connectMs: number
  /** CPU of this process while connecting, ms. */
  connectCpuMs: number
  ok: number
  failed: number
  errors: string[]
}

export interface Stat {
  p50: number
  p99: number
  max: number
}

export interface FanoutReport {
  phase: string
  count: number
  /** From the first request (or publish) sent to the last device receiving its push, ms; NaN if not all arrived. */
  wallMs: number
  /** From the first request sent to the last response (or PUBACK), ms. */
  acksMs: number
  /** Devices that received exactly their push (first receipt counted). */
  received: number
  missing: number
  /** A device's own push received more than once. */
  duplicates: number
  /** Pushes a device received that were meant for another device, another phase, or on a wrong topic, or unparsable. */
  wrong: number
  /** Requests not answered 200 (hub) or publishes not acknowledged (bare). */
  ackFailures: number
  /** Hub only: 200 answers whose `pushedTo` was not exactly [the device's session]. */
  pushedToMismatch: number
  errors: string[]
  /** Per push: from the send timestamp in the payload to the device's receipt, ms. */
  latency: Stat
  /** Per push: from sending to the HTTP response (or PUBACK), ms. */
  ackLatency: Stat
  /** CPU (user + system) of this process from the first send to the end of the wait, ms. */
  cpuMs: number
  /** Share of that time this process' event loop was busy (0..1): near 1, the clients were the limit. */
  elu: number
  timedOut: boolean
}

export type FanoutFleetReply =
  | { type: 'ready' }
  | ({ type: 'setup-done' } & SetupReport)
  | ({ type: 'fanout-done' } & FanoutReport)
  | { type: 'teardown-done'; ms: number }

interface Push {
  /** Absent in a fleet push's payload (the same for every device). */
  device?: string
  seq?: number
  phase: string
  sentAt: number
}

function child(): void {
  const send = (reply: FanoutFleetReply) => process.send!(reply)
  let setup: SetupCommand | undefined
  let devices: MqttClient[] = []
  let publishers: MqttClient[] = []
  let api: Pool | undefined
  let basicAuth = ''
  /** What the devices' message handlers report to: the fan-out in progress. */
  let onPush: (i: number, topic: string, payload: Buffer, at: number) => void = () => undefined

  const doSetup = async (c: SetupCommand) => {
    setup = c
    basicAuth = basicAuthHeader(c.apiAuth)
    const errors = new Set<string>()
    let tokens: string[] = []
    let createMs = 0
    if (c.httpUrl !== null) {
      // undici rather than node:http: a request costs the load generator, which shares the
      // machine's cpus with the hub, about a third less. No pipelining: with it, node's server
      // answers a socket's requests in turn and the fan-out took twice as long.
      api = new Pool(c.httpUrl, { connections: c.concurrency, keepAliveTimeout: 60_000 })
    }
    if (c.target === 'hub') {
      const t0 = nowMs()
      tokens = await registerDevices(api!, c.apiAuth, Array.from({ length: c.devices }, (_, i) => deviceId(i)))
      createMs = nowMs() - t0
    }
    devices = new Array<MqttClient>(c.devices)
    let ok = 0
    let failed = 0
    const t0 = nowMs()
    const cpu = process.cpuUsage()
    await pool(c.devices, c.connectConcurrency, async (i) => {
      const id = deviceId(i)
      try {
        const client = c.target === 'hub' ? await connectOne(c.mqttUrl, id, { username: id, password: tokens[i] }) : await connectOne(c.mqttUrl, id)
        devices[i] = client
        client.on('message', (topic, payload) => onPush(i, topic, payload, nowMs()))
        const topic = c.target === 'hub' ? HUB_ATTRIBUTES_TOPIC : brokerAttributesTopic(id)
        const granted = await client.subscribeAsync(topic, { qos: 1 })
        if (granted.some((g) => g.qos !== 1)) throw new Error(`SUBACK granted ${granted.map((g) => g.qos).join(',')}, not QoS 1`)
        ok++
      } catch (error) {
        failed++
        errors.add((error as Error).message)
      }
    })
    if (c.target === 'bare') {
      publishers = []
      for (let k = 0; k < c.publishers; k++) publishers.push(await connectOne(c.mqttUrl, `fanout-publisher-${k}`))
    }
    const connectMs = nowMs() - t0
    send({ type: 'setup-done', createMs, connectMs, connectCpuMs: cpuMsSince(cpu), ok, failed, errors: [...errors].slice(0, 5) })
  }

  const doFanout = async (f: FanoutCommand) => {
    const c = setup!
    const count = Math.min(f.count, c.devices)
    const expectedTopic = (i: number) => (c.target === 'hub' ? HUB_ATTRIBUTES_TOPIC : brokerAttributesTopic(deviceId(i)))
    const got = new Uint8Array(count)
    const latency = new Float64Array(count)
    const ackLatency = new Float64Array(count)
    const errors = new Set<string>()
    let received = 0
    let duplicates = 0
    let wrong = 0
    let ackFailures = 0
    let acked = 0
    let pushedToMismatch = 0
    let lastReceipt = 0
    let lastAck = 0
    let allReceived: () => void = () => undefined
    const everyoneHasIt = new Promise<void>((resolve) => (allReceived = resolve))

    onPush = (i, topic, payload, at) => {
      let push: Push
      try {
        push = JSON.parse(payload.toString('utf8')) as Push
      } catch {
        wrong++
        return
      }
      // a fleet push sends every device the same payload: the device is the client that received it
      const mine = f.fleet === true ? push.device === undefined && push.seq === undefined : push.device === deviceId(i) && push.seq === i
      if (i >= count || push.phase !== f.phase || !mine || topic !== expectedTopic(i)) {
        wrong++
        if (errors.size < 5) errors.add(`device ${deviceId(i)} received ${payload.toString('utf8').slice(0, 120)} on ${topic}`)
        return
      }
      if (got[i] === 1) {
        duplicates++
        return
      }
      got[i] = 1
      latency[i] = at - push.sentAt
      lastReceipt = at
      if (++received === count) allReceived()
    }

    const sendOne = async (i: number, worker: number) => {
      const id = deviceId(i)
      const sentAt = nowMs()
      const body = pushBody({ device: id, seq: i, phase: f.phase, sentAt: Math.round(sentAt * 1000) / 1000, setpoint: 21.5 })
      try {
        if (api) {
          const answer = await api.request({
            path: `/v1/devices/${id}/attributes`,
            method: 'PATCH',
            headers: { 'content-type': 'application/json', authorization: basicAuth },
            body
          })
          const text = await answer.body.text()
          if (answer.statusCode !== 200) {
            ackFailures++
            errors.add(`PATCH ${id}: ${answer.statusCode} ${text.slice(0, 200)}`)
          } else {
            const pushedTo = (JSON.parse(text) as { pushedTo?: string[] }).pushedTo
            if (!Array.isArray(pushedTo) || pushedTo.length !== 1 || pushedTo[0] !== id) {
              pushedToMismatch++
              errors.add(`PATCH ${id}: pushedTo ${JSON.stringify(pushedTo)}`)
            }
          }
        } else {
          await publishers[worker % publishers.length]!.publishAsync(brokerAttributesTopic(id), body, { qos: 1 })
        }
        const now = nowMs()
        ackLatency[acked++] = now - sentAt
        lastAck = now
      } catch (error) {
        ackFailures++
        errors.add((error as Error).message)
      }
    }

    /** The one fleet push: the hub answers once every device was changed and pushed to. */
    const sendFleet = async () => {
      const sentAt = nowMs()
      const body = `{"all":true,"attributes":${pushBody({ phase: f.phase, sentAt: Math.round(sentAt * 1000) / 1000, setpoint: 21.5 })}}`
      try {
        const answer = await api!.request({ path: '/v1/devices/attributes', method: 'PATCH', headers: { 'content-type': 'application/json', authorization: basicAuth }, body })
        const text = await answer.body.text()
        if (answer.statusCode !== 200) {
          ackFailures += count
          errors.add(`PATCH /v1/devices/attributes: ${answer.statusCode} ${text.slice(0, 300)}`)
        } else {
          const counts = JSON.parse(text) as { changed: number; pushed: number; sessions: number }
          // every device changed and pushed to its one session
          const off = Math.max(Math.abs(counts.changed - count), Math.abs(counts.pushed - count), Math.abs(counts.sessions - count))
          if (off > 0) {
            pushedToMismatch += off
            errors.add(`PATCH /v1/devices/attributes: changed ${counts.changed}, pushed ${counts.pushed}, sessions ${counts.sessions} of ${count}`)
          }
        }
        const now = nowMs()
        ackLatency[acked++] = now - sentAt
        lastAck = now
      } catch (error) {
        ackFailures += count
        errors.add((error as Error).message)
      }
    }

    const cpu = process.cpuUsage()
    const elu = performance.eventLoopUtilization()
    const started = nowMs()
    const sending = f.fleet === true ? sendFleet() : pool(count, c.concurrency, sendOne)
    let timer: NodeJS.Timeout | undefined
    const timedOut = await Promise.race([
      everyoneHasIt.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), f.timeoutMs)))
    ])
    clearTimeout(timer)
    await sending
    const cpuMs = cpuMsSince(cpu)
    const busy = performance.eventLoopUtilization(elu).utilization
    await sleep(f.graceMs) // a duplicate would arrive now; not timed
    onPush = () => undefined
    const latencies = latency.subarray(0, count).filter((_, i) => got[i] === 1)
    send({
      type: 'fanout-done',
      phase: f.phase,
      count,
      wallMs: timedOut ? Number.NaN : lastReceipt - started,
      acksMs: lastAck - started,
      received,
      missing: count - received,
      duplicates,
      wrong,
      ackFailures,
      pushedToMismatch,
      errors: [...errors].slice(0, 5),
      latency: percentiles(latencies),
      ackLatency: percentiles(ackLatency.subarray(0, acked)),
      cpuMs,
      elu: busy,
      timedOut
    })
  }

  const doTeardown = async () => {
    const t0 = nowMs()
    const all = [...devices.filter((d) => d !== undefined), ...publishers]
    devices = []
    publishers = []
    await pool(all.length, 200, async (i) => {
      await all[i]!.endAsync().catch(() => undefined)
    })
    await api?.close()
    api = undefined
    send({ type: 'teardown-done', ms: nowMs() - t0 })
  }

  process.on('message', (message: FanoutFleetCommand) => {
    const done = (error: unknown) => {
      process.stderr.write(`fanout clients: ${(error as Error).stack ?? String(error)}\n`)
      process.exit(1)
    }
    if (message.cmd === 'setup') doSetup(message).catch(done)
    else if (message.cmd === 'fanout') doFanout(message).catch(done)
    else if (message.cmd === 'teardown') doTeardown().catch(done)
    else process.exit(0)
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/** The parent's handle on the fan-out child process. */
export class FanoutFleet {
  private constructor(private readonly link: ChildLink<FanoutFleetCommand, FanoutFleetReply>) {}

  static async start(): Promise<FanoutFleet> {
    return new FanoutFleet(await ChildLink.start<FanoutFleetCommand, FanoutFleetReply>('lib/fanout-fleet.ts', 'fan-out clients'))
  }

  setup(command: Omit<SetupCommand, 'cmd'>): Promise<SetupReport> {
    return this.link.request({ cmd: 'setup', ...command }, 'setup-done')
  }

  fanout(command: Omit<FanoutCommand, 'cmd'>): Promise<FanoutReport> {
    return this.link.request({ cmd: 'fanout', ...command }, 'fanout-done')
  }

  async teardown(): Promise<number> {
    return (await this.link.request({ cmd: 'teardown' }, 'teardown-done')).ms
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

if (forkedToRun(import.meta.url)) child()
