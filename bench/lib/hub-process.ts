/**
 * A hub as its own process, started as `npm start` starts one: `node --max-semi-space-size=32
 * dist-bench/src/main.js` under `npm run bench` (the compiled code), `--import tsx src/main.ts`
 * when a script runs from source — configured by IOTHUB_* variables alone. The command sets what
 * else it sets itself (src/cli/gc-marking.ts), as under `npm start`.
 *
 * Made for starts that may fail: `start()` never throws for the hub's sake. It resolves when
 * /readyz answers 200, or with why not — the process exited (its code or signal, and the line of
 * its stderr that says why, e.g. V8's "JavaScript heap out of memory"), or the deadline passed
 * (it is then killed). Meanwhile the process' resident memory is sampled from /proc, so a
 * failure still reports the last and the peak RSS. Its JSON log lines are read as they come:
 * the start's milestones (store loaded, started, reconciled) are timed from them, and warnings
 * and errors kept.
 *
 * Every process started here is SIGKILLed when this one exits, whatever happened.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { appendFileSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { BENCH_DIR, HUB_NODE_FLAGS, sleep } from './util.js'

/** True when this is the compiled benchmark (`npm run bench`), false when run from source with tsx. */
const COMPILED = import.meta.url.endsWith('.js')
/** The repository's root: the hub's working directory, where tsx and node_modules are found. */
const ROOT = COMPILED ? join(BENCH_DIR, '..', '..') : join(BENCH_DIR, '..')
const MAIN = join(BENCH_DIR, '..', 'src', COMPILED ? 'main.js' : 'main.ts')

/** How often resident memory is read, and /readyz asked once the API listens. */
const SAMPLE_MS = 100
const READY_POLL_MS = 50
/** How long a hub asked to stop (SIGTERM) may take before it is killed. */
const STOP_GRACE_MS = 60_000

const live = new Set<ChildProcess>()
let exitHookInstalled = false

export interface Memory {
  /** VmRSS, bytes. */
  rss: number
  /** VmHWM: the peak resident set so far, bytes. */
  peak: number
}

export interface LogEntry {
  level?: number
  time?: number
  msg?: string
  [key: string]: unknown
}

export type StartOutcome =
  | { ready: true; ms: number; memory: Memory }
  | { ready: false; ms: number; why: string; /** The same in a few words, for a summary table. */ short: string; memory: Memory }

/** Reads VmRSS and VmHWM of `pid`; null once the process is gone. */
export function memoryOf(pid: number): Memory | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kib = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
    const rss = kib('VmRSS')
    return Number.isFinite(rss) ? { rss, peak: kib('VmHWM') } : null
  } catch {
    return null
  }
}

/** CPU (user + system, all threads) `pid` used so far, ms; null once it is gone. */
export function cpuMsOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // after the command: state(0) … utime(11) stime(12), in clock ticks (100 per second on Linux)
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100
  } catch {
    return null
  }
}

export class HubProcess {
  readonly pid: number
  /** The API's base URL, once "iothub started" named it. */
  httpUrl: string | undefined
  /** host:port of the ExHook server (EMQX mode), once named. */
  exhookAddress: string | undefined
  /** When the process was spawned (Date.now()). */
  readonly spawnedAt: number
  /** The last reading of its memory (kept after it exits). */
  memory: Memory = { rss: 0, peak: 0 }
  /** How it exited, once it has. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined
  /** Log lines of level warn or above. */
  readonly complaints: LogEntry[] = []
  private readonly milestones = new Map<string, LogEntry>()
  private readonly exited: Promise<void>
  private stderrTail = ''
  private readonly sampler: NodeJS.Timeout

  private constructor(
    private readonly child: ChildProcess,
    /** Log messages whose first occurrence is kept (with its time). */
    private readonly watched: readonly string[]
  ) {
    this.pid = child.pid!
    this.spawnedAt = Date.now()
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        live.delete(child)
        clearInterval(this.sampler)
        this.exit = { code, signal }
        resolve()
      })
    )
    this.sampler = setInterval(() => this.sample(), SAMPLE_MS)
    let partial = ''
    // BENCH_HUB_STDOUT, for diagnosis only: every line the hub writes to stdout (V8's --trace-gc*
    // lines too, which are not log entries) appended to this file, each after the time it came
    const tee = process.env.BENCH_HUB_STDOUT
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk
      const lines = partial.split('\n')
      partial = lines.pop() ?? ''
      for (const line of lines) this.logged(line)
      if (tee) appendFileSync(tee, lines.map((line) => `${Date.now()} ${this.pid} ${line}\n`).join(''))
    })
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-16 * 1024)
    })
  }

  /** Spawns the hub with these IOTHUB_* settings (the caller's own IOTHUB_* are not passed on). */
  static spawn(settings: Record<string, string>, watched: readonly string[] = []): HubProcess {
    if (!exitHookInstalled) {
      exitHookInstalled = true
      process.once('exit', () => {
        for (const child of live) child.kill('SIGKILL')
      })
    }
    const env: NodeJS.ProcessEnv = {}
    for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('IOTHUB_')) env[key] = value
    Object.assign(env, settings)
    // BENCH_HUB_NODE_FLAGS, for diagnosis only: e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` (a cpu
    // profile of each hub, written when it stops; node refuses these in NODE_OPTIONS)
    const diagnosis = (process.env.BENCH_HUB_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== '')
    const args = [...HUB_NODE_FLAGS, ...diagnosis, ...(COMPILED ? [] : ['--import', 'tsx']), MAIN]
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(child)
    return new HubProcess(child, ['store loaded', 'iothub started', ...watched])
  }

  /** The first log entry with this message, if it came. */
  milestone(msg: string): LogEntry | undefined {
    return this.milestones.get(msg)
  }

  /** Ms from the spawn to the first log entry with this message (by the entry's own time). */
  msTo(msg: string): number | undefined {
    const time = this.milestones.get(msg)?.time
    return time === undefined ? undefined : time - this.spawnedAt
  }

  /**
   * Waits until /readyz answers 200, the process exits, or `deadlineMs` from the spawn passes
   * (then the process is killed). `authorization` is the API's.
   */
  async ready(deadlineMs: number): Promise<StartOutcome> {
    const deadline = this.spawnedAt + deadlineMs
    let lastAnswer = 'the API was not listening yet'
    while (Date.now() < deadline) {
      if (this.exit) {
        const oom = /heap out of memory/i.test(this.stderrTail) ? ', JavaScript heap out of memory' : ''
        const after = `${Math.round((Date.now() - this.spawnedAt) / 1000)} s`
        return this.failed(`exited with ${this.exitText()} before it was ready${this.stderrReason()}`, `exited after ${after} (${this.exitText()}${oom})`)
      }
      if (this.httpUrl) {
        try {
          const response = await fetch(`${this.httpUrl}/readyz`, { signal: AbortSignal.timeout(Math.max(1, Math.min(5_000, deadline - Date.now()))) })
          const body = await response.text()
          if (response.status === 200) {
            this.sample()
            return { ready: true, ms: Date.now() - this.spawnedAt, memory: { ...this.memory } }
          }
          lastAnswer = `/readyz answered ${response.status}: ${body.slice(0, 300)}`
        } catch (error) {
          lastAnswer = `/readyz not answered: ${(error as Error).message}`
        }
      }
      await sleep(READY_POLL_MS)
    }
    const memory = { ...this.memory }
    await this.kill()
    const after = `not ready after ${Math.round(deadlineMs / 1000)} s`
    return { ready: false, ms: Date.now() - this.spawnedAt, why: `${after} (${lastAnswer}); killed`, short: `${after}, killed`, memory }
  }

  /** Asks the hub to stop (SIGTERM, as a deployment does) and waits; kills it after a grace period. */
  async stop(): Promise<{ ms: number; clean: boolean }> {
    const started = Date.now()
    if (!this.exit) {
      this.child.kill('SIGTERM')
      const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS)
      await this.exited
      clearTimeout(timer)
    }
    return { ms: Date.now() - started, clean: this.exit?.code === 0 }
  }

  /** SIGKILL, and waits for the exit. */
  async kill(): Promise<void> {
    if (!this.exit) this.child.kill('SIGKILL')
    await this.exited
  }

  exitText(): string {
    if (!this.exit) return 'still running'
    return this.exit.signal ? `signal ${this.exit.signal}` : `exit code ${this.exit.code}`
  }

  private failed(why: string, short: string): StartOutcome {
    return { ready: false, ms: Date.now() - this.spawnedAt, why, short, memory: { ...this.memory } }
  }

  /** The line of stderr that says why it died (V8's fatal error, or the last line), for the report. */
  private stderrReason(): string {
    const lines = this.stderrTail.split('\n').map((l) => l.trim()).filter(Boolean)
    const fatal = lines.find((l) => /out of memory|FATAL ERROR|Error:/i.test(l)) ?? lines.at(-1)
    return fatal ? `: "${fatal.slice(0, 300)}"` : ''
  }

  private sample(): void {
    const m = memoryOf(this.pid)
    if (m) this.memory = m
  }

  private logged(line: string): void {
    let entry: LogEntry
    try {
      entry = JSON.parse(line) as LogEntry
    } catch {
      return // not a log line
    }
    const msg = typeof entry.msg === 'string' ? entry.msg : ''
    if (this.watched.includes(msg) && !this.milestones.has(msg)) this.milestones.set(msg, entry)
    if (msg === 'iothub started') {
      if (typeof entry.http === 'string') this.httpUrl = `http://${entry.http}`
      if (typeof entry.exhook === 'string') this.exhookAddress = entry.exhook
    }
    if ((entry.level ?? 0) >= 40 && this.complaints.length < 50) this.complaints.push(entry)
  }
}
