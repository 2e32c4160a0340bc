/**
 * The client side of the coap benchmark (bench/coap.ts), run as a child process so that the
 * devices' cpu is not the hub's. It plays the same devices two ways:
 *
 * - over CoAP, as EMQX 5's CoAP gateway expects in connection mode: `POST
 *   /mqtt/connection?clientid=&username=&password=` (→ 2.01 and the connection's token),
 *   `GET /ps/v1/devices/me/attributes?clientid=&token=` with Observe 0 (→ 2.05 with Observe),
 *   and later `DELETE /mqtt/connection?clientid=&token=` (→ 2.02), every request confirmable;
 * - over MQTT (the baseline on the same hub): CONNECT (3.1.1, clean session, client id =
 *   username = device id, password = token), SUBSCRIBE v1/devices/me/attributes QoS 1, and later
 *   DISCONNECT and close (mqtt.js, as the other socket benchmarks).
 *
 * The CoAP client is written here on `coap-packet` over a few connected UDP sockets rather
 * than node-coap's agent, which costs several times the cpu per request (an agent, a
 * retransmission object and an LRU entry per request, its packet parsed again on every send):
 * with it the load generator, sharing the machine's 2 cpus with the hub, would be measured.
 * Many devices share a socket: the hub knows a connection by its clientid and token only (EMQX 5
 * also ties it to the source ip:port, so there each device needs a socket of its own). It does
 * what RFC 7252 asks of a client: a message id unique per socket and a token unique per request;
 * a confirmable request sent again after ACK_TIMEOUT × (1..1.5), doubling, up to 4 times; an
 * empty ACK means the answer comes separately, as a confirmable response, which is acknowledged
 * (as any confirmable message from the server is, notifications included).
 *
 * Protocol over IPC: the child says `ready`; then
 *   - `register`: registers the devices with the hub (`POST /v1/devices`), keeps their tokens →
 *     `registered`; without it (the bare node-coap floor) passwords are random strings of a
 *     token's length;
 *   - `coap-open` / `mqtt-open`: devices [0, count), `concurrency` at a time, each connects and
 *     observes (subscribes) → `opened` with the phase report;
 *   - `coap-close` / `mqtt-close`: every device that opened closes, `concurrency` at a time →
 *     `closed` with the phase report.
 */
import { randomBytes } from 'node:crypto'
import { createSocket, type Socket } from 'node:dgram'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { generate, parse, type NamedOption, type ParsedPacket } from 'coap-packet'
import type { MqttClient } from 'mqtt'
import { Client } from 'undici'
import { ChildLink, connectOne, cpuMsSince, pool } from './child-fleet.js'
import { registerDevices } from './devices.js'
import { nowMs, percentiles } from './util.js'

/** Device ids, the same on every target. */
export const coapDeviceId = (i: number): string => `coap-${String(i).padStart(6, '0')}`

/** What every device observes (CoAP) or subscribes to (MQTT): its attributes, a change topic, so it makes a subscription entity. */
export const OBSERVED_TOPIC = 'v1/devices/me/attributes'

export interface RegisterCommand {
  cmd: 'register'
  httpUrl: string
  apiAuth: string
  devices: number
}

export interface CoapOpenCommand {
  cmd: 'coap-open'
  host: string
  port: number
  count: number
  concurrency: number
  /** UDP sockets the devices are spread over (device i uses socket i mod sockets). */
  sockets: number
}

export interface MqttOpenCommand {
  cmd: 'mqtt-open'
  url: string
  count: number
  concurrency: number
}

export type CoapFleetCommand =
  | RegisterCommand
  | CoapOpenCommand
  | MqttOpenCommand
  | { cmd: 'coap-close'; concurrency: number }
  | { cmd: 'mqtt-close'; concurrency: number }
  | { cmd: 'exit' }

export interface Stat {
  p50: number
  p99: number
  max: number
}

export interface PhaseReport {
  /** Wall time of the phase as this process measured it, ms. */
  ms: number
  /** CPU (user + system) of this process in the phase, ms. */
  cpuMs: number
  /** Share of the phase this process' event loop was busy (0..1): near 1, the clients were the limit. */
  elu: number
  ok: number
  failed: number
  /** A few distinct error messages. */
  errors: string[]
  /** Per device and step, from sending the request to its answer, ms. */
  latency: Record<string, Stat>
  /** CoAP only (zero for MQTT): */
  coap: CoapCounters
}

export interface CoapCounters {
  /** Confirmable requests sent again, no answer or ACK having come within the retransmission timeout. */
  retransmits: number
  /** Answers that came separately (an empty ACK first, then a confirmable response the client acknowledged). */
  separate: number
  /** Datagrams from the server matching no request in flight (a response or ACK repeated, a late answer). */
  unmatched: number
  /** Notifications received (none expected: nothing is published). */
  notifications: number
  /** Empty ACKs this client sent for the server's confirmable messages. */
  acksSent: number
  /** Datagrams the kernel dropped on the clients' sockets (receive buffer full; Linux, else 0). */
  clientDrops: number
}

export type CoapFleetReply =
  | { type: 'ready' }
  | { type: 'registered'; ms: number }
  | ({ type: 'opened' } & PhaseReport)
  | ({ type: 'closed' } & PhaseReport)

const zeroCounters = (): CoapCounters => ({ retransmits: 0, separate: 0, unmatched: 0, notifications: 0, acksSent: 0, clientDrops: 0 })

/**
 * Datagrams the kernel dropped on this machine's UDP sockets bound to `port` since they opened
 * (the `drops` column of /proc/net/udp: the socket's receive buffer was full); null off Linux.
 */
export function udpDrops(port: number): number | null {
  let table: string
  try {
    table = readFileSync('/proc/net/udp', 'utf8')
  } catch {
    return null
  }
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`
  let drops = 0
  for (const row of table.split('\n').slice(1)) {
    const fields = row.trim().split(/\s+/)
    if (fields.length > 12 && fields[1]!.endsWith(hex)) drops += Number(fields.at(-1))
  }
  return drops
}

/** RFC 7252's defaults (§4.8), as a constrained device uses them. */
const ACK_TIMEOUT_MS = 2000
const ACK_RANDOM_FACTOR = 1.5
const MAX_RETRANSMIT = 4
/** How long an answer announced by an empty ACK may take. */
const SEPARATE_TIMEOUT_MS = 60_000

const EMPTY = Buffer.alloc(0)
const pathOptions = (path: string): NamedOption[] => path.split('/').map((p) => ({ name: 'Uri-Path', value: Buffer.from(p) }))
const CONNECTION_PATH = pathOptions('mqtt/connection')
const OBSERVE_PATH = pathOptions(`ps/${OBSERVED_TOPIC}`)
/** Observe 0 (register) is the option with an empty value. */
const OBSERVE_REGISTER: NamedOption = { name: 'Observe', value: EMPTY }

interface Pending {
  socket: number
  messageId: number
  token: number
  datagram: Buffer
  /** Retransmissions so far. */
  attempt: number
  timeoutMs: number
  timer: NodeJS.Timeout
  acked: boolean
  resolve: (answer: ParsedPacket) => void
  reject: (error: Error) => void
}

/**
 * A CoAP client endpoint of `sockets` connected UDP sockets to one server, for many devices:
 * confirmable requests, matched to their answers by token, retransmitted per RFC 7252.
 */
class CoapClient {
  readonly counters = zeroCounters()
  private readonly nextMessageId: number[]
  private readonly byToken = new Map<number, Pending>()
  /** Per socket: requests in flight by message id (to match empty ACKs and RSTs). */
  private readonly byMessageId: Map<number, Pending>[]
  private nextToken = 1

  private constructor(private readonly sockets: Socket[]) {
    this.nextMessageId = sockets.map(() => Math.floor(Math.random() * 0x10000))
    this.byMessageId = sockets.map(() => new Map<number, Pending>())
    sockets.forEach((socket, s) => socket.on('message', (message: Buffer) => this.receive(s, message)))
  }

  static async open(host: string, port: number, count: number): Promise<CoapClient> {
    const sockets = await Promise.all(
      Array.from({ length: count }, async () => {
        const socket = createSocket('udp4')
        await new Promise<void>((resolve, reject) => {
          socket.once('error', reject)
          socket.connect(port, host, () => {
            socket.off('error', reject)
            resolve()
          })
        })
        return socket
      })
    )
    return new CoapClient(sockets)
  }

  get socketCount(): number {
    return this.sockets.length
  }

  /** Sends a confirmable request on socket `s`; resolves with the answer (piggybacked or separate). */
  request(s: number, code: 'GET' | 'POST' | 'DELETE', options: NamedOption[], query: string[]): Promise<ParsedPacket> {
    const messageId = this.nextMessageId[s]!
    this.nextMessageId[s] = (messageId + 1) & 0xffff
    const token = this.nextToken
    this.nextToken = (this.nextToken + 1) >>> 0 || 1
    const tokenBytes = Buffer.allocUnsafe(4)
    tokenBytes.writeUInt32BE(token, 0)
    const datagram = generate({
      code,
      confirmable: true,
      messageId,
      token: tokenBytes,
      options: [...options, ...query.map((q): NamedOption => ({ name: 'Uri-Query', value: Buffer.from(q) }))]
    })
    return new Promise<ParsedPacket>((resolve, reject) => {
      const timeoutMs = ACK_TIMEOUT_MS * (1 + (ACK_RANDOM_FACTOR - 1) * Math.random())
      const pending: Pending = { socket: s, messageId, token, datagram, attempt: 0, timeoutMs, timer: setTimeout(() => this.retransmit(pending), timeoutMs), acked: false, resolve, reject }
      this.byToken.set(token, pending)
      this.byMessageId[s]!.set(messageId, pending)
      this.sockets[s]!.send(datagram)
    })
  }

  private retransmit(pending: Pending): void {
    if (pending.attempt >= MAX_RETRANSMIT) {
      this.settle(pending)
      pending.reject(new Error(`no answer after ${MAX_RETRANSMIT} retransmissions`))
      return
    }
    pending.attempt++
    pending.timeoutMs *= 2
    this.counters.retransmits++
    pending.timer = setTimeout(() => this.retransmit(pending), pending.timeoutMs)
    this.sockets[pending.socket]!.send(pending.datagram)
  }

  private settle(pending: Pending): void {
    clearTimeout(pending.timer)
    this.byToken.delete(pending.token)
    this.byMessageId[pending.socket]!.delete(pending.messageId)
  }

  private receive(s: number, message: Buffer): void {
    let packet: ParsedPacket
    try {
      packet = parse(message)
    } catch {
      this.counters.unmatched++
      return
    }
    if (packet.confirmable) {
      // a separate response or a notification: acknowledged, whatever it is
      this.sockets[s]!.send(generate({ code: '0.00', ack: true, messageId: packet.messageId, token: EMPTY }))
      this.counters.acksSent++
    }
    if (packet.reset || (packet.ack && packet.code === '0.00')) {
      const pending = this.byMessageId[s]!.get(packet.messageId)
      if (!pending || pending.acked) {
        this.counters.unmatched++
        return
      }
      if (packet.reset) {
        this.settle(pending)
        pending.reject(new Error('RST from the server'))
        return
      }
      // empty ACK: the answer follows as a confirmable response; stop retransmitting
      pending.acked = true
      this.counters.separate++
      clearTimeout(pending.timer)
      pending.timer = setTimeout(() => {
        this.settle(pending)
        pending.reject(new Error(`no separate response within ${SEPARATE_TIMEOUT_MS} ms of its empty ACK`))
      }, SEPARATE_TIMEOUT_MS)
      return
    }
    const pending = packet.token.length === 4 ? this.byToken.get(packet.token.readUInt32BE(0)) : undefined
    // a piggybacked answer echoes the request's message id and socket; a separate one only its token
    if (!pending || (packet.ack && (pending.socket !== s || pending.messageId !== packet.messageId))) {
      if (packet.options.some((o) => o.name === 'Observe')) this.counters.notifications++
      else this.counters.unmatched++
      return
    }
    this.settle(pending)
    pending.resolve(packet)
  }

  /** Datagrams the kernel dropped on these sockets so far. */
  drops(): number {
    return this.sockets.reduce((n, socket) => n + (udpDrops(socket.address().port) ?? 0), 0)
  }

  /** Closes the sockets; requests still in flight fail. */
  close(): void {
    for (const pending of this.byToken.values()) {
      clearTimeout(pending.timer)
      pending.reject(new Error('client closed'))
    }
    this.byToken.clear()
    for (const socket of this.sockets) socket.close()
  }
}

function expectCode(answer: ParsedPacket, code: string, step: string): void {
  if (answer.code !== code) throw new Error(`${step}: ${answer.code} ${answer.payload.toString('utf8').slice(0, 120)} (expected ${code})`)
}

function child(): void {
  const send = (reply: CoapFleetReply) => process.send!(reply)
  let tokens: string[] = []
  let coapClient: CoapClient | undefined
  /** Devices that opened over CoAP: index and connection token. */
  let coapOpen: { i: number; token: string }[] = []
  let mqttOpen: MqttClient[] = []

  /** Runs one phase: `count` devices through `step`, `concurrency` at a time, with its timings. */
  const phase = async (
    count: number,
    concurrency: number,
    steps: string[],
    step: (k: number, mark: () => void) => Promise<void>
  ): Promise<PhaseReport> => {
    const errors = new Set<string>()
    const samples = steps.map(() => new Float64Array(count))
    let ok = 0
    let failed = 0
    const counters0 = { ...(coapClient?.counters ?? zeroCounters()) }
    const drops0 = coapClient ? coapClient.drops() : 0
    const cpu = process.cpuUsage()
    const elu = performance.eventLoopUtilization()
    const started = nowMs()
    await pool(count, concurrency, async (k) => {
      const times: number[] = []
      let last = nowMs()
      const mark = () => {
        const now = nowMs()
        times.push(now - last)
        last = now
      }
      try {
        await step(k, mark)
        times.forEach((t, j) => (samples[j]![ok] = t))
        ok++
      } catch (error) {
        failed++
        errors.add((error as Error).message)
      }
    })
    const ms = nowMs() - started
    const c = coapClient?.counters ?? zeroCounters()
    return {
      ms,
      cpuMs: cpuMsSince(cpu),
      elu: performance.eventLoopUtilization(elu).utilization,
      ok,
      failed,
      errors: [...errors].slice(0, 5),
      latency: Object.fromEntries(steps.map((name, j) => [name, percentiles(samples[j]!.subarray(0, ok))])),
      coap: {
        retransmits: c.retransmits - counters0.retransmits,
        separate: c.separate - counters0.separate,
        unmatched: c.unmatched - counters0.unmatched,
        notifications: c.notifications - counters0.notifications,
        acksSent: c.acksSent - counters0.acksSent,
        clientDrops: coapClient ? coapClient.drops() - drops0 : 0
      }
    }
  }

  const passwordOf = (i: number): string => tokens[i] ?? (tokens[i] = randomBytes(24).toString('base64url'))

  const register = async (c: RegisterCommand) => {
    const api = new Client(c.httpUrl)
    const t0 = nowMs()
    try {
      tokens = await registerDevices(api, c.apiAuth, Array.from({ length: c.devices }, (_, i) => coapDeviceId(i)))
    } finally {
      await api.close()
    }
    send({ type: 'registered', ms: nowMs() - t0 })
  }

  const coapOpenPhase = async (c: CoapOpenCommand) => {
    coapClient?.close()
    const client = await CoapClient.open(c.host, c.port, c.sockets)
    coapClient = client
    const opened: { i: number; token: string }[] = []
    const report = await phase(c.count, c.concurrency, ['connect', 'observe'], async (i, mark) => {
      const id = coapDeviceId(i)
      const s = i % client.socketCount
      const connected = await client.request(s, 'POST', CONNECTION_PATH, [`clientid=${id}`, `username=${id}`, `password=${passwordOf(i)}`])
      expectCode(connected, '2.01', 'connect')
      const token = connected.payload.toString('utf8')
      if (token === '') throw new Error('connect: 2.01 without a token')
      mark()
      const observed = await client.request(s, 'GET', [OBSERVE_REGISTER, ...OBSERVE_PATH], [`clientid=${id}`, `token=${token}`])
      expectCode(observed, '2.05', 'observe')
      if (!observed.options.some((o) => o.name === 'Observe')) throw new Error('observe: 2.05 without Observe (not registered as an observer)')
      opened.push({ i, token })
      mark()
    })
    coapOpen = opened
    send({ type: 'opened', ...report })
  }

  const coapClosePhase = async (concurrency: number) => {
    const client = coapClient!
    const all = coapOpen
    coapOpen = []
    const report = await phase(all.length, concurrency, ['close'], async (k, mark) => {
      const { i, token } = all[k]!
      const closed = await client.request(i % client.socketCount, 'DELETE', CONNECTION_PATH, [`clientid=${coapDeviceId(i)}`, `token=${token}`])
      expectCode(closed, '2.02', 'close')
      mark()
    })
    client.close()
    coapClient = undefined
    send({ type: 'closed', ...report })
  }

  const mqttOpenPhase = async (c: MqttOpenCommand) => {
    const opened: MqttClient[] = []
    const report = await phase(c.count, c.concurrency, ['connect', 'subscribe'], async (i, mark) => {
      const id = coapDeviceId(i)
      const client = await connectOne(c.url, id, { username: id, password: passwordOf(i) })
      opened.push(client)
      mark()
      const granted = await client.subscribeAsync(OBSERVED_TOPIC, { qos: 1 })
      if (granted.some((g) => g.qos !== 1)) throw new Error(`SUBACK granted ${granted.map((g) => g.qos).join(',')}, not QoS 1`)
      mark()
    })
    mqttOpen = opened
    send({ type: 'opened', ...report })
  }

  const mqttClosePhase = async (concurrency: number) => {
    const all = mqttOpen
    mqttOpen = []
    const report = await phase(all.length, concurrency, ['close'], async (k, mark) => {
      await all[k]!.endAsync()
      mark()
    })
    send({ type: 'closed', ...report })
  }

  process.on('message', (message: CoapFleetCommand) => {
    const fail = (error: unknown) => {
      process.stderr.write(`coap clients: ${(error as Error).stack ?? String(error)}\n`)
      process.exit(1)
    }
    if (message.cmd === 'register') register(message).catch(fail)
    else if (message.cmd === 'coap-open') coapOpenPhase(message).catch(fail)
    else if (message.cmd === 'coap-close') coapClosePhase(message.concurrency).catch(fail)
    else if (message.cmd === 'mqtt-open') mqttOpenPhase(message).catch(fail)
    else if (message.cmd === 'mqtt-close') mqttClosePhase(message.concurrency).catch(fail)
    else process.exit(0)
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/** The parent's handle on the CoAP (and MQTT) clients' child process. */
export class CoapFleet {
  private constructor(private readonly link: ChildLink<CoapFleetCommand, CoapFleetReply>) {}

  static async start(): Promise<CoapFleet> {
    return new CoapFleet(await ChildLink.start<CoapFleetCommand, CoapFleetReply>('lib/coap-fleet.ts', 'coap clients'))
  }

  /** Registers devices [0, devices) with the hub; their tokens are the passwords of the following runs. */
  async register(httpUrl: string, apiAuth: string, devices: number): Promise<number> {
    return (await this.link.request({ cmd: 'register', httpUrl, apiAuth, devices }, 'registered')).ms
  }

  /** Connects and observes (subscribes) devices [0, count): CoAP when given a port, else MQTT. */
  open(command: Omit<CoapOpenCommand, 'cmd'> | Omit<MqttOpenCommand, 'cmd'>): Promise<PhaseReport> {
    const cmd = 'port' in command ? ({ cmd: 'coap-open', ...command } as const) : ({ cmd: 'mqtt-open', ...command } as const)
    return this.link.request(cmd, 'opened')
  }

  close(protocol: 'coap' | 'mqtt', concurrency: number): Promise<PhaseReport> {
    return this.link.request({ cmd: protocol === 'coap' ? 'coap-close' : 'mqtt-close', concurrency }, 'closed')
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

if (process.argv.includes('--child') && process.send) child()
