/**
 * CPU time per thread, from Linux' per-thread counters under /proc: which of the hub's threads —
 * the event loop, or the SQLite store's writer and checkpointer — uses the cpu. Process-wide
 * figures (`process_cpu_seconds_total`) cannot tell a hub whose event loop is saturated from one
 * whose store thread is. A worker says its own id when it starts (store/sqlite/thread-id.ts);
 * the main thread reads the thread's time whenever asked. Elsewhere than Linux the reads answer
 * null, and the hub exports no per-thread figures.
 */
import { readFileSync } from 'node:fs'

/** The kernel's clock ticks per second (USER_HZ), which /proc counts cpu time in: 100 on every Linux platform Node runs on. */
const TICKS_PER_SECOND = 100

/** The main thread's id is the process'. */
export const MAIN_THREAD_ID = process.pid

/** CPU time (user and system) thread `threadId` of this process has used so far, seconds; null when it cannot be read (not Linux, or the thread has ended). */
export function threadCpuSeconds(threadId: number): number | null {
  let stat: string
  try {
    stat = readFileSync(`/proc/self/task/${threadId}/stat`, 'utf8')
  } catch {
    return null
  }
  // after the command, which is in parentheses and may hold spaces: state(0) … utime(11) stime(12)
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  return Number.isFinite(ticks) ? ticks / TICKS_PER_SECOND : null
}
