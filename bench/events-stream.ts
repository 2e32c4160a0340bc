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
 *    with no consumer and with BENCH_STREAM_CONSUMERS (10) consumers attached in the child:
 *    durable events/s with consumers ÷ without (median of the pairs), target ≥ 0.9×.
 *
 * The child (this file with the argument `receiver`) parses what it receives, as a consumer
 * does; its cpu is not the hub's, but the machine's two cpus are shared.
 */
import { createServer } from 'node:http'
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { cpus, loadavg } from 'node:os'
import { performance } from 'node:perf_hooks'
import { pino } from 'pino'
import { loadConfig, type HubConfig } from '../src/config.js'
import { Hub } from '../src/hub.js'
import { drive, driveAtRate } from './events.js'
import { envInt, fmt, forkBench, line, median, percentiles, removeDir, report, runMain, sleep, tempDir } from './lib/util.js'

const RATE = envInt('BENCH_STREAM_RATE', 5_000)
const SECONDS = envInt('BENCH_STREAM_SECONDS', 6)
const CONSUMERS = envInt('BENCH_STREAM_CONSUMERS', 10)
const COST_EVENTS = envInt('BENCH_STREAM_COST_EVENTS', 40_000)
const COST_ROUNDS = envInt('BENCH_STREAM_COST_ROUNDS', 3)
const CLIENTS = envInt('BENCH_EVENT_CLIENTS', 2_000)
const TARGET_RATIO = 0.9
const SECRET = 'bench-webhook-secret-0123456789'

// ── the child: a webhook receiver and SSE consumers, recording latencies ──────────────────────

type ToChild = { cmd: 'open'; url: string; streams: number } | { cmd: 'close' } | { cmd: 'report'; through: number } | { cmd: 'exit' }
type FromChild = { type: 'port'; port: number } | { type: 'opened' } | { type: 'report'; sse: number[]; webhook: number[]; sseEvents: number; webhookEvents: number }

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
  process.on('message', (m: ToChild) => {
    if (m.cmd === 'open') {
      let ready = 0
      for (let i = 0; i < m.streams; i++) {
        const measured = i === 0
        const req = httpRequest(`${m.url}/v1/events`, { headers: { accept: 'text/event-stream', authorization: `Basic ${Buffer.from('admin:public').toString('base64')}` } })
        req.once('response', (res) => {
          if (++ready === m.streams) send({ type: 'opened' })
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
        open.push(() => req.destroy())
      }
    } else if (m.cmd === 'close') {
      for (const close of open.splice(0)) close()
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
  await child.ask({ cmd: 'close' })
  await hub.stop()
  removeDir(dir)

  // 2. the cost of CONSUMERS streams to the lifecycle-events throughput
  const costDir = tempDir('iothub-bench-stream-cost-')
  const cost = await startHub(costDir, { eventsMqtt: 'off' })
  await drive(cost.hub.registry, 'warm', CLIENTS, 8_000)
  const without: number[] = []
  const withStreams: number[] = []
  for (let round = 0; round < COST_ROUNDS; round++) {
    for (const attached of [false, true]) {
      if (attached) await child.ask({ cmd: 'open', url: cost.url, streams: CONSUMERS }, 'opened')
      await sleep(200)
      const started = performance.now()
      const elu = performance.eventLoopUtilization()
      const cpu = process.cpuUsage()
      const r = await drive(cost.hub.registry, `r${round}${attached ? 's' : 'n'}`, CLIENTS, COST_EVENTS)
      const seconds = (performance.now() - started) / 1000
      const rate = r.events / seconds
      // the main thread's busy time per event (it carries the lifecycle and the stream alike),
      // and the whole process' cpu (its writer threads too): where a difference comes from
      const mainUs = (performance.eventLoopUtilization(elu).active * 1000) / r.events
      const used = process.cpuUsage(cpu)
      const processUs = (used.user + used.system) / r.events
      ;(attached ? withStreams : without).push(rate)
      if (attached) await child.ask({ cmd: 'close' })
      line(`  round ${round + 1}, ${attached ? `${CONSUMERS} consumers` : 'no consumer'}: ${fmt(rate)} durable events/s; main thread ${fmt(mainUs, 1)} µs busy per event, the process ${fmt(processUs, 1)} µs cpu per event (the driver included)`)
    }
  }
  await cost.hub.stop()
  removeDir(costDir)
  await child.ask({ cmd: 'exit' })
  const ratio = median(withStreams) / median(without)
  line(`  with ${CONSUMERS} consumers ÷ none: ${fmt(ratio, 2)}× (medians ${fmt(median(withStreams))} / ${fmt(median(without))} events/s); target ≥ ${TARGET_RATIO}× ${ratio >= TARGET_RATIO ? 'met' : 'MISSED'}`)

  await report('events-stream', [
    { bench: 'events-stream', metric: `commit → SSE p50 / p99 at ${fmt(RATE)}/s`, value: `${fmt(sse.p50, 1)} / ${fmt(sse.p99, 1)} ms`, baseline: '', ratio: '', target: `(${fmt(entriesPerSecond)} entries/s)`, met: null },
    { bench: 'events-stream', metric: `commit → webhook p50 / p99 at ${fmt(RATE)}/s`, value: `${fmt(webhook.p50, 1)} / ${fmt(webhook.p99, 1)} ms`, baseline: '', ratio: '', target: '', met: null },
    {
      bench: 'events-stream',
      metric: `lifecycle events/s, ${CONSUMERS} SSE consumers`,
      value: fmt(median(withStreams)),
      baseline: `${fmt(median(without))} (none)`,
      ratio: `${fmt(ratio, 2)}×`,
      target: `≥ ${TARGET_RATIO}×`,
      met: ratio >= TARGET_RATIO
    }
  ])
}

runMain(process.argv[2] === 'receiver' ? receiver : main)
