/**
 * The EMQX 5 REST stand-in (test/helpers/emqx-rest-standin.ts) bench/scale.ts's EMQX-mode hub
 * reconciles with, in a child process of its own: serving a listing of N clients page by page
 * costs cpu the hub's process must not be charged with (and on 2 cpus it still competes, so its
 * cpu is reported).
 *
 * It holds the stored fleet as EMQX would (bench/lib/scale-fleet.ts `emqxClientOf`): every client,
 * the connected ones and the offline persistent sessions — EMQX 5 lists both, and a hub whose
 * offline session EMQX 5 does not list ends it — each with its one subscription.
 *
 * IPC: the child says `ready`; `start` → `started` with its URL; `fill` (a FleetShape) →
 * `filled`; `stats` → the requests it answered and its cpu so far; `exit`.
 */
import { startEmqxRestStandin, type EmqxRestStandin, type StandinSubscription } from '../../test/helpers/emqx-rest-standin.js'
import { ChildLink } from './child-fleet.js'
import { attributesTopicOf, emqxClientOf, type FleetShape } from './scale-fleet.js'

/** The API key and secret the stand-in expects and the hub is configured with. */
export const SCALE_EMQX_API_KEY = 'iothub-scale-key'
export const SCALE_EMQX_API_SECRET = 'iothub-scale-secret'

type StandinCommand = { cmd: 'start' } | { cmd: 'fill'; shape: FleetShape } | { cmd: 'stats' } | { cmd: 'exit' }

export interface StandinFill {
  ms: number
  clients: number
  connected: number
  subscriptions: number
}

export interface ScaleStandinStats {
  requests: number
  /** The stand-in process' cpu (user + system) since it started, ms. */
  cpuMs: number
}

type StandinReply =
  | { type: 'ready' }
  | { type: 'started'; url: string }
  | ({ type: 'filled' } & StandinFill)
  | ({ type: 'stats' } & ScaleStandinStats)

function child(): void {
  const send = (reply: StandinReply) => process.send!(reply)
  let standin: EmqxRestStandin | undefined
  const fail = (error: unknown) => {
    process.stderr.write(`scale stand-in: ${(error as Error).stack ?? String(error)}\n`)
    process.exit(1)
  }
  const fill = (shape: FleetShape) => {
    const started = Date.now()
    const subscriptions: StandinSubscription[] = []
    let connected = 0
    for (let i = 0; i < shape.size; i++) {
      const row = emqxClientOf(shape, i)
      standin!.addClient(row)
      if (row.connected) connected++
      subscriptions.push({ clientid: row.clientid, topic: attributesTopicOf(row.clientid), qos: 1 })
    }
    // one assignment: the stand-in's subscribe() filters the whole list on every call
    standin!.subscriptions = [...standin!.subscriptions, ...subscriptions]
    send({ type: 'filled', ms: Date.now() - started, clients: standin!.clients.size, connected, subscriptions: standin!.subscriptions.length })
  }
  process.on('message', (message: StandinCommand) => {
    try {
      switch (message.cmd) {
        case 'start':
          startEmqxRestStandin({ version: 5, apiKey: SCALE_EMQX_API_KEY, apiSecret: SCALE_EMQX_API_SECRET }).then((s) => {
            standin = s
            send({ type: 'started', url: s.url })
          }, fail)
          break
        case 'fill':
          fill(message.shape)
          break
        case 'stats': {
          const cpu = process.cpuUsage()
          send({ type: 'stats', requests: standin?.requests.length ?? 0, cpuMs: (cpu.user + cpu.system) / 1000 })
          break
        }
        default:
          process.exit(0)
      }
    } catch (error) {
      fail(error)
    }
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/** The parent's handle on the stand-in's process. */
export class ScaleStandin {
  private constructor(
    private readonly link: ChildLink<StandinCommand, StandinReply>,
    readonly url: string
  ) {}

  static async start(): Promise<ScaleStandin> {
    const link = await ChildLink.start<StandinCommand, StandinReply>('lib/scale-standin.ts', 'EMQX REST stand-in')
    const { url } = await link.request({ cmd: 'start' }, 'started')
    return new ScaleStandin(link, url)
  }

  fill(shape: FleetShape): Promise<StandinFill> {
    return this.link.request({ cmd: 'fill', shape }, 'filled')
  }

  stats(): Promise<ScaleStandinStats> {
    return this.link.request({ cmd: 'stats' }, 'stats')
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

if (process.argv.includes('--child') && process.send) child()
