/**
 * Small helpers shared by the benchmarks: sizes from the environment, percentiles, number
 * formatting, temp dirs, forking TypeScript children, and handing a result to bench/run.ts.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { performance } from 'node:perf_hooks'
import { markingFlags } from '../../src/cli/gc-marking.js'

/** A positive integer (or, with `min` 0, zero too) from the environment, or the default. A bad value stops the bench. */
export function envInt(name: string, fallback: number, min: 0 | 1 = 1): number {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return fallback
  const n = Number(raw)
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`${name} must be a ${min === 0 ? 'non-negative' : 'positive'} whole number, got "${raw}"`)
  return n
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}

/** The p-th percentile (0..100) of `values` by nearest rank; sorts a copy. */
export function percentile(values: Float64Array | number[], p: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = Float64Array.from(values).sort()
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]!
}

export function percentiles(values: Float64Array | number[]): { p50: number; p99: number; max: number } {
  if (values.length === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN }
  const sorted = Float64Array.from(values).sort()
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
  return { p50: at(50), p99: at(99), max: sorted[sorted.length - 1]! }
}

export function median(values: number[]): number {
  return percentile(values, 50)
}

export const nowMs = (): number => performance.now()

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return String(n)
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export const mib = (bytes: number): string => `${fmt(bytes / 1024 / 1024, 1)} MiB`

export function line(text = ''): void {
  process.stdout.write(`${text}\n`)
}

/** One line of the summary table bench/run.ts prints at the end. */
export interface SummaryRow {
  bench: string
  metric: string
  value: string
  baseline: string
  ratio: string
  target: string
  /** true: target met, false: missed, null: no target (informational). */
  met: boolean | null
}

export interface BenchResult {
  type: 'result'
  bench: string
  rows: SummaryRow[]
}

/** Hands the result to bench/run.ts when run from it (over IPC); a no-op when run alone. */
export async function report(bench: string, rows: SummaryRow[]): Promise<void> {
  const send = process.send?.bind(process)
  if (!send) return
  const message: BenchResult = { type: 'result', bench, rows }
  await new Promise<void>((resolve) => send(message, undefined, {}, () => resolve()))
}

/** Runs `main`, prints a failure plainly, and exits (mqtt and IPC handles would keep us alive). */
export function runMain(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
      process.exit(1)
    }
  )
}

/**
 * V8 flags of `npm start` (package.json): a larger young generation, because the hub allocates
 * small records per event that outlive a smaller one's scavenges while their batch commits
 * (bench events, closed loop: 59–69k durable events/s with 32 MiB, 42–44k with 16).
 */
export const HUB_NODE_FLAGS = ['--max-semi-space-size=32']

/**
 * The flags a bench's own process takes to run hubs as `iothub start` runs one once it serves:
 * HUB_NODE_FLAGS and what the command then sets itself on this machine (src/cli/gc-marking.ts:
 * no concurrent marking on two cpus), which hubs made in the bench's process would otherwise miss.
 * A hub started as its own process (hub-process.ts) runs the command, which sets them itself.
 */
export const SERVING_HUB_NODE_FLAGS = [...HUB_NODE_FLAGS, ...markingFlags()]

/** The bench/ folder, for forking sibling scripts. */
export const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url))

/** True when this is the compiled benchmark (`npm run bench`), false when run from source with tsx. */
const COMPILED = import.meta.url.endsWith('.js')

/**
 * Forks a sibling benchmark script (path relative to bench/, named as in the source: `x.ts`)
 * with an IPC channel: the compiled `x.js` under `npm run bench`, which measures the code
 * `npm start` runs, or `x.ts` with tsx when a script is run from source.
 */
export function forkBench(script: string, args: string[] = [], options: { exposeGc?: boolean } = {}): ChildProcess {
  return fork(join(BENCH_DIR, COMPILED ? script.replace(/\.ts$/, '.js') : script), args, {
    // the V8 flags a serving hub runs with, so brokers are measured as deployed
    execArgv: [...(options.exposeGc ? ['--expose-gc'] : []), ...SERVING_HUB_NODE_FLAGS, ...(COMPILED ? [] : ['--import', 'tsx'])],
    stdio: 'inherit'
  })
}

/** Runs global.gc() a few times when the process was started with --expose-gc. */
export async function collectGarbage(): Promise<boolean> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) return false
  for (let i = 0; i < 4; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return true
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` every `everyMs` until it is true; false if `timeoutMs` passes first. */
export async function waitFor(check: () => boolean, timeoutMs: number, everyMs = 2): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) return false
    await sleep(everyMs)
  }
  return true
}
