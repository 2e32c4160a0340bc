/**
 * What the client-side child processes of the socket benchmarks share (clients.ts for
 * connect-storm and memory, fanout-fleet.ts for fanout): the parent's end of the IPC link, and
 * the child's helpers for connecting many mqtt.js clients a bounded number at a time.
 */
import type { ChildProcess } from 'node:child_process'
import { connect as netConnect } from 'node:net'
import { fileURLToPath } from 'node:url'
import mqtt, { MqttClient } from 'mqtt'
import { forkBench } from './util.js'

/**
 * The parent's end of a forked bench child: it waits for the child's `ready`, then sends
 * commands and waits for the reply of a given `type`.
 */
export class ChildLink<Command extends { cmd: string }, Reply extends { type: string }> {
  private constructor(
    private readonly proc: ChildProcess,
    private readonly name: string
  ) {}

  /** Forks `script` (relative to bench/) with `--child` and waits for its `ready`. */
  static async start<C extends { cmd: string }, R extends { type: string }>(script: string, name: string): Promise<ChildLink<C, R>> {
    const link = new ChildLink<C, R>(forkBench(script, ['--child']), name)
    await link.next('ready')
    return link
  }

  /** Sends `command` and resolves with the child's next reply of type `replyType`. */
  request<T extends Reply['type']>(command: Command, replyType: T): Promise<Extract<Reply, { type: T }>> {
    const reply = this.next(replyType)
    this.proc.send(command)
    return reply
  }

  private next<T extends string>(type: T): Promise<Extract<Reply, { type: T }>> {
    return new Promise((resolve, reject) => {
      const onMessage = (reply: Reply) => {
        if (reply.type !== type) return
        cleanup()
        resolve(reply as Extract<Reply, { type: T }>)
      }
      const onExit = (code: number | null) => {
        cleanup()
        reject(new Error(`${this.name} process exited (${code}) while waiting for "${type}"`))
      }
      const cleanup = () => {
        this.proc.off('message', onMessage)
        this.proc.off('exit', onExit)
      }
      this.proc.on('message', onMessage)
      this.proc.once('exit', onExit)
    })
  }

  /** Asks the child to exit (`{ cmd: 'exit' }`) and waits until it has. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()))
    this.proc.send({ cmd: 'exit' })
    await exited
  }
}

/**
 * True in the process ChildLink forked to run the module at `moduleUrl` (its `import.meta.url`):
 * not in a bench child that only imports it (fanout-broker.ts imports fanout-fleet.ts and forks it).
 */
export function forkedToRun(moduleUrl: string): boolean {
  return process.argv.includes('--child') && process.send !== undefined && process.argv[1] === fileURLToPath(moduleUrl)
}

/** Runs `task(i, worker)` for i in [0, count), at most `concurrency` at a time. */
export async function pool(count: number, concurrency: number, task: (i: number, worker: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (w: number) => {
    while (next < count) await task(next++, w)
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, (_, w) => worker(w)))
}

/** CPU time (user + system) this process used since `since`, in ms. */
export function cpuMsSince(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since)
  return (d.user + d.system) / 1000
}

/**
 * Connects one MQTT 3.1.1 client (clean session unless `clean: false`; from `localAddress` when
 * given, as another host would) and resolves at its CONNACK (rejects on anything else).
 */
export function connectOne(
  url: string,
  clientId: string,
  credentials: { username?: string; password?: string } = {},
  options: { clean?: boolean; localAddress?: string } = {}
): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const settings = { clientId, ...credentials, protocolVersion: 4 as const, clean: options.clean ?? true, reconnectPeriod: 0, connectTimeout: 60_000, keepalive: 300 }
    // mqtt.js has no option for the local address: its stream is made here instead
    const { port, hostname } = new URL(url)
    const client =
      options.localAddress === undefined
        ? mqtt.connect(url, settings)
        : new MqttClient(() => netConnect({ port: Number(port), host: hostname, localAddress: options.localAddress }), settings)
    const fail = (error: Error) => {
      client.removeAllListeners()
      client.on('error', () => undefined)
      client.end(true)
      reject(error)
    }
    client.once('connect', () => {
      client.removeAllListeners('error')
      client.removeAllListeners('close')
      client.on('error', () => undefined)
      resolve(client)
    })
    client.once('error', fail)
    client.once('close', () => fail(new Error('closed before CONNACK')))
  })
}
