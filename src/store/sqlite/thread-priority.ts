/**
 * The store's threads give way to the main thread when every cpu is busy.
 *
 * Group commit hands the writer thread a batch, and the kernel wakes the writer. A thread that
 * has slept is favoured by Linux' scheduler: on a machine with few cpus, all of them busy, it
 * takes the cpu of the thread that woke it — the main thread, which serves every socket — and
 * that waits while the writer runs its transaction. Measured in a connect storm on a 2-cpu VM:
 * ~1,000 hand-overs per 5,000 clients, the main thread losing its cpu in most of them, 200–340 ms
 * of its time per storm spent inside `postMessage` waiting to run again (docs/perf-journal.md,
 * "the store's threads give way").
 *
 * The writer's work is not the more urgent of the two: a batch that waits grows, and one
 * transaction then answers more callers. So the store's threads run at a lower priority than the
 * main thread — a nice value `STORE_THREAD_NICENESS` above it. That weighs them about a third of
 * the main thread where the two share a cpu; it never stops them (the scheduler gives every
 * runnable thread its share), and where a cpu is idle nothing changes.
 *
 * Linux only: there a nice value is per thread, and `os.setPriority` without a pid sets the
 * calling thread's. Elsewhere the same call would lower the whole process, so nothing is done.
 */
import { getPriority, setPriority } from 'node:os'

/** How much higher the store threads' nice value is than the main thread's (nice 0 weighs 1024, nice 5 335). */
export const STORE_THREAD_NICENESS = 5

/** The highest nice value there is: the lowest priority. */
const LOWEST_PRIORITY = 19

/**
 * Lowers the calling thread's priority by `STORE_THREAD_NICENESS` below the one it started
 * with (a thread starts with its creator's). Nothing off Linux, or where the system refuses.
 */
export function yieldToMainThread(): void {
  if (process.platform !== 'linux') return
  try {
    setPriority(Math.min(LOWEST_PRIORITY, getPriority() + STORE_THREAD_NICENESS))
  } catch {
    // a container's seccomp profile may refuse setpriority: the store works the same, only
    // without giving way
  }
}
