/**
 * `npm run bench`: runs each benchmark in a fresh process (with --expose-gc, so memory readings
 * can be taken after a collection), in sequence, then prints one summary table. Benchmarks
 * measure and report; none fails on a missed target. The exit code is non-zero only when a
 * benchmark could not run.
 *
 *   npm run bench                       all of them
 *   npm run bench -- events memory      only those named (events, events-stream, connect-storm, memory, fanout, exhook, reconcile, coap, noisy-neighbour)
 *
 * Sizes come from BENCH_* environment variables; see bench/README.md.
 */
import { execFileSync } from 'node:child_process'
import { availableParallelism, cpus, tmpdir, totalmem, type CpuInfo } from 'node:os'
import type { BenchResult, SummaryRow } from './lib/util.js'
import { envInt, fmt, forkBench, line, sleep } from './lib/util.js'

interface Bench {
  name: string
  script: string
  /** Sockets one process holds at once (server side in the broker, client side in the child). */
  sockets: number
  /** The variable(s) that set `sockets`, for the message when the open-files limit is too low. */
  size?: string
}

const BENCHES: Bench[] = [
  { name: 'events', script: 'events.ts', sockets: 0 },
  // a hub in process, a webhook receiver and up to BENCH_STREAM_CONSUMERS SSE streams in a child
  { name: 'events-stream', script: 'events-stream.ts', sockets: 0 },
  { name: 'connect-storm', script: 'connect-storm.ts', sockets: envInt('BENCH_CLIENTS', 5_000), size: 'BENCH_CLIENTS' },
  { name: 'memory', script: 'memory.ts', sockets: envInt('BENCH_MEM_CLIENTS', 10_000), size: 'BENCH_MEM_CLIENTS' },
  {
    name: 'fanout',
    script: 'fanout.ts',
    // devices, plus the load generator's HTTP keep-alive sockets (or MQTT publishers, fewer)
    sockets: envInt('BENCH_FANOUT_DEVICES', 10_000) + envInt('BENCH_FANOUT_CONCURRENCY', 200),
    size: 'BENCH_FANOUT_DEVICES / BENCH_FANOUT_CONCURRENCY'
  },
  // EMQX mode: a few gRPC connections (and, for reconcile, the REST stand-in's HTTP sockets)
  { name: 'exhook', script: 'exhook.ts', sockets: 0 },
  { name: 'reconcile', script: 'reconcile.ts', sockets: 0 },
  // EMQX mode on PostgreSQL, two replica processes; needs the PostgreSQL of BENCH_DATABASE_URL
  { name: 'replicas', script: 'replicas.ts', sockets: 0 },
  // hubs as child processes on a store of BENCH_SCALE_SESSIONS (PostgreSQL of BENCH_DATABASE_URL, then SQLite); a few sockets
  { name: 'scale', script: 'scale.ts', sockets: 0 },
  // a few UDP sockets for CoAP; its MQTT reference run holds a TCP socket per device
  { name: 'coap', script: 'coap.ts', sockets: envInt('BENCH_COAP_CLIENTS', 5_000), size: 'BENCH_COAP_CLIENTS' },
  // the abuser holds up to a few thousand idle sockets in its 'connections' abuse
  { name: 'noisy-neighbour', script: 'noisy-neighbour.ts', sockets: 5_000 }
]

/** Descriptors a process needs besides its sockets: listeners, SQLite files, pipes, node itself. */
const FD_MARGIN = 512

function fileDescriptorLimit(): number | null {
  try {
    const raw = execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()
    return raw === 'unlimited' ? Number.POSITIVE_INFINITY : Number(raw)
  } catch {
    return null
  }
}

/** Busy share of all cpus over `ms`, from the kernel's counters: what others run beside us. */
async function machineBusy(ms = 1000): Promise<number> {
  const total = (c: CpuInfo[]) => c.reduce((t, x) => t + x.times.user + x.times.nice + x.times.sys + x.times.irq + x.times.idle, 0)
  const idle = (c: CpuInfo[]) => c.reduce((t, x) => t + x.times.idle, 0)
  const a = cpus()
  await sleep(ms)
  const b = cpus()
  const span = total(b) - total(a)
  return span > 0 ? 1 - (idle(b) - idle(a)) / span : 0
}

/** Benchmarks share the machine's cpus and disk with anything else running: say so when it is. */
async function checkQuiet(what: string): Promise<void> {
  const busy = await machineBusy()
  if (busy > 0.1) {
    line(`WARNING: before ${what}, ${fmt(busy * 100)}% of the cpus were busy with other processes; results will be lower and noisier than on an idle machine.`)
  } else {
    line(`machine idle before ${what} (${fmt(busy * 100)}% busy)`)
  }
}

function runBench(bench: Bench): Promise<{ ok: boolean; seconds: number; rows: SummaryRow[] }> {
  return new Promise((resolve) => {
    const started = Date.now()
    const rows: SummaryRow[] = []
    const child = forkBench(bench.script, [], { exposeGc: true })
    child.on('message', (m: BenchResult) => {
      if (m.type === 'result') rows.push(...m.rows)
    })
    child.once('exit', (code, signal) => {
      if (code !== 0) line(`${bench.name}: FAILED (exit ${code ?? signal})`)
      resolve({ ok: code === 0, seconds: (Date.now() - started) / 1000, rows })
    })
  })
}

function table(rows: SummaryRow[]): void {
  const header: SummaryRow = { bench: 'bench', metric: 'metric', value: 'hub', baseline: 'baseline (same run)', ratio: 'ratio', target: 'target', met: null }
  const status = (r: SummaryRow) => (r === header ? 'status' : r.met === null ? '' : r.met ? 'met' : 'MISSED')
  const cells = (r: SummaryRow) => [r.bench, r.metric, r.value, r.baseline, r.ratio, r.target, status(r)]
  const all = [header, ...rows]
  const widths = cells(header).map((_, i) => Math.max(...all.map((r) => cells(r)[i]!.length)))
  const render = (r: SummaryRow) => cells(r).map((c, i) => c.padEnd(widths[i]!)).join(' | ').trimEnd()
  line(render(header))
  line(widths.map((w) => '-'.repeat(w)).join('-|-'))
  for (const r of rows) line(render(r))
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2)
  const unknown = wanted.filter((w) => !BENCHES.some((b) => b.name === w))
  if (unknown.length > 0) {
    line(`unknown benchmark ${unknown.join(', ')}; there are: ${BENCHES.map((b) => b.name).join(', ')}`)
    process.exit(2)
  }
  const selected = wanted.length > 0 ? BENCHES.filter((b) => wanted.includes(b.name)) : BENCHES
  const fdLimit = fileDescriptorLimit()
  const cpu = cpus()[0]?.model ?? 'unknown cpu'
  line(`machine: ${availableParallelism()} cpus (${cpu}), ${fmt(totalmem() / 2 ** 30, 1)} GiB, ${process.platform} ${process.arch}, node ${process.version}`)
  line(`open files limit (ulimit -n): ${fdLimit ?? 'unknown'}; temp dir ${tmpdir()}`)
  line('')

  const rows: SummaryRow[] = []
  const failed: string[] = []
  for (const bench of selected) {
    const needed = bench.sockets + FD_MARGIN
    if (bench.sockets > 0 && fdLimit !== null && fdLimit < needed) {
      line(
        `${bench.name}: SKIPPED — it holds ${fmt(bench.sockets)} sockets in each of two processes and needs an open-files limit of at least ` +
          `${fmt(needed)}, but \`ulimit -n\` is ${fmt(fdLimit)}. Raise it in the shell that runs the bench (e.g. \`ulimit -n ${needed}\`, ` +
          `up to the hard limit \`ulimit -Hn\`) or lower the size (${bench.size ?? 'see bench/README.md'}).`
      )
      line('')
      failed.push(`${bench.name} (skipped)`)
      continue
    }
    line(`── ${bench.name} ${'─'.repeat(Math.max(0, 90 - bench.name.length))}`)
    await checkQuiet(bench.name)
    const result = await runBench(bench)
    line(`   (${bench.name} took ${fmt(result.seconds, 1)} s)`)
    line('')
    rows.push(...result.rows)
    if (!result.ok) failed.push(bench.name)
  }

  line('summary (measured, not asserted; ratios are against the baseline measured in the same run)')
  table(rows)
  if (failed.length > 0) {
    line(`not completed: ${failed.join(', ')}`)
    process.exit(1)
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
  process.exit(1)
})
