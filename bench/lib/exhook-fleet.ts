/**
 * The EMQX side of the EMQX-mode benchmarks (bench/exhook.ts, bench/reconcile.ts), run as child
 * processes so that neither the hook callers' cpu nor the REST stand-in's is the hub's. One
 * script, two roles; the parent forks it once per role it needs:
 *
 * **Callers** (`ExhookFleet`): gRPC channels to the hub's ExHook server, calling as EMQX 5.0–5.8
 * does (ExHook v2 by default). Each channel is its own HTTP/2 connection, as EMQX's exhook keeps
 * a pool of them; the calls are written on node:http2 (Http2Channel, the default) or made by
 * @grpc/grpc-js's client (GrpcJsChannel, BENCH_EXHOOK_TRANSPORT=grpc-js), the same frames on the
 * wire. Requests are filled by test/helpers/emqx-exhook-client.ts, as EMQX fills them (ClientInfo,
 * RequestMeta); a simulated client has clientid = username = its id and EMQX's `%u/` mountpoint.
 * Each call has EMQX's default deadline (exhook `request_timeout`, 5 s); a call counts as OK when
 * the hub answers it without a gRPC error.
 *
 * Protocol over IPC: the child says `ready`; then
 *   - `open`: opens the channels, waits until each is connected; → `opened`;
 *   - `run` (closed loop): `clients` simulated clients, each client.connected →
 *     session.subscribed (`{id}/v1/devices/me/attributes`, QoS 1) → client.disconnected (reason
 *     `normal`), a client's next call sent when its previous one is answered; `concurrency`
 *     clients at a time, so that many calls are in flight; → `run-done` with the report;
 *   - `stream-start` (open loop): fresh clients' client.connected / client.disconnected pairs at
 *     `rate` calls per second — call i is due at start + i / rate, whatever the hub's answers
 *     (so a hub falling behind shows as latency: no coordinated omission), except that a client's
 *     disconnect, like EMQX's hook calls of one client, waits for its connect's answer and then
 *     counts from that answer; a call's latency runs from when it was due; → `stream-started`;
 *   - `stream-stop`: no new client after this; the started ones disconnect; once every call is
 *     answered → `stream-done` with the report (with `splitAt`, epoch ms, also the latency of
 *     the calls due before it and of those due after it);
 *   - `close`: closes the channels; → `closed`.
 *
 * **Stand-in** (`StandinProcess`): the EMQX 5 REST stand-in (test/helpers/emqx-rest-standin.ts)
 * the hub reconciles with — in a process of its own, since serving 100,000 clients page by page
 * costs cpu the hub's process must not be charged with. `standin-start` → `standin-ready` with
 * its URL; `fill`: `count` connected clients, each with one subscription (its attributes topic,
 * QoS 1) → `filled`; `standin-stats` → its requests and cpu.
 */
import * as grpc from '@grpc/grpc-js'
import * as http2 from 'node:http2'
import { performance } from 'node:perf_hooks'
import { exhookProtocol, type ExhookClientInfo, type ExhookRequestMeta, type ExhookVersion } from '../../src/emqx/exhook/protos.js'
import { loadConfig } from '../../src/config.js'
import { Hub } from '../../src/hub.js'
import { createLogger } from '../../src/observability/logger.js'
import { HubMetrics } from '../../src/observability/metrics.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { EmqxExhookClient } from '../../test/helpers/emqx-exhook-client.js'
import { startEmqxRestStandin, type EmqxRestStandin, type StandinSubscription } from '../../test/helpers/emqx-rest-standin.js'
import { ChildLink, cpuMsSince, pool } from './child-fleet.js'
import { benchStoreSync } from './targets.js'
import { nowMs, percentiles, removeDir, tempDir, waitFor } from './util.js'

/** EMQX's default exhook request_timeout: a call answered later fails as EMQX would take it. */
export const EXHOOK_DEADLINE_MS = 5000

/** The EMQX API key and secret the stand-in expects and the hub is configured with. */
export const EMQX_API_KEY = 'iothub-bench-key'
export const EMQX_API_SECRET = 'iothub-bench-secret'

/** The topic each simulated client subscribes to, as EMQX hands it over: under the `%u/` mountpoint. */
export const attributesTopic = (id: string): string => `${id}/v1/devices/me/attributes`

export interface Stat {
  p50: number
  p99: number
  max: number
}

export interface OpenCommand {
  cmd: 'open'
  /** host:port of the hub's ExHook server. */
  address: string
  version: ExhookVersion
  channels: number
  transport: ExhookTransport
}

export interface RunCommand {
  cmd: 'run'
  /** Client ids are `{prefix}-{i}`. */
  prefix: string
  clients: number
  /** Clients (so calls) in flight. */
  concurrency: number
}

export interface StreamStartCommand {
  cmd: 'stream-start'
  prefix: string
  /** Calls per second offered (connected and disconnected each count). */
  rate: number
}

export interface StreamStopCommand {
  cmd: 'stream-stop'
  /** Epoch ms: also report the calls due before it and those due after it apart. */
  splitAt?: number
}

export type ExhookFleetCommand =
  | OpenCommand
  | RunCommand
  | StreamStartCommand
  | StreamStopCommand
  | { cmd: 'close' }
  | { cmd: 'standin-start' }
  | { cmd: 'fill'; prefix: string; count: number }
  | { cmd: 'standin-stats' }
  | { cmd: 'exit' }

/** Calls not answered OK, by gRPC status name, with a few messages. */
export interface CallFaults {
  failed: number
  byCode: Record<string, number>
  errors: string[]
}

export interface RunReport extends CallFaults {
  clients: number
  calls: number
  ok: number
  /** From the first call sent to the last one answered, ms. */
  wallMs: number
  /** Per call, from sending it to its answer, ms. */
  latency: Stat
  /** CPU (user + system) of this process during the run, ms. */
  cpuMs: number
  /** Share of the run this process' event loop was busy (0..1): near 1, the callers were the limit. */
  elu: number
}

export interface StreamReport extends CallFaults {
  rate: number
  calls: number
  ok: number
  /** From the stream's start to the last call answered, ms. */
  wallMs: number
  /** Per call, from when it was due to its answer, ms (includes any wait to be sent). */
  latency: Stat
  /** Per call, from when it was due to when it was sent, ms: this process' own scheduling delay. */
  sendLag: Stat
  cpuMs: number
  elu: number
  /** With splitAt: the latency of the calls due before it, and of those due after it. */
  split?: { before: Stat & { calls: number }; after: Stat & { calls: number } }
}

export interface StandinStats {
  requests: number
  /** CPU of the stand-in's process since it was filled, ms. */
  cpuMs: number
}

export type ExhookFleetReply =
  | { type: 'ready' }
  | { type: 'opened'; ms: number }
  | ({ type: 'run-done' } & RunReport)
  | { type: 'stream-started' }
  | ({ type: 'stream-done' } & StreamReport)
  | { type: 'closed' }
  | { type: 'standin-ready'; url: string }
  | { type: 'filled'; ms: number; clients: number; subscriptions: number }
  | ({ type: 'standin-stats' } & StandinStats)

/** Which client library carries the calls (see ExhookTransport). */
export type ExhookTransport = 'http2' | 'grpc-js'

/** One HTTP/2 connection of its own to the hub's HookProvider, making unary gRPC calls. */
interface Channel {
  waitForReady(): Promise<void>
  /** Resolves when the hub answers the call with gRPC status OK; rejects with `{ code, message }` otherwise. */
  call(rpc: string, request: object): Promise<void>
  close(): void
}

/**
 * The calls through @grpc/grpc-js's client, as the tests make them. Its own subchannel pool:
 * without one, every client of an address shares one connection.
 */
class GrpcJsChannel implements Channel {
  private readonly client: grpc.Client
  private readonly methods: grpc.ServiceDefinition

  constructor(address: string, version: ExhookVersion) {
    const protocol = exhookProtocol(version)
    this.methods = protocol.service
    this.client = new protocol.Client(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 })
  }

  waitForReady(): Promise<void> {
    return new Promise((resolve, reject) => this.client.waitForReady(Date.now() + 10_000, (error) => (error ? reject(error) : resolve())))
  }

  call(rpc: string, request: object): Promise<void> {
    const method = this.methods[rpc]
    if (!method) return Promise.reject(new Error(`no rpc ${rpc}`))
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        (buffer: Buffer) => buffer,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + EXHOOK_DEADLINE_MS },
        (error) => (error ? reject(error) : resolve())
      )
    })
  }

  close(): void {
    this.client.close()
  }
}

/**
 * The same unary calls written straight on a node:http2 session: the gRPC wire format (a POST
 * to `/{package}.HookProvider/{rpc}`, `content-type: application/grpc`, `te: trailers`,
 * `grpc-timeout`, the request as one length-prefixed protobuf message encoded by the protocol's
 * own serializer; the status in `grpc-status`). The hub's server sees what grpc-js's client
 * sends, but the callers spend about half the cpu per call — on a 2-cpu machine they share with
 * the hub, grpc-js's client made the callers the limit (its event loop ~98% busy).
 */
class Http2Channel implements Channel {
  private readonly session: http2.ClientHttp2Session
  private readonly methods: grpc.ServiceDefinition
  private readonly paths = new Map<string, { path: string; serialize: (value: object) => Buffer }>()

  constructor(address: string, version: ExhookVersion) {
    this.methods = exhookProtocol(version).service
    this.session = http2.connect(`http://${address}`)
    this.session.on('error', () => undefined) // each stream reports its own failure
  }

  waitForReady(): Promise<void> {
    if (!this.session.connecting) return Promise.resolve()
    return new Promise((resolve, reject) => {
      this.session.once('connect', () => resolve())
      this.session.once('error', reject)
    })
  }

  private method(rpc: string): { path: string; serialize: (value: object) => Buffer } {
    let m = this.paths.get(rpc)
    if (!m) {
      const method = this.methods[rpc]
      if (!method) throw new Error(`no rpc ${rpc}`)
      m = { path: method.path, serialize: method.requestSerialize as (value: object) => Buffer }
      this.paths.set(rpc, m)
    }
    return m
  }

  call(rpc: string, request: object): Promise<void> {
    const { path, serialize } = this.method(rpc)
    const message = serialize(request)
    const frame = Buffer.allocUnsafe(5 + message.length)
    frame[0] = 0 // not compressed
    frame.writeUInt32BE(message.length, 1)
    message.copy(frame, 5)
    return new Promise((resolve, reject) => {
      const stream = this.session.request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': `${EXHOOK_DEADLINE_MS}m`
      })
      let status: string | undefined
      let details = ''
      const take = (headers: http2.IncomingHttpHeaders) => {
        const s = headers['grpc-status']
        if (typeof s === 'string') {
          status = s
          details = decodeURIComponent(String(headers['grpc-message'] ?? ''))
        }
      }
      stream.on('response', take) // a trailers-only answer (an error) carries its status here
      stream.on('trailers', take)
      stream.on('data', () => undefined)
      stream.on('error', (error: Error) => reject(Object.assign(error, { code: grpc.status.UNAVAILABLE })))
      stream.on('close', () => {
        if (status === '0') resolve()
        else {
          const code = status === undefined ? grpc.status.UNKNOWN : Number(status)
          reject(Object.assign(new Error(`${code} ${grpc.status[code] ?? ''}: ${details || 'no grpc-status'}`), { code }))
        }
      })
      stream.end(frame)
    })
  }

  close(): void {
    this.session.close()
  }
}

/** BENCH_EXHOOK_TRANSPORT: http2 (default) or grpc-js, the client the callers use. */
export function benchExhookTransport(): ExhookTransport {
  const raw = process.env.BENCH_EXHOOK_TRANSPORT ?? 'http2'
  if (raw !== 'http2' && raw !== 'grpc-js') throw new Error(`BENCH_EXHOOK_TRANSPORT must be http2 or grpc-js, got "${raw}"`)
  return raw
}

function openChannel(transport: ExhookTransport, address: string, version: ExhookVersion): Channel {
  return transport === 'grpc-js' ? new GrpcJsChannel(address, version) : new Http2Channel(address, version)
}

function child(): void {
  const send = (reply: ExhookFleetReply) => process.send!(reply)
  let channels: Channel[] = []
  /** Fills requests as EMQX does; its own channel is never used. */
  let emqx: EmqxExhookClient | undefined
  let meta: ExhookRequestMeta | undefined
  let stopStream: ((splitAt?: number) => Promise<StreamReport>) | undefined
  const part = (values: number[]) => ({ ...percentiles(values), calls: values.length })
  let standin: EmqxRestStandin | undefined
  let standinCpu: NodeJS.CpuUsage | undefined

  const clientInfo = (id: string): ExhookClientInfo => emqx!.clientInfo({ clientid: id, username: id, mountpoint: `${id}/` })

  const faults = (): CallFaults & { note(error: unknown): void } => ({
    failed: 0,
    byCode: {},
    errors: [],
    note(error: unknown) {
      this.failed++
      const code = (error as { code?: number }).code
      const name = typeof code === 'number' ? (grpc.status[code] ?? String(code)) : 'error'
      this.byCode[name] = (this.byCode[name] ?? 0) + 1
      if (this.errors.length < 5) this.errors.push((error as Error).message)
    }
  })

  const doOpen = async (c: OpenCommand) => {
    const t0 = nowMs()
    emqx = new EmqxExhookClient({ address: c.address, version: c.version })
    emqx.close()
    meta = emqx.requestMeta()
    channels = Array.from({ length: c.channels }, () => openChannel(c.transport, c.address, c.version))
    await Promise.all(channels.map((ch) => ch.waitForReady()))
    send({ type: 'opened', ms: nowMs() - t0 })
  }

  const doRun = async (c: RunCommand) => {
    const latency = new Float64Array(c.clients * 3)
    const f = faults()
    let calls = 0
    const timed = async (channel: Channel, rpc: string, request: object) => {
      const t0 = nowMs()
      try {
        await channel.call(rpc, request)
      } catch (error) {
        f.note(error)
      }
      latency[calls++] = nowMs() - t0
    }
    const cpu = process.cpuUsage()
    const elu = performance.eventLoopUtilization()
    const started = nowMs()
    await pool(c.clients, c.concurrency, async (i, worker) => {
      const channel = channels[worker % channels.length]!
      const id = `${c.prefix}-${i}`
      const clientinfo = clientInfo(id)
      await timed(channel, 'OnClientConnected', { clientinfo, meta })
      await timed(channel, 'OnSessionSubscribed', { clientinfo, topic: attributesTopic(id), subopts: emqx!.subOpts({ qos: 1 }), meta })
      await timed(channel, 'OnClientDisconnected', { clientinfo, reason: 'normal', meta })
    })
    const wallMs = nowMs() - started
    send({
      type: 'run-done',
      clients: c.clients,
      calls,
      ok: calls - f.failed,
      failed: f.failed,
      byCode: f.byCode,
      errors: f.errors,
      wallMs,
      latency: percentiles(latency.subarray(0, calls)),
      cpuMs: cpuMsSince(cpu),
      elu: performance.eventLoopUtilization(elu).utilization
    })
  }

  const doStreamStart = (c: StreamStartCommand) => {
    const latency: number[] = []
    /** When each call was due, epoch ms (for a split), in the order of `latency`. */
    const dueAt: number[] = []
    const sendLag: number[] = []
    const f = faults()
    const cpu = process.cpuUsage()
    const elu = performance.eventLoopUtilization()
    const started = nowMs()
    const intervalMs = 1000 / c.rate
    let connects = 0
    let inFlight = 0
    let stopping = false
    let lastAnswer = started
    let drained: () => void = () => undefined
    interface StreamClient {
      clientinfo: ExhookClientInfo
      channel: Channel
    }
    /** Answered connects whose disconnect is not due yet. */
    let later: { client: StreamClient; due: number }[] = []

    /** Sends a call now; its latency counts from `due`. */
    const callFrom = (channel: Channel, rpc: string, request: object, due: number, then?: () => void) => {
      sendLag.push(nowMs() - due)
      inFlight++
      channel
        .call(rpc, request)
        .catch((error: unknown) => f.note(error))
        .finally(() => {
          const now = nowMs()
          latency.push(now - due)
          dueAt.push(performance.timeOrigin + due)
          lastAnswer = now
          inFlight--
          then?.()
          if (stopping && inFlight === 0 && later.length === 0) drained()
        })
    }
    const disconnect = (client: StreamClient, due: number) => callFrom(client.channel, 'OnClientDisconnected', { clientinfo: client.clientinfo, reason: 'normal', meta }, due)
    const pump = () => {
      const now = nowMs()
      if (later.length > 0) {
        const due = later.filter((x) => x.due <= now)
        later = later.filter((x) => x.due > now)
        for (const x of due) disconnect(x.client, x.due)
      }
      while (!stopping) {
        const due = started + connects * 2 * intervalMs
        if (due > now) break
        const k = connects++
        const id = `${c.prefix}-${k}`
        const client: StreamClient = { clientinfo: clientInfo(id), channel: channels[k % channels.length]! }
        const disconnectDue = due + intervalMs
        callFrom(client.channel, 'OnClientConnected', { clientinfo: client.clientinfo, meta }, due, () => {
          // as EMQX calls a client's hooks one after the other: its disconnect is due on schedule,
          // but not before its connect was answered — then it counts from that answer
          const answered = nowMs()
          if (answered >= disconnectDue) disconnect(client, answered)
          else later.push({ client, due: disconnectDue })
        })
      }
    }
    const timer = setInterval(pump, 1)
    pump()
    stopStream = async (splitAt?: number) => {
      stopping = true // no new client; the started ones still disconnect, each when due
      if (inFlight > 0 || later.length > 0) await new Promise<void>((resolve) => (drained = resolve))
      clearInterval(timer)
      return {
        rate: c.rate,
        calls: latency.length,
        ok: latency.length - f.failed,
        failed: f.failed,
        byCode: f.byCode,
        errors: f.errors,
        wallMs: lastAnswer - started,
        latency: percentiles(latency),
        sendLag: percentiles(sendLag),
        cpuMs: cpuMsSince(cpu),
        elu: performance.eventLoopUtilization(elu).utilization,
        ...(splitAt === undefined
          ? {}
          : {
              split: {
                before: part(latency.filter((_, i) => dueAt[i]! < splitAt)),
                after: part(latency.filter((_, i) => dueAt[i]! >= splitAt))
              }
            })
      }
    }
    send({ type: 'stream-started' })
  }

  const doStreamStop = async (c: StreamStopCommand) => {
    const stop = stopStream
    stopStream = undefined
    if (!stop) throw new Error('no stream is running')
    send({ type: 'stream-done', ...(await stop(c.splitAt)) })
  }

  const doFill = (prefix: string, count: number) => {
    const t0 = nowMs()
    const subscriptions: StandinSubscription[] = []
    for (let i = 0; i < count; i++) {
      const id = `${prefix}-${i}`
      standin!.addClient({ clientid: id, username: id, mountpoint: `${id}/` })
      subscriptions.push({ clientid: id, topic: attributesTopic(id), qos: 1 })
    }
    // one assignment: the stand-in's subscribe() filters the whole list per call
    standin!.subscriptions = [...standin!.subscriptions, ...subscriptions]
    standinCpu = process.cpuUsage()
    send({ type: 'filled', ms: nowMs() - t0, clients: standin!.clients.size, subscriptions: standin!.subscriptions.length })
  }

  process.on('message', (message: ExhookFleetCommand) => {
    const done = (error: unknown) => {
      process.stderr.write(`exhook fleet: ${(error as Error).stack ?? String(error)}\n`)
      process.exit(1)
    }
    switch (message.cmd) {
      case 'open':
        doOpen(message).catch(done)
        break
      case 'run':
        doRun(message).catch(done)
        break
      case 'stream-start':
        doStreamStart(message)
        break
      case 'stream-stop':
        doStreamStop(message).catch(done)
        break
      case 'close':
        for (const ch of channels) ch.close()
        channels = []
        send({ type: 'closed' })
        break
      case 'standin-start':
        startEmqxRestStandin({ version: 5, apiKey: EMQX_API_KEY, apiSecret: EMQX_API_SECRET }).then((s) => {
          standin = s
          send({ type: 'standin-ready', url: s.url })
        }, done)
        break
      case 'fill':
        doFill(message.prefix, message.count)
        break
      case 'standin-stats':
        send({ type: 'standin-stats', requests: standin?.requests.length ?? 0, cpuMs: standinCpu ? cpuMsSince(standinCpu) : 0 })
        break
      default:
        process.exit(0)
    }
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/** The parent's handle on the callers' child process. */
export class ExhookFleet {
  private constructor(private readonly link: ChildLink<ExhookFleetCommand, ExhookFleetReply>) {}

  static async start(): Promise<ExhookFleet> {
    return new ExhookFleet(await ChildLink.start<ExhookFleetCommand, ExhookFleetReply>('lib/exhook-fleet.ts', 'ExHook callers'))
  }

  async open(command: Omit<OpenCommand, 'cmd'>): Promise<number> {
    return (await this.link.request({ cmd: 'open', ...command }, 'opened')).ms
  }

  run(command: Omit<RunCommand, 'cmd'>): Promise<RunReport> {
    return this.link.request({ cmd: 'run', ...command }, 'run-done')
  }

  async streamStart(command: Omit<StreamStartCommand, 'cmd'>): Promise<void> {
    await this.link.request({ cmd: 'stream-start', ...command }, 'stream-started')
  }

  /** `splitAt` (epoch ms): also report the calls due before it and after it apart. */
  streamStop(splitAt?: number): Promise<StreamReport> {
    return this.link.request({ cmd: 'stream-stop', ...(splitAt === undefined ? {} : { splitAt }) }, 'stream-done')
  }

  /** Closes the channels (open() opens new ones, e.g. to the next hub). */
  async close(): Promise<void> {
    await this.link.request({ cmd: 'close' }, 'closed')
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

/** The parent's handle on the EMQX REST stand-in's child process. */
export class StandinProcess {
  private constructor(
    private readonly link: ChildLink<ExhookFleetCommand, ExhookFleetReply>,
    readonly url: string
  ) {}

  static async start(): Promise<StandinProcess> {
    const link = await ChildLink.start<ExhookFleetCommand, ExhookFleetReply>('lib/exhook-fleet.ts', 'EMQX REST stand-in')
    const { url } = await link.request({ cmd: 'standin-start' }, 'standin-ready')
    return new StandinProcess(link, url)
  }

  fill(prefix: string, count: number): Promise<{ ms: number; clients: number; subscriptions: number }> {
    return this.link.request({ cmd: 'fill', prefix, count }, 'filled')
  }

  stats(): Promise<StandinStats> {
    return this.link.request({ cmd: 'standin-stats' }, 'standin-stats')
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

// ---------------------------------------------------------------- the hub's side: what the parents run and measure

export interface EmqxHub {
  hub: Hub
  /** host:port of its ExHook gRPC server. */
  exhookAddress: string
  /** Its HTTP API, `http://127.0.0.1:port` (default credentials admin/public). */
  httpUrl: string
  stop(): Promise<void>
}

/**
 * A hub in EMQX mode in this process, as `npm start` runs one with IOTHUB_BROKER=emqx: ExHook
 * and HTTP on 127.0.0.1 and free ports, EMQX 5's REST API at `emqxApi`, a SQLite store in a
 * fresh temp dir (synchronous = FULL, or BENCH_STORE_SYNC), logs silenced. Resolves once it is
 * ready (its start reconcile succeeded). `maxBatch: 1`: the store commits one transaction per
 * event — `new Hub(config, { store: new SqliteStore({ …, maxBatch: 1 }) })`, the baseline.
 */
export async function startEmqxHub(emqxApi: string, options: { maxBatch?: number } = {}): Promise<EmqxHub> {
  const dataDir = tempDir('iothub-bench-emqx-')
  const config = loadConfig({}, [], {
    dataDir,
    httpPort: 0,
    mqttHost: '127.0.0.1',
    mqttPort: 0,
    broker: 'emqx',
    emqxApi,
    emqxApiKey: EMQX_API_KEY,
    emqxApiSecret: EMQX_API_SECRET,
    emqxVersion: 5,
    exhookHost: '127.0.0.1',
    exhookPort: 0,
    logLevel: 'silent',
    storeSync: benchStoreSync()
  })
  const log = createLogger(config.logLevel)
  const metrics = new HubMetrics()
  const store =
    options.maxBatch === undefined
      ? undefined
      : new SqliteStore({
          dataDir,
          synchronous: config.storeSync,
          busyTimeoutMs: config.storeBusyTimeout,
          maxBatch: options.maxBatch,
          // as the hub's own store reports to its metrics (commitTotals reads them)
          observer: metrics.commitObserver((error) => log.error({ err: error.message }, 'store commit failed'))
        })
  const hub = new Hub(config, { log, metrics, ...(store ? { store } : {}) })
  try {
    const { http, exhook } = await hub.start()
    if (!(await waitFor(() => hub.readiness().ready, 30_000, 10))) throw new Error(`the hub is not ready: ${JSON.stringify(hub.readiness().checks)}`)
    return {
      hub,
      exhookAddress: `127.0.0.1:${exhook!.port}`,
      httpUrl: `http://127.0.0.1:${http.port}`,
      async stop() {
        await hub.stop()
        removeDir(dataDir)
      }
    }
  } catch (error) {
    await hub.stop().catch(() => undefined)
    removeDir(dataDir)
    throw error
  }
}

/** The hub's lifecycle events so far, `kind/outcome` → count (its iothub_lifecycle_events_total). */
export async function eventCounts(hub: Hub): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  for (const v of (await hub.metrics.eventsTotal.get()).values) counts.set(`${v.labels.kind}/${v.labels.outcome}`, v.value)
  return counts
}

/** `after − before` of eventCounts. */
export function eventDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const delta = new Map<string, number>()
  for (const [key, value] of after) if (value - (before.get(key) ?? 0) !== 0) delta.set(key, value - (before.get(key) ?? 0))
  return delta
}

if (process.argv.includes('--child') && process.send) child()
