/**
 * The MQTT client side of the socket benchmarks, run as a child process (forked by
 * ClientFleet below) so that the mqtt.js clients' CPU and memory are not the broker's:
 * the broker under test gets the parent process to itself.
 *
 * Protocol over IPC: the child says `ready`; on `connect` it connects `count` clients
 * (MQTT 3.1.1, clean session, no reconnect), `concurrency` at a time, each subscribing to
 * `topics` topics in one SUBSCRIBE, and answers `connected`; on `disconnect` it ends them all
 * (DISCONNECT, then close), `concurrency` at a time, and answers `disconnected`.
 */
import type { MqttClient } from 'mqtt'
import { ChildLink, connectOne, cpuMsSince, pool } from './child-fleet.js'
import { nowMs, percentiles } from './util.js'

export interface ConnectCommand {
  cmd: 'connect'
  url: string
  count: number
  concurrency: number
  /** Client ids are `${prefix}-${i}`. */
  prefix: string
  topics: number
  /** Every client subscribes to the same topics (`shared/t{k}`), as devices do to theirs, instead of its own. */
  sharedTopics?: boolean
  qos: 0 | 1
}

export type FleetCommand = ConnectCommand | { cmd: 'disconnect'; concurrency: number } | { cmd: 'exit' }

export interface PhaseReport {
  /** Wall time of the phase as the child measured it, ms. */
  ms: number
  /** CPU time (user + system) the clients process spent in the phase, ms. */
  cpuMs: number
  ok: number
  failed: number
  /** A few distinct error messages, for the report. */
  errors: string[]
  /** Per-client latencies of the steps, ms. */
  latency: Record<string, { p50: number; p99: number; max: number }>
}

export type FleetReply = { type: 'ready' } | ({ type: 'connected' } & PhaseReport) | ({ type: 'disconnected' } & PhaseReport)

/**
 * The loopback address client `i` connects from. A fleet comes from many addresses, and the hub
 * limits what one address may hold before its CONNECTs arrive (100 by default, against hosts
 * opening connections they never use): thousands of clients from one address would measure that
 * limit refusing them, not the storm. 64 addresses of 127.0.0.0/8 keep every one well under it.
 */
function fleetAddress(i: number): string {
  return `127.0.1.${1 + (i % 64)}`
}

/** Topics a bench client subscribes to; the parent uses the same names to check the broker. */
export function topicsOf(clientId: string, count: number, shared = false): string[] {
  return Array.from({ length: count }, (_, k) => (shared ? `shared/t${k}` : `bench/${clientId}/t${k}`))
}

function child(): void {
  let clients: MqttClient[] = []
  const send = (reply: FleetReply) => process.send!(reply)

  const connect = async (c: ConnectCommand) => {
    clients = []
    const errors = new Set<string>()
    const connectMs = new Float64Array(c.count)
    const subscribeMs = new Float64Array(c.count)
    let ok = 0
    let failed = 0
    const cpu = process.cpuUsage()
    const started = nowMs()
    await pool(c.count, c.concurrency, async (i) => {
      const clientId = `${c.prefix}-${i}`
      try {
        const t0 = nowMs()
        const client = await connectOne(c.url, clientId, {}, { localAddress: fleetAddress(i) })
        clients.push(client)
        const t1 = nowMs()
        const granted = await client.subscribeAsync(Object.fromEntries(topicsOf(clientId, c.topics, c.sharedTopics).map((t) => [t, { qos: c.qos }])))
        const t2 = nowMs()
        if (granted.some((g) => g.qos === 128)) throw new Error('SUBACK refused a topic (0x80)')
        connectMs[ok] = t1 - t0
        subscribeMs[ok] = t2 - t1
        ok++
      } catch (error) {
        failed++
        errors.add((error as Error).message)
      }
    })
    send({
      type: 'connected',
      ms: nowMs() - started,
      cpuMs: cpuMsSince(cpu),
      ok,
      failed,
      errors: [...errors].slice(0, 5),
      latency: { connack: percentiles(connectMs.subarray(0, ok)), suback: percentiles(subscribeMs.subarray(0, ok)) }
    })
  }

  const disconnect = async (concurrency: number) => {
    const errors = new Set<string>()
    const endMs = new Float64Array(clients.length)
    let ok = 0
    let failed = 0
    const cpu = process.cpuUsage()
    const started = nowMs()
    const all = clients
    clients = []
    await pool(all.length, concurrency, async (i) => {
      try {
        const t0 = nowMs()
        await all[i]!.endAsync()
        endMs[ok++] = nowMs() - t0
      } catch (error) {
        failed++
        errors.add((error as Error).message)
      }
    })
    send({ type: 'disconnected', ms: nowMs() - started, cpuMs: cpuMsSince(cpu), ok, failed, errors: [...errors].slice(0, 5), latency: { end: percentiles(endMs.subarray(0, ok)) } })
  }

  process.on('message', (message: FleetCommand) => {
    const done = (error: unknown) => {
      process.stderr.write(`clients: ${(error as Error).stack ?? String(error)}\n`)
      process.exit(1)
    }
    if (message.cmd === 'connect') connect(message).catch(done)
    else if (message.cmd === 'disconnect') disconnect(message.concurrency).catch(done)
    else process.exit(0)
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/** The parent's handle on a clients child process. */
export class ClientFleet {
  private constructor(private readonly link: ChildLink<FleetCommand, FleetReply>) {}

  static async start(): Promise<ClientFleet> {
    return new ClientFleet(await ChildLink.start<FleetCommand, FleetReply>('lib/clients.ts', 'clients'))
  }

  /** Connects and subscribes; resolves when every client has its SUBACK (or failed). */
  connect(command: Omit<ConnectCommand, 'cmd'>): Promise<PhaseReport> {
    return this.link.request({ cmd: 'connect', ...command }, 'connected')
  }

  /** Sends DISCONNECT on every client; resolves when each socket is closed on the client side. */
  disconnect(concurrency: number): Promise<PhaseReport> {
    return this.link.request({ cmd: 'disconnect', concurrency }, 'disconnected')
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

if (process.argv.includes('--child') && process.send) child()
