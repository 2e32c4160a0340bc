/**
 * Where a benchmark's cpu went: this process' main thread and store threads, the whole machine, and a V8 cpu
 * profile of this process on demand. Shared by the benchmarks that run a broker in-process.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector/promises'
import { cpus } from 'node:os'
import { join } from 'node:path'
import { PerformanceObserver } from 'node:perf_hooks'
import { MAIN_THREAD_ID, threadCpuSeconds } from '../../src/observability/thread-cpu.js'
import { line } from './util.js'

/** `dir` set: a V8 cpu profile of this process during `work`, written to `dir/file` (the profiler costs ~15%). */
export function profiled<T>(dir: string, file: string, work: () => Promise<T>): Promise<T> {
  return inspected(dir, file, 'cpu profile', work, async (session) => {
    await session.post('Profiler.enable')
    await session.post('Profiler.setSamplingInterval', { interval: 200 })
    await session.post('Profiler.start')
    return async () => (await session.post('Profiler.stop')).profile
  })
}

/**
 * `dir` set: a sampling heap profile of this process during `work`, written to `dir/file` — every
 * allocation sampled (one per 32 KiB on average), the garbage collected meanwhile included, so
 * it tells who allocates, not only who retains.
 */
export function heapProfiled<T>(dir: string, file: string, work: () => Promise<T>): Promise<T> {
  return inspected(dir, file, 'heap profile', work, async (session) => {
    await session.post('HeapProfiler.enable')
    await session.post('HeapProfiler.startSampling', { samplingInterval: 32 * 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
    return async () => (await session.post('HeapProfiler.stopSampling')).profile
  })
}

/** Runs `work` between `start` and the stop it answers, on an inspector session of this process, and writes what the stop returns. */
async function inspected<T>(dir: string, file: string, what: string, work: () => Promise<T>, start: (session: Session) => Promise<() => Promise<unknown>>): Promise<T> {
  if (!dir) return work()
  const session = new Session()
  session.connect()
  const stop = await start(session)
  try {
    return await work()
  } finally {
    const profile = await stop()
    mkdirSync(dir, { recursive: true })
    const path = join(dir, file)
    writeFileSync(path, JSON.stringify(profile))
    line(`  ${what} of this process (the broker's or hub's): ${path}`)
    session.disconnect()
  }
}

/**
 * CPU time of this process' main thread so far, ms, from Linux' per-thread counters (10 ms
 * ticks); null elsewhere. The rest of process.cpuUsage() is other threads: for the hub, its
 * SQLite store's threads (storeThreadsCpuMs), V8's GC helpers and libuv.
 */
export function mainThreadCpuMs(): number | null {
  const seconds = threadCpuSeconds(MAIN_THREAD_ID)
  return seconds === null ? null : seconds * 1000
}

let gcPausesMs = 0
let gcObserver: PerformanceObserver | undefined

/**
 * Time this process' main thread has spent in V8's garbage-collection pauses (scavenges and the
 * main thread's share of mark-compacts), ms, since the first call. V8 reports each pause after it
 * ends, a turn of the event loop later: call `gcPausesSettled()` before reading a total that is
 * to include the last pauses of what was just measured.
 */
export function gcPauseMs(): number {
  if (!gcObserver) {
    gcObserver = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) gcPausesMs += entry.duration
    })
    gcObserver.observe({ entryTypes: ['gc'] })
  }
  for (const entry of gcObserver.takeRecords()) gcPausesMs += entry.duration
  return gcPausesMs
}

/** Resolves once the pauses V8 has made so far are reported to gcPauseMs() (Node hands them over on an immediate). */
export function gcPausesSettled(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/** The main thread's GC pauses over a stretch of time, one by one (see recordGcPauses). */
export interface GcPauses {
  count: number
  totalMs: number
  longestMs: number
  /** How many lasted `atLeastMs` or more. */
  atLeast: number
  atLeastMs: number
}

/**
 * Records each of the main thread's GC pauses from now until `stop()`. A total (gcPauseMs) says
 * what collection costs; a latency target is missed by the single long pause — every event in
 * flight waits it out — so this keeps their lengths: how many reached `atLeastMs`, and the longest.
 */
export function recordGcPauses(atLeastMs: number): { stop(): Promise<GcPauses> } {
  const pauses: GcPauses = { count: 0, totalMs: 0, longestMs: 0, atLeast: 0, atLeastMs }
  const count = (entries: readonly { duration: number }[]) => {
    for (const { duration } of entries) {
      pauses.count++
      pauses.totalMs += duration
      pauses.longestMs = Math.max(pauses.longestMs, duration)
      if (duration >= atLeastMs) pauses.atLeast++
    }
  }
  const observer = new PerformanceObserver((list) => count(list.getEntries()))
  observer.observe({ entryTypes: ['gc'] })
  return {
    async stop() {
      await gcPausesSettled()
      count(observer.takeRecords())
      observer.disconnect()
      return pauses
    }
  }
}

/**
 * CPU time so far of the store threads `threadIds` names (a hub's SQLite writer and checkpointer,
 * a durable floor's writer), ms; null where a thread's cannot be read. A thread that has ended
 * counts nothing: read them while the target runs.
 */
export function storeThreadsCpuMs(threadIds: readonly number[]): number | null {
  return sumOverThreads(threadIds, (id) => {
    const seconds = threadCpuSeconds(id)
    return seconds === null ? null : seconds * 1000
  })
}

/**
 * Time the threads `threadIds` of this process have spent waiting for a cpu so far — runnable,
 * but on the scheduler's run queue — ms, from Linux' per-thread scheduler statistics; null where
 * one cannot be read. On a machine of two cpus the hub's main thread, its store's writer and
 * V8's helpers can want more than there is: a thread's cpu time does not show that wait, and its
 * latency does.
 */
export function runQueueWaitMs(threadIds: readonly number[]): number | null {
  return sumOverThreads(threadIds, threadRunQueueWaitMs)
}

/** One thread's wait for a cpu so far, ms; null where it cannot be read (not Linux, or the thread has ended). */
function threadRunQueueWaitMs(threadId: number): number | null {
  let stat: string
  try {
    stat = readFileSync(`/proc/self/task/${threadId}/schedstat`, 'utf8')
  } catch {
    return null
  }
  // "time on a cpu, time waiting on a run queue (both ns), timeslices run"
  const waitingNs = Number(stat.split(' ')[1])
  return Number.isFinite(waitingNs) ? waitingNs / 1e6 : null
}

/** The sum of `perThread` over `threadIds`; null if any one cannot be read. */
function sumOverThreads(threadIds: readonly number[], perThread: (threadId: number) => number | null): number | null {
  let sum = 0
  for (const id of threadIds) {
    const value = perThread(id)
    if (value === null) return null
    sum += value
  }
  return sum
}

/** Busy and total cpu time of the whole machine so far, ms (the kernel's counters). */
export function machineTimes(): { busy: number; total: number } {
  let busy = 0
  let idle = 0
  for (const c of cpus()) {
    busy += c.times.user + c.times.nice + c.times.sys + c.times.irq
    idle += c.times.idle
  }
  return { busy, total: busy + idle }
}

/** What this process spent while a piece of work ran (`cpuDuring`). */
export interface CpuSpent {
  /** All its threads' cpu, ms. */
  cpuMs: number
  /** Of cpuMs, the main thread's and the store threads' (null off Linux). */
  mainCpuMs: number | null
  storeCpuMs: number | null
  /** Of mainCpuMs, V8's garbage-collection pauses. */
  gcMs: number
  /** The whole machine's busy and total cpu time meanwhile, ms. */
  machineBusyMs: number
  machineMs: number
}

/**
 * Runs `work` and reads what this process spent on it, by thread — the readings every timed
 * round of a bench takes the same way: the GC pauses settled before and after (V8 reports a
 * pause a turn after it ends), the counters read around the work alone.
 */
export async function cpuDuring<T>(storeThreads: readonly number[], work: () => Promise<T>): Promise<{ result: T; spent: CpuSpent }> {
  await gcPausesSettled()
  const gc0 = gcPauseMs()
  const machine0 = machineTimes()
  const cpu0 = process.cpuUsage()
  const main0 = mainThreadCpuMs()
  const store0 = storeThreadsCpuMs(storeThreads)
  const result = await work()
  const cpu = process.cpuUsage(cpu0)
  const main1 = mainThreadCpuMs()
  const store1 = storeThreadsCpuMs(storeThreads)
  const machine1 = machineTimes()
  await gcPausesSettled()
  return {
    result,
    spent: {
      cpuMs: (cpu.user + cpu.system) / 1000,
      mainCpuMs: main0 === null || main1 === null ? null : main1 - main0,
      storeCpuMs: store0 === null || store1 === null ? null : store1 - store0,
      gcMs: gcPauseMs() - gc0,
      machineBusyMs: machine1.busy - machine0.busy,
      machineMs: machine1.total - machine0.total
    }
  }
}
