/**
 * Memory per 10,000 connected sessions: the hub against bare Aedes (in-memory persistence).
 *
 * Each broker is measured in a fresh process of its own (this script forks itself with
 * `--target=hub|bare` and --expose-gc), so one's garbage and V8 heap growth never count
 * against the other. The mqtt.js clients run in yet another process (bench/lib/clients.ts):
 * nothing of theirs is in the numbers. In the broker's process:
 *
 *   1. start the broker; gc; read process.memoryUsage()            → before
 *   2. connect BENCH_MEM_CLIENTS clients (clean session), each subscribing to 2 topics,
 *      sampling memoryUsage() every 20 ms                           → peak
 *   3. once all hold their SUBACK: gc; read memoryUsage()           → after
 *
 * and reports (after − before) and (peak − before), scaled to 10,000 sessions.
 *
 *   BENCH_MEM_CLIENTS   connected sessions measured   (default 10,000)
 *   BENCH_CONCURRENCY   clients connecting at a time  (default 200)
 *   BENCH_MEM_TOPICS    own: each client its own topics, `bench/{id}/t{k}` (default) — how a
 *                       broker without namespaces addresses one device: its id in the topic;
 *                       shared: every client the same ones, `shared/t{k}` (diagnosis). Bare Aedes
 *                       then keeps one trie path for all of them, while the hub mounts each
 *                       client's under its own id (`{id}/shared/t{k}`), as it does a device's
 *                       `v1/devices/me/…`: the namespaces' price per session
 */
import { ClientFleet } from './lib/clients.js'
import { startTarget } from './lib/targets.js'
import { collectGarbage, envInt, fmt, forkBench, line, mib, report, runMain, waitFor } from './lib/util.js'

const CLIENTS = envInt('BENCH_MEM_CLIENTS', 10_000)
const CONCURRENCY = envInt('BENCH_CONCURRENCY', 200)
const TOPICS = 2
const SHARED_TOPICS = sharedTopics()

function sharedTopics(): boolean {
  const raw = process.env.BENCH_MEM_TOPICS ?? 'own'
  if (raw !== 'own' && raw !== 'shared') throw new Error(`BENCH_MEM_TOPICS must be own or shared, got "${raw}"`)
  return raw === 'shared'
}
const PER = 10_000

interface Usage {
  rss: number
  heapUsed: number
  heapTotal: number
  external: number
}

interface MemoryResult {
  type: 'memory'
  target: 'hub' | 'bare'
  clients: number
  failed: number
  gc: boolean
  before: Usage
  after: Usage
  peak: { rss: number; heapUsed: number }
  sessions: number | null
  connectMs: number
}

const usage = (): Usage => {
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external }
}

/** In the broker's own process: measure one broker and send the result to the parent. */
async function measureTarget(name: 'hub' | 'bare'): Promise<void> {
  const fleet = await ClientFleet.start()
  const target = await startTarget(name)
  try {
    const gc = await collectGarbage()
    const before = usage()
    const peak = { rss: before.rss, heapUsed: before.heapUsed }
    const sampler = setInterval(() => {
      const m = process.memoryUsage()
      peak.rss = Math.max(peak.rss, m.rss)
      peak.heapUsed = Math.max(peak.heapUsed, m.heapUsed)
    }, 20)
    const connected = await fleet.connect({ url: target.url, count: CLIENTS, concurrency: CONCURRENCY, prefix: `mem-${name}`, topics: TOPICS, sharedTopics: SHARED_TOPICS, qos: 1 })
    clearInterval(sampler)
    if (!(await waitFor(() => target.brokerClients() === connected.ok, 60_000))) throw new Error(`${name}: Aedes counts ${target.brokerClients()} of ${connected.ok} clients`)
    await collectGarbage()
    const after = usage()
    peak.rss = Math.max(peak.rss, after.rss)
    peak.heapUsed = Math.max(peak.heapUsed, after.heapUsed)
    const result: MemoryResult = {
      type: 'memory',
      target: name,
      clients: connected.ok,
      failed: connected.failed,
      gc,
      before,
      after,
      peak,
      sessions: target.hub ? target.hub.registry.size : null,
      connectMs: connected.ms
    }
    const send = process.send?.bind(process)
    if (send) await new Promise<void>((resolve) => send(result, undefined, {}, () => resolve()))
    else print(result)
    await fleet.disconnect(CONCURRENCY)
  } finally {
    await fleet.stop()
    await target.stop()
  }
}

function runTarget(name: 'hub' | 'bare'): Promise<MemoryResult> {
  return new Promise((resolve, reject) => {
    const child = forkBench('memory.ts', [`--target=${name}`], { exposeGc: true })
    let result: MemoryResult | undefined
    child.on('message', (m: MemoryResult) => {
      if (m.type === 'memory') result = m
    })
    child.once('exit', (code) => (result && code === 0 ? resolve(result) : reject(new Error(`memory --target=${name} exited with ${code}`))))
  })
}

const perSessions = (bytes: number, sessions: number) => (bytes * PER) / Math.max(1, sessions)

function print(r: MemoryResult): void {
  const d = (k: keyof Usage) => perSessions(r.after[k] - r.before[k], r.clients)
  line(
    `  ${r.target.padEnd(4)}  before: rss ${mib(r.before.rss)}, heap ${mib(r.before.heapUsed)}   after ${fmt(r.clients)} sessions: rss ${mib(r.after.rss)}, heap ${mib(r.after.heapUsed)}` +
      `   (connected in ${fmt(r.connectMs)} ms${r.failed > 0 ? `, ${r.failed} FAILED` : ''}${r.sessions !== null ? `, registry holds ${fmt(r.sessions)}` : ''})`
  )
  line(
    `        per ${fmt(PER)} sessions: rss +${mib(d('rss'))}, heapUsed +${mib(d('heapUsed'))}, heapTotal +${mib(d('heapTotal'))}, external +${mib(d('external'))};` +
      ` peak during connect: rss +${mib(perSessions(r.peak.rss - r.before.rss, r.clients))}, heapUsed +${mib(perSessions(r.peak.heapUsed - r.before.heapUsed, r.clients))}`
  )
}

async function main(): Promise<void> {
  const target = process.argv.find((a) => a.startsWith('--target='))?.slice('--target='.length)
  if (target === 'hub' || target === 'bare') return measureTarget(target)

  line(`memory: ${fmt(CLIENTS)} connected clean sessions, ${TOPICS} topics each (QoS 1, ${SHARED_TOPICS ? 'the same for every client' : 'its own'}), hub against bare Aedes`)
  line(`  each broker in a fresh process of its own, mqtt.js clients in a separate process (not counted); gc before each reading`)
  const bare = await runTarget('bare')
  print(bare)
  const hub = await runTarget('hub')
  print(hub)
  if (!hub.gc || !bare.gc) line(`  NOTE: run without --expose-gc: readings include garbage`)
  const perRss = (r: MemoryResult) => perSessions(r.after.rss - r.before.rss, r.clients)
  const perHeap = (r: MemoryResult) => perSessions(r.after.heapUsed - r.before.heapUsed, r.clients)
  const perPeak = (r: MemoryResult) => perSessions(r.peak.rss - r.before.rss, r.clients)
  line(
    `  hub/bare per ${fmt(PER)} sessions: rss ${fmt(perRss(hub) / perRss(bare), 2)}× (+${mib(perRss(hub) - perRss(bare))}),` +
      ` heapUsed ${fmt(perHeap(hub) / perHeap(bare), 2)}× (+${mib(perHeap(hub) - perHeap(bare))}),` +
      ` peak rss ${fmt(perPeak(hub) / perPeak(bare), 2)}×; the hub's own share: ${fmt(((perHeap(hub) - perHeap(bare)) / PER) / 1024, 2)} KiB heap per session`
  )

  await report('memory', [
    {
      bench: 'memory',
      metric: `rss per ${fmt(PER)} sessions (peak)`,
      value: `${mib(perRss(hub))} (${mib(perPeak(hub))})`,
      baseline: `${mib(perRss(bare))} (${mib(perPeak(bare))}) bare`,
      ratio: `${fmt(perRss(hub) / perRss(bare), 2)}×`,
      target: '(measured)',
      met: null
    },
    {
      bench: 'memory',
      metric: `heapUsed per ${fmt(PER)} sessions`,
      value: mib(perHeap(hub)),
      baseline: `${mib(perHeap(bare))} bare`,
      ratio: `${fmt(perHeap(hub) / perHeap(bare), 2)}×`,
      target: '(measured)',
      met: null
    }
  ])
}

runMain(main)
