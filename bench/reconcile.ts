/**
 * Reconcile: a hub in EMQX mode brought up to date with an EMQX that holds BENCH_RECONCILE_CLIENTS
 * connected clients it never heard of, each subscribed to its attributes — by one
 * `POST /v1/reconcile`, which pages through EMQX's REST API (clients, then subscriptions) and
 * records every session and topic it finds. Meanwhile a steady stream of ExHook calls (other
 * clients connecting and disconnecting, BENCH_RECONCILE_RATE calls/s) measures how the event
 * path is answered during the reconcile, against the same stream without one, in the same run.
 *
 *   EMQX REST stand-in (v5, child process) ◀─ GET /api/v5/clients, /subscriptions, 1,000 a page ─ hub
 *   ExHook callers (child process) ─ client.connected / client.disconnected, open loop ─▶ hub
 *
 * The hub (SQLite store, synchronous = FULL) runs in this process and starts empty: its start
 * reconcile finds nothing. The stand-in (test/helpers/emqx-rest-standin.ts) is then given the
 * clients (clientid = username = `rc-{i}`, mountpoint `rc-{i}/`, connected) and one subscription
 * each (`rc-{i}/v1/devices/me/attributes`, QoS 1), and the reconcile is run by the API. The
 * stand-in and the callers each run in a child process (bench/lib/exhook-fleet.ts), so neither
 * is charged to the hub; on a 2-cpu machine they still share its cpus.
 *
 * The call stream is an open loop: call i is due at start + i / rate, and its latency counts
 * from then (a client's disconnect, as EMQX calls one client's hooks in turn, waits for its
 * connect's answer and counts from that answer). Three windows, each a fresh set of clients:
 * *before* (BENCH_RECONCILE_BASELINE_SECONDS, the hub empty: the baseline), *during* (from just
 * before the POST to its answer), *after* (as long as before, the hub holding the reconciled
 * sessions). An untimed warm-up stream comes first.
 *
 *   BENCH_RECONCILE_CLIENTS           clients (and subscriptions) EMQX holds        (default 100,000)
 *   BENCH_RECONCILE_RATE              ExHook calls per second of the stream          (default 2,000)
 *   BENCH_RECONCILE_BASELINE_SECONDS  length of the before and after windows, s      (default 5)
 *   BENCH_RECONCILE_WARMUP_SECONDS    untimed stream first, s                        (default 2)
 *   BENCH_EXHOOK_CHANNELS             gRPC connections the stream is spread over     (default 4)
 *   BENCH_STORE_SYNC                  the hub's store sync, full or normal           (default full)
 *
 * Checked: the reconcile's report (no error; EMQX's clients and subscriptions all listed; every
 * client added as a session with its topic; the pages the listing needs), the hub holding
 * exactly those sessions afterwards, each with its one topic, and every call of the stream
 * answered OK.
 *
 * Diagnosis only: BENCH_RECONCILE_CPU_PROFILE=<dir> writes a V8 cpu profile of the hub's process
 * during the reconcile; BENCH_EXHOOK_TRANSPORT=grpc-js sends the stream through @grpc/grpc-js.
 */
import { performance } from 'node:perf_hooks'
import type { EmqxCarrier } from '../src/emqx/emqx-carrier.js'
import type { ReconcileReport } from '../src/emqx/reconcile.js'
import {
  benchExhookTransport,
  ExhookFleet,
  StandinProcess,
  startEmqxHub,
  type EmqxHub,
  type StreamReport
} from './lib/exhook-fleet.js'
import { machineTimes, mainThreadCpuMs, profiled } from './lib/process-cpu.js'
import { benchStoreSync, commitTotals, type CommitTotals } from './lib/targets.js'
import { envInt, fmt, line, report, runMain, sleep } from './lib/util.js'

const CLIENTS = envInt('BENCH_RECONCILE_CLIENTS', 100_000)
const RATE = envInt('BENCH_RECONCILE_RATE', 2_000)
const BASELINE_SECONDS = envInt('BENCH_RECONCILE_BASELINE_SECONDS', 5)
const WARMUP_SECONDS = envInt('BENCH_RECONCILE_WARMUP_SECONDS', 2)
const CHANNELS = envInt('BENCH_EXHOOK_CHANNELS', 4)
const TRANSPORT = benchExhookTransport()
const PROFILE_DIR = process.env.BENCH_RECONCILE_CPU_PROFILE ?? ''
/** The hub's API credentials: its defaults (config.ts). */
const API_AUTH = `Basic ${Buffer.from('admin:public').toString('base64')}`
/** Share of the machine's cpu used by other processes during a window above which it is flagged. */
const OTHERS_WARNING = 0.1

interface Window {
  label: string
  stream: StreamReport
  /** The hub's process during the window: cpu (all threads), main thread, event loop busy share. */
  hubCpuMs: number
  hubMainCpuMs: number | null
  hubElu: number
  commits: CommitTotals | null
  wallMs: number
  othersCpuMs: number
  machineMs: number
}

/** Runs the call stream (prefix `label`) while `during` runs; the hub's cpu and commits are measured over it. */
async function measureWindow<T>(
  fleet: ExhookFleet,
  target: EmqxHub,
  label: string,
  during: () => Promise<T>,
  options: { otherCpuMs?: () => Promise<number>; splitAt?: () => number | undefined } = {}
): Promise<{ w: Window; result: T }> {
  const otherCpuMs = options.otherCpuMs ?? (async () => 0)
  const hub = target.hub
  const commits0 = await commitTotals(hub)
  const other0 = await otherCpuMs()
  const machine0 = machineTimes()
  const cpu0 = process.cpuUsage()
  const main0 = mainThreadCpuMs()
  const elu0 = performance.eventLoopUtilization()
  const t0 = performance.now()
  await fleet.streamStart({ prefix: label, rate: RATE })
  const result = await during()
  const stream = await fleet.streamStop(options.splitAt?.())
  const wallMs = performance.now() - t0
  const hubElu = performance.eventLoopUtilization(elu0).utilization
  const cpu = process.cpuUsage(cpu0)
  const hubCpuMs = (cpu.user + cpu.system) / 1000
  const main1 = mainThreadCpuMs()
  const machine1 = machineTimes()
  const other = (await otherCpuMs()) - other0
  const commits1 = await commitTotals(hub)
  const commits =
    commits0 && commits1
      ? { transactions: commits1.transactions - commits0.transactions, commits: commits1.commits - commits0.commits, seconds: commits1.seconds - commits0.seconds }
      : null
  return {
    w: {
      label,
      stream,
      hubCpuMs,
      hubMainCpuMs: main0 === null || main1 === null ? null : main1 - main0,
      hubElu,
      commits,
      wallMs,
      othersCpuMs: Math.max(0, machine1.busy - machine0.busy - hubCpuMs - stream.cpuMs - other),
      machineMs: machine1.total - machine0.total
    },
    result
  }
}

const PAD = ''.padEnd(10)

function printWindow(w: Window): void {
  const s = w.stream
  line(
    `  ${w.label.padEnd(8)}  ${fmt(s.calls).padStart(6)} calls in ${fmt(s.wallMs).padStart(6)} ms (${fmt((s.calls / s.wallMs) * 1000)}/s, ${fmt(s.rate)}/s offered)` +
      `   latency p50/p99/max ${fmt(s.latency.p50, 2)}/${fmt(s.latency.p99, 2)}/${fmt(s.latency.max, 1)} ms   callers' send lag p99 ${fmt(s.sendLag.p99, 2)} ms`
  )
  line(
    `  ${PAD}hub: cpu ${fmt(w.hubCpuMs)} ms${w.hubMainCpuMs === null ? '' : ` (main thread ${fmt(w.hubMainCpuMs)} ms)`} in ${fmt(w.wallMs)} ms, event loop ${fmt(w.hubElu * 100)}% busy;` +
      `  callers: cpu ${fmt(s.cpuMs)} ms, event loop ${fmt(s.elu * 100)}% busy` +
      (w.commits
        ? `;  store: ${fmt(w.commits.transactions)} transactions × ${fmt(w.commits.commits / Math.max(1, w.commits.transactions), 1)} events, ` +
          `${fmt((w.commits.seconds * 1000) / Math.max(1, w.commits.transactions), 2)} ms each`
        : '')
  )
  line(`  ${PAD}check: ${s.failed === 0 ? `${fmt(s.ok)}/${fmt(s.calls)} calls OK` : `MISMATCH: ${fmt(s.failed)} calls not answered OK (${Object.entries(s.byCode).map(([c, k]) => `${c} ${fmt(k)}`).join(', ')}): ${s.errors.join('; ')}`}`)
  const others = w.othersCpuMs / Math.max(1, w.machineMs)
  if (others > OTHERS_WARNING) line(`  ${PAD}WARNING: other processes used ${fmt(w.othersCpuMs)} ms of cpu (${fmt(others * 100)}% of the machine) during this window: its figures are not clean`)
}

/** What is wrong with the reconcile's outcome: nothing, or what the check found. */
function reconcileFaults(r: ReconcileReport, last: unknown, target: EmqxHub, pageSize: number): string[] {
  const found: string[] = []
  const pages = 2 * Math.max(1, Math.ceil(CLIENTS / pageSize))
  if (r.error !== null) found.push(`error: ${r.error}`)
  if (r.brokerClients !== CLIENTS) found.push(`listed ${fmt(r.brokerClients)} of ${fmt(CLIENTS)} clients`)
  if (r.brokerSubscriptions !== CLIENTS) found.push(`listed ${fmt(r.brokerSubscriptions)} of ${fmt(CLIENTS)} subscriptions`)
  if (r.sessionsAdded !== CLIENTS) found.push(`added ${fmt(r.sessionsAdded)} of ${fmt(CLIENTS)} sessions`)
  if (r.topicsAdded !== CLIENTS) found.push(`added ${fmt(r.topicsAdded)} of ${fmt(CLIENTS)} topics`)
  if (r.pages !== pages) found.push(`read ${r.pages} pages, ${pages} expected`)
  if (r.topicsRemoved + r.offlineEnded > 0) found.push(`removed ${r.topicsRemoved} topics and ended ${r.offlineEnded} offline sessions`)
  if (JSON.stringify(last) !== JSON.stringify(r)) found.push('GET /v1/reconcile/last is not the report POST answered')
  const registry = target.hub.registry
  let held = 0
  for (let i = 0; i < CLIENTS; i++) {
    const id = `rc-${i}`
    const s = registry.record(id)
    if (s?.connected && registry.topics.countOf(id) === 1 && registry.topics.topicsOf(id)[0]?.topic === `${id}/v1/devices/me/attributes`) held++
  }
  if (held !== CLIENTS) found.push(`${fmt(CLIENTS - held)} clients without their connected session and its one topic`)
  if (registry.size !== CLIENTS) found.push(`the hub holds ${fmt(registry.size)} sessions, ${fmt(CLIENTS)} expected (the stream's clients all left)`)
  return found
}

async function api<T>(httpUrl: string, method: 'GET' | 'POST', path: string): Promise<T> {
  const response = await fetch(`${httpUrl}${path}`, { method, headers: { authorization: API_AUTH } })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`${method} ${path} answered ${response.status}: ${text.slice(0, 300)}`)
  return JSON.parse(text) as T
}

async function main(): Promise<void> {
  const sync = benchStoreSync()
  line(`reconcile: POST /v1/reconcile of a hub in EMQX mode (empty, store synchronous = ${sync.toUpperCase()}${sync === 'full' ? '' : ': NOT the default, for diagnosis'}) against an EMQX 5 REST stand-in holding`)
  line(`  ${fmt(CLIENTS)} connected clients with one subscription each; meanwhile ExHook client.connected/disconnected of other clients at ${fmt(RATE)} calls/s (open loop,`)
  line(
    `  ${CHANNELS} gRPC connection(s), ${TRANSPORT === 'http2' ? 'node:http2' : '@grpc/grpc-js'}); stand-in and callers in child processes; windows: ${WARMUP_SECONDS} s warm-up (untimed),` +
      ` ${BASELINE_SECONDS} s before, the reconcile, ${BASELINE_SECONDS} s after`
  )
  const standin = await StandinProcess.start()
  const fleet = await ExhookFleet.start()
  let target: EmqxHub | undefined
  try {
    target = await startEmqxHub(standin.url)
    const t = target
    const rest = (t.hub.carrier as EmqxCarrier).rest
    await fleet.open({ address: t.exhookAddress, version: 'v2', channels: CHANNELS, transport: TRANSPORT })
    line(`  hub ready (ExHook on ${t.exhookAddress}, API on ${t.httpUrl}); its start reconcile found ${fmt(t.hub.registry.size)} sessions`)

    const warm = await measureWindow(fleet, t, 'warm-up', () => sleep(WARMUP_SECONDS * 1000))
    printWindow(warm.w)
    const before = await measureWindow(fleet, t, 'before', () => sleep(BASELINE_SECONDS * 1000))
    printWindow(before.w)

    const filled = await standin.fill('rc', CLIENTS)
    line(`  stand-in given ${fmt(filled.clients)} clients and ${fmt(filled.subscriptions)} subscriptions in ${fmt(filled.ms)} ms (untimed)`)
    const standinCpu = async () => (await standin.stats()).cpuMs
    const standinBefore = await standin.stats()

    let lastPageAt = 0
    let reconcileMs = 0
    let listingEnd: number | undefined
    const during = await measureWindow(
      fleet,
      t,
      'during',
      () =>
        profiled(PROFILE_DIR, 'reconcile.cpuprofile', async () => {
          // when the last page arrived: the listing's end, the fixes' start (polled, ±5 ms)
          let pages = rest.pagesRead
          const started = performance.now()
          const poll = setInterval(() => {
            if (rest.pagesRead !== pages) {
              pages = rest.pagesRead
              lastPageAt = performance.now() - started
              listingEnd = performance.timeOrigin + performance.now()
            }
          }, 5)
          try {
            const r = await api<ReconcileReport>(t.httpUrl, 'POST', '/v1/reconcile')
            reconcileMs = performance.now() - started
            return r
          } finally {
            clearInterval(poll)
          }
        }),
      { otherCpuMs: standinCpu, splitAt: () => listingEnd }
    )
    const r = during.result
    const standinAfter = await standin.stats()
    printWindow(during.w)
    const split = during.w.stream.split
    if (split) {
      const part = (name: string, x: typeof split.before) => `${name} ${fmt(x.calls)} calls p50/p99/max ${fmt(x.p50, 2)}/${fmt(x.p99, 2)}/${fmt(x.max, 1)} ms`
      line(`  ${PAD}calls due while it listed EMQX's pages: ${part('', split.before).trim()};  while it applied the fixes: ${part('', split.after).trim()}`)
    }
    line(
      `  reconcile: POST /v1/reconcile answered in ${fmt(reconcileMs)} ms (report: durationMs ${fmt(r.durationMs)}, pages ${r.pages}, brokerClients ${fmt(r.brokerClients)},` +
        ` brokerSubscriptions ${fmt(r.brokerSubscriptions)}, sessionsAdded ${fmt(r.sessionsAdded)}, topicsAdded ${fmt(r.topicsAdded)}, ghostsEnded ${fmt(r.ghostsEnded)},` +
        ` skippedChanged ${fmt(r.skippedChanged)}, error ${r.error ?? 'none'})`
    )
    line(
      `  ${PAD}listing (${r.pages} pages of ${fmt(rest.pageSize)}) until ~${fmt(lastPageAt)} ms, then the fixes ~${fmt(reconcileMs - lastPageAt)} ms:` +
        ` ${fmt(((r.sessionsAdded + r.topicsAdded) / Math.max(1, reconcileMs - lastPageAt)) * 1000)} events/s;` +
        ` stand-in: ${fmt(standinAfter.requests - standinBefore.requests)} requests, cpu ${fmt(standinAfter.cpuMs - standinBefore.cpuMs)} ms`
    )
    const last = await api<ReconcileReport>(t.httpUrl, 'GET', '/v1/reconcile/last')

    const after = await measureWindow(fleet, t, 'after', () => sleep(BASELINE_SECONDS * 1000))
    printWindow(after.w)

    const found = reconcileFaults(r, last, t, rest.pageSize)
    const streams = [warm.w, before.w, during.w, after.w]
    const failedCalls = streams.reduce((n, w) => n + w.stream.failed, 0)
    if (failedCalls > 0) found.push(`${fmt(failedCalls)} ExHook calls not answered OK`)
    const exact = found.length === 0
    line(
      `  check: ${exact ? `the report adds every client and topic EMQX holds, the hub holds exactly those ${fmt(CLIENTS)} sessions with their topic, GET /v1/reconcile/last is the report, every ExHook call answered OK` : `MISMATCH: ${found.join('; ')}`}`
    )
    const p99 = (w: Window) => w.stream.latency.p99
    const ratio = p99(during.w) / p99(before.w)
    line(
      `  ExHook calls at ${fmt(RATE)}/s: p99 ${fmt(p99(during.w), 2)} ms during the reconcile, ${fmt(p99(before.w), 2)} ms before (hub empty), ${fmt(p99(after.w), 2)} ms after` +
        ` (${fmt(CLIENTS)} sessions held); during/before ${fmt(ratio, 1)}×`
    )

    const pn = (w: Window) => `${fmt(w.stream.latency.p50, 1)} / ${fmt(w.stream.latency.p99, 1)} ms`
    await report('reconcile', [
      {
        bench: 'reconcile',
        metric: `POST /v1/reconcile, ${fmt(CLIENTS)} clients + topics added`,
        value: `${fmt(reconcileMs / 1000, 1)} s, ${r.pages} pages`,
        baseline: '',
        ratio: '',
        target: '',
        met: null
      },
      {
        bench: 'reconcile',
        metric: `ExHook p50 / p99 during it, ${fmt(RATE)} calls/s`,
        value: pn(during.w),
        baseline: `${pn(before.w)} (no reconcile)`,
        ratio: `${fmt(ratio, 1)}× (p99)`,
        target: '',
        met: null
      },
      {
        bench: 'reconcile',
        metric: 'report, sessions held, calls OK',
        value: exact ? 'exact' : `${found.length} faults`,
        baseline: '',
        ratio: '',
        target: 'exact',
        met: exact
      }
    ])
  } finally {
    await fleet.stop()
    await target?.stop()
    await standin.stop()
  }
}

runMain(main)
