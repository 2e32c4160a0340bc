/**
 * The event stream's benchmark (issue 14): how soon a committed change reaches a consumer, and
 * what the stream costs the hub.
 *
 * 1. Latency. A hub (SQLite, synchronous = FULL, in this process) takes lifecycle events offered
 *    at BENCH_STREAM_RATE per second (default 5,000; bench/events.ts's open-loop driver, each
 *    event a few change-log entries) for BENCH_STREAM_SECONDS, with one `GET /v1/events` consumer
 *    and a webhook receiver (IOTHUB_EVENTS_WEBHOOK_URL) in a child process. Each event's latency
 *    runs from its commit (`time`, the change log's commit time) to its arrival there: p50/p99
 *    for the SSE consumer and for the webhook receiver (whose batches are POSTed one after
 *    another, so its latency includes waiting for the batch before).
 * 2. Cost. bench/events.ts's closed-loop driver (BENCH_EVENT_CLIENTS clients, BENCH_STREAM_COST_EVENTS
 *    events a round) on a second hub without webhook or MQTT presence topics, rounds alternating
 *    with no consumer, with BENCH_STREAM_CONSUMERS (10) consumers attached in the child, and the
 *    transport floor: durable events/s with consumers ÷ without (median of the rounds), target
 *    ≥ 0.9×.
 * 3. The transport floor, in the same rounds: no consumer on the hub, and the same 10 consumers
 *    attached instead to a bare node:http server in the hub's process that, for every batch of
 *    entries the hub's follower applies, writes the same number of bytes of real event frames
 *    (taken from this hub's own stream beforehand) to each of them in one write, as the hub's
 *    stream does. What moving these bytes to 10 sockets costs on this machine, whoever makes
 *    them: the hub's ratio is also given against it (consumers ÷ floor). In these rounds a
 *    consumer may have 256 MiB waiting in its socket before the hub closes it as slow (the
 *    floor closes none); a round in which one was closed anyway says so.
 *
 * The child (this file with the argument `receiver`) parses what it receives, as a consumer
 * does; its cpu is not the hub's, but the machine's two cpus are shared.
 */
import { createServer, type Server, type ServerResponse } from 'node:http'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { performance } from 'node:perf_hooks'
import { pino } from 'pino'
import { loadConfig, type HubConfig } from '../src/config.js'
import { Hub } from '../src/hub.js'
import type { LogEntry } from '../src/store/change-log.js'
import { drive, driveAtRate } from './events.js'
import { envInt, fmt, forkBench, line, median, percentiles, removeDir, report, runMain, sleep, tempDir } from './lib/util.js'

const RATE = envInt('BENCH_STREAM_RATE', 5_000)
const SECONDS = envInt('BENCH_STREAM_SECONDS', 6)
const CONSUMERS = envInt('BENCH_STREAM_CONSUMERS', 10)
const COST_EVENTS = envInt('BENCH_STREAM_COST_EVENTS', 40_000)
const COST_ROUNDS = envInt('BENCH_STREAM_COST_ROUNDS', 3)
const CLIENTS = envInt('BENCH_EVENT_CLIENTS', 2_000)
/** Bytes of events that may wait for one consumer of the cost rounds (IOTHUB_EVENTS_BUFFER; default 1 MiB). */
const COST_BUFFER_BYTES = 256 * 1024 * 1024
/** Diagnosis only (a cpu profile of one kind of round): which rounds run, of none, consumers, floor. */
const KINDS = (process.env.BENCH_STREAM_KINDS ?? 'none,consumers,floor').split(',').map((k) => k.trim()) as ('none' | 'consumers' | 'floor')[]
const TARGET_RATIO = 0.9
const SECRET = 'bench-webhook-secret-0123456789'

// ── the child: a webhook receiver and SSE consumers, recording latencies ──────────────────────

type ToChild = { cmd: 'open'; url: string; streams: number } | { cmd: 'close' } | { cmd: 'report'; through: number } | { cmd: 'exit' }
type FromChild =
  | { type: 'port'; port: number }
  | { type: 'opened' }
  /** Answers `close`: how many of the streams had ended before (the hub closed them as slow, say). */
  | { type: 'closed'; endedEarly: number }
  | { type: 'report'; sse: number[]; webhook: number[]; sseEvents: number; webhookEvents: number }

async function receiver(): Promise<void> {
  const send = (m: FromChild) => process.send!(m)
  let sse: number[] = []
  let webhook: number[] = []
  let sseLast = 0
  let webhookLast = 0
  let sseEvents = 0
  let webhookEvents = 0
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const now = Date.now()
      for (const e of JSON.parse(Buffer.concat(chunks).toString('utf8')) as { seq: number; time: string }[]) {
        webhook.push(now - Date.parse(e.time))
        webhookLast = Math.max(webhookLast, e.seq)
        webhookEvents++
      }
      res.writeHead(204).end()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const open: (() => void)[] = []
  let endedEarly = 0
  process.on('message', (m: ToChild) => {
    if (m.cmd === 'open') {
      let ready = 0
      for (let i = 0; i < m.streams; i++) {
        const measured = i === 0
        /** Closed because the bench said so (not by the server). */
        let told = false
        const req = httpRequest(`${m.url}/v1/events`, { headers: { accept: 'text/event-stream', authorization: `Basic ${Buffer.from('admin:public').toString('base64')}` } })
        req.once('response', (res) => {
          if (++ready === m.streams) send({ type: 'opened' })
          res.once('close', () => {
            if (!told) endedEarly++
          })
          if (!measured) {
            // the others only take what comes off the socket: a consumer's parsing is its own
            // cpu, not the hub's, and would not share the hub's machine
            res.resume()
            return
          }
          let buffer = ''
          res.setEncoding('utf8')
          res.on('data', (chunk: string) => {
            buffer += chunk
            let end: number
            while ((end = buffer.indexOf('\n\n')) >= 0) {
              const block = buffer.slice(0, end)
              buffer = buffer.slice(end + 2)
              const data = block.split('\n').find((l) => l.startsWith('data: '))
              if (!data) continue
              const e = JSON.parse(data.slice(6)) as { seq: number; time: string }
              sse.push(Date.now() - Date.parse(e.time))
              sseLast = Math.max(sseLast, e.seq)
              sseEvents++
            }
          })
        })
        req.end()
        open.push(() => {
          told = true
          req.destroy()
        })
      }
    } else if (m.cmd === 'close') {
      for (const close of open.splice(0)) close()
      send({ type: 'closed', endedEarly })
      endedEarly = 0
    } else if (m.cmd === 'report') {
      // the log's last entry may make no event (a topic row), so the end is not a seq: done once
      // nothing more came for a second, or at the deadline
      const deadline = Date.now() + 60_000
      let counts = -1
      let quietSince = Date.now()
      const wait = () => {
        const now = Date.now()
        if (sseEvents + webhookEvents !== counts) {
          counts = sseEvents + webhookEvents
          quietSince = now
        }
        if (now - quietSince >= 1000 || now > deadline) return done()
        setTimeout(wait, 20)
      }
      const done = () => {
        send({ type: 'report', sse, webhook, sseEvents, webhookEvents })
        sse = []
        webhook = []
        sseEvents = 0
        webhookEvents = 0
      }
      wait()
    } else {
      server.close()
      process.exit(0)
    }
  })
  send({ type: 'port', port: (server.address() as AddressInfo).port })
  await new Promise<never>(() => undefined) // until told to exit
}

// ── the bench ─────────────────────────────────────────────────────────────────────────────────

function childOf(): { ask: (m: ToChild, answer?: FromChild['type']) => Promise<FromChild | undefined>; port: Promise<number> } {
  const child = forkBench('events-stream.ts', ['receiver'])
  const waiting = new Map<string, (m: FromChild) => void>()
  child.on('message', (m: FromChild) => {
    waiting.get(m.type)?.(m)
    waiting.delete(m.type)
  })
  const next = (type: FromChild['type']) => new Promise<FromChild>((resolve) => waiting.set(type, resolve))
  const port = next('port').then((m) => (m as { port: number }).port)
  return {
    port,
    async ask(m, answer) {
      const reply = answer ? next(answer) : undefined
      child.send(m)
      return reply
    }
  }
}

// ── the transport floor: the same bytes to the same consumers, from a bare server ────────────────

/** Real frames of a hub's stream (`GET /v1/events?after=0`, the first `count`), and the entries they span. */
async function framesOf(url: string, count: number): Promise<{ pool: Buffer; ends: number[]; entries: number }> {
  const abort = new AbortController()
  const res = await fetch(`${url}/v1/events?after=0`, { headers: { authorization: `Basic ${Buffer.from('admin:public').toString('base64')}` }, signal: abort.signal })
  const frames: string[] = []
  let last = 0
  let text = ''
  const decoder = new TextDecoder()
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    text += decoder.decode(chunk, { stream: true })
    let end: number
    while (frames.length < count && (end = text.indexOf('\n\n')) >= 0) {
      const block = text.slice(0, end + 2)
      text = text.slice(end + 2)
      const id = /^id: (\d+)$/m.exec(block)
      if (block.startsWith(':') || !id) continue // a heartbeat
      frames.push(block)
      last = Number(id[1])
    }
    if (frames.length >= count) break
  }
  abort.abort()
  const ends: number[] = []
  let at = 0
  for (const f of frames) ends.push((at += Buffer.byteLength(f)))
  return { pool: Buffer.from(frames.join(''), 'utf8'), ends, entries: last }
}

/**
 * A bare node:http server that writes to its streams, for every batch of `n` entries, the bytes
 * the hub's stream would have written for them (`bytesPerEntry` × n, whole frames from `pool`,
 * one write per stream per batch, as EventConsumer.deliver does): moving the bytes, nothing else.
 */
class TransportFloor {
  readonly server: Server
  private readonly streams = new Set<ServerResponse>()
  private frame = 0
  private owed = 0

  constructor(
    private readonly pool: Buffer,
    private readonly ends: number[],
    private readonly bytesPerEntry: number
  ) {
    this.server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
      res.flushHeaders()
      this.streams.add(res)
      res.on('close', () => this.streams.delete(res))
    })
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  entries(n: number): void {
    if (this.streams.size === 0) return
    this.owed += n * this.bytesPerEntry
    const start = this.frame === 0 ? 0 : this.ends[this.frame - 1]!
    let end = this.frame
    while (end < this.ends.length && this.ends[end]! - start < this.owed) end++
    if (end === this.frame) return
    const bytes = this.pool.subarray(start, this.ends[end - 1])
    this.owed -= bytes.length
    this.frame = end === this.ends.length ? 0 : end
    for (const res of this.streams) res.write(bytes)
  }

  close(): Promise<void> {
    for (const res of this.streams) res.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** Calls `also` with every batch of entries the hub's follower hands its event streams. */
function onEntries(hub: Hub, also: (entries: readonly LogEntry[]) => void): void {
  // the bench reaches into the hub's private event streams: the floor must see the same batches
  const streams = (hub as unknown as { events: { heard(entries: readonly LogEntry[]): void } }).events
  const heard = streams.heard.bind(streams)
  streams.heard = (entries) => {
    heard(entries)
    also(entries)
  }
}

async function startHub(dataDir: string, overrides: Partial<HubConfig>): Promise<{ hub: Hub; url: string }> {
  const config = loadConfig({}, [], { dataDir, mqttHost: '127.0.0.1', mqttPort: 0, httpHost: '127.0.0.1', httpPort: 0, coapHost: '127.0.0.1', coapPort: 0, node: 'iothub@bench', logLevel: 'silent', ...overrides })
  const hub = await Hub.open(config, { log: pino({ level: 'silent' }) })
  const { http } = await hub.start()
  return { hub, url: `http://127.0.0.1:${http.port}` }
}

async function main(): Promise<void> {
  const [l1, l5] = loadavg()
  line(`events-stream: delivery latency from commit to an SSE consumer and a webhook receiver, and the stream's cost to lifecycle events`)
  line(`  machine load before: ${fmt(l1!, 2)} (1 min), ${fmt(l5!, 2)} (5 min) on ${cpus().length} cpus`)
  const child = childOf()
  const receiverPort = await child.port

  // 1. latency at RATE
  const dir = tempDir('iothub-bench-stream-')
  const { hub, url } = await startHub(dir, { eventsWebhookUrl: `http://127.0.0.1:${receiverPort}/`, eventsWebhookSecret: SECRET, eventsMqtt: 'off' })
  await child.ask({ cmd: 'open', url, streams: 1 }, 'opened')
  await drive(hub.registry, 'warm', 200, 4_000)
  await sleep(500)
  await child.ask({ cmd: 'report', through: hub.store.following().applied }, 'report') // drops the warm-up's
  const before = hub.store.following().applied
  const run = await driveAtRate(hub.registry, RATE, SECONDS, Math.min(CLIENTS, RATE))
  await hub.registry.settled()
  const through = hub.store.following().applied
  const entriesPerSecond = (through - before) / run.seconds
  const got = (await child.ask({ cmd: 'report', through }, 'report')) as Extract<FromChild, { type: 'report' }>
  const sse = percentiles(got.sse)
  const webhook = percentiles(got.webhook)
  line(`  ${fmt(run.events)} lifecycle events offered at ${fmt(RATE)}/s for ${SECONDS} s: ${fmt(run.events / run.seconds)}/s taken, ${fmt(entriesPerSecond)} change-log entries/s committed`)
  line(`  commit → SSE consumer:     ${fmt(got.sseEvents)} events, p50 ${fmt(sse.p50, 1)} ms  p99 ${fmt(sse.p99, 1)} ms  max ${fmt(sse.max, 1)} ms`)
  line(`  commit → webhook receiver: ${fmt(got.webhookEvents)} events, p50 ${fmt(webhook.p50, 1)} ms  p99 ${fmt(webhook.p99, 1)} ms  max ${fmt(webhook.max, 1)} ms (batches of ≤ 500)`)
  await child.ask({ cmd: 'close' }, 'closed')
  await hub.stop()
  removeDir(dir)

  // 2. the cost of CONSUMERS streams to the lifecycle-events throughput
  const costDir = tempDir('iothub-bench-stream-cost-')
  // a consumer the hub closes as slow stops costing it, while the floor never closes one: room
  // enough in each socket that the consumers of both stay to the end of every round
  const cost = await startHub(costDir, { eventsMqtt: 'off', eventsBuffer: COST_BUFFER_BYTES })
  await drive(cost.hub.registry, 'warm', CLIENTS, 8_000)
  const frames = await framesOf(cost.url, 4_000)
  const bytesPerEntry = frames.pool.length / frames.entries
  const floor = new TransportFloor(frames.pool, frames.ends, bytesPerEntry)
  const floorUrl = await floor.listen()
  onEntries(cost.hub, (entries) => floor.entries(entries.length))
  line(`  the floor writes ${fmt(bytesPerEntry)} bytes of real frames per change-log entry (${fmt(frames.ends.length)} frames of this hub's stream over ${fmt(frames.entries)} entries)`)
  const rates: Record<'none' | 'consumers' | 'floor', number[]> = { none: [], consumers: [], floor: [] }
  for (let round = 0; round < COST_ROUNDS; round++) {
    for (const kind of KINDS) {
      if (kind !== 'none') await child.ask({ cmd: 'open', url: kind === 'floor' ? floorUrl : cost.url, streams: CONSUMERS }, 'opened')
      await sleep(200)
      const started = performance.now()
      const elu = performance.eventLoopUtilization()
      const cpu = process.cpuUsage()
      const r = await drive(cost.hub.registry, `r${round}${kind[0]}`, CLIENTS, COST_EVENTS)
      const seconds = (performance.now() - started) / 1000
      const rate = r.events / seconds
      // the main thread's busy time per event (it carries the lifecycle and the stream alike),
      // and the whole process' cpu (its writer threads too): where a difference comes from
      const mainUs = (performance.eventLoopUtilization(elu).active * 1000) / r.events
      const used = process.cpuUsage(cpu)
      const processUs = (used.user + used.system) / r.events
      rates[kind].push(rate)
      const closed = kind === 'none' ? undefined : ((await child.ask({ cmd: 'close' }, 'closed')) as Extract<FromChild, { type: 'closed' }>)
      const what = kind === 'none' ? 'no consumer' : kind === 'consumers' ? `${CONSUMERS} consumers` : `the floor, ${CONSUMERS} consumers`
      // a consumer the hub closed (too slow) stops costing it: such a round is not what it says
      const early = closed && closed.endedEarly > 0 ? `; ${closed.endedEarly} of the consumers ENDED EARLY (closed by the server)` : ''
      line(`  round ${round + 1}, ${what}: ${fmt(rate)} durable events/s; main thread ${fmt(mainUs, 1)} µs busy per event, the process ${fmt(processUs, 1)} µs cpu per event (the driver included)${early}`)
    }
  }
  await floor.close()
  await cost.hub.stop()
  removeDir(costDir)
  await child.ask({ cmd: 'exit' })
  const [none, withStreams, floored] = [median(rates.none), median(rates.consumers), median(rates.floor)]
  const ratio = withStreams / none
  const floorRatio = floored / none
  line(`  with ${CONSUMERS} consumers ÷ none: ${fmt(ratio, 2)}× (medians ${fmt(withStreams)} / ${fmt(none)} events/s); target ≥ ${TARGET_RATIO}× ${ratio >= TARGET_RATIO ? 'met' : 'MISSED'}`)
  line(`  the transport floor ÷ none: ${fmt(floorRatio, 2)}× (${fmt(floored)} events/s)${floorRatio < TARGET_RATIO ? `: the target is out of reach on this machine; the stream ÷ its floor ${fmt(withStreams / floored, 2)}×` : `; the stream ÷ its floor ${fmt(withStreams / floored, 2)}×`}`)

  await report('events-stream', [
    { bench: 'events-stream', metric: `commit → SSE p50 / p99 at ${fmt(RATE)}/s`, value: `${fmt(sse.p50, 1)} / ${fmt(sse.p99, 1)} ms`, baseline: '', ratio: '', target: `(${fmt(entriesPerSecond)} entries/s)`, met: null },
    { bench: 'events-stream', metric: `commit → webhook p50 / p99 at ${fmt(RATE)}/s`, value: `${fmt(webhook.p50, 1)} / ${fmt(webhook.p99, 1)} ms`, baseline: '', ratio: '', target: '', met: null },
    {
      bench: 'events-stream',
      metric: `lifecycle events/s, ${CONSUMERS} SSE consumers`,
      value: fmt(withStreams),
      baseline: `${fmt(none)} (none)`,
      ratio: `${fmt(ratio, 2)}×`,
      target: `≥ ${TARGET_RATIO}×`,
      met: ratio >= TARGET_RATIO
    },
    {
      bench: 'events-stream',
      metric: `the same, ÷ the transport floor (${CONSUMERS} consumers of a bare server)`,
      value: fmt(withStreams),
      baseline: `${fmt(floored)} (floor; ${fmt(floorRatio, 2)}× none)`,
      ratio: `${fmt(withStreams / floored, 2)}×`,
      target: '',
      met: null
    }
  ])
}

runMain(process.argv[2] === 'receiver' ? receiver : main)
