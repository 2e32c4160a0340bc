/**
 * The operating system's id of the calling thread, which this folder's worker threads say to the
 * main thread when they start, so that the hub can report their cpu
 * (observability/thread-cpu.ts). Linux only (/proc/thread-self); null elsewhere.
 */
import { readlinkSync } from 'node:fs'

export function currentThreadId(): number | null {
  try {
    // "<pid>/task/<tid>"
    const tid = Number(readlinkSync('/proc/thread-self').split('/').at(-1))
    return Number.isInteger(tid) && tid > 0 ? tid : null
  } catch {
    return null
  }
}
