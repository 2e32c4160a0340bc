/**
 * Where V8 marks the old generation. By default a full collection's marking runs concurrently, on
 * V8's helper threads beside the event loop — which suits a machine with cpus to spare. On one of
 * two cpus there are none: the event loop has one, and the store's writer thread, which commits
 * every batch, needs the other, so concurrent marking takes its cpu while batches wait. Bench
 * `events` at 50,000 lifecycle events/s on a 2-cpu VM (2026-12-05): every ~600 ms a major
 * collection's marking ran beside commits of 13–21 ms, and those held the p99 at 11.0–15.6 ms in
 * five runs; with the marking done on the main thread (V8's incremental marking, in steps between
 * the hub's own work) 7.4–8.6 ms in two runs alternated with them, and the same set at run time
 * (as here) 8.2 / 10.1 ms against 15.3 / 18.7 alternated.
 *
 * So on a machine of at most two cpus the command turns concurrent marking off once the hub
 * serves; on more, V8's default stands. Not before: a start that loads a large fleet is one long
 * stretch of allocation, which marking on the main thread lets grow further between collections
 * (bench scale, 1,000,000 sessions on SQLite: peak RSS 2,076.3 MiB with the flag from the process'
 * start, against 1,955.2 MiB without; issue 13's bound is 2 GiB). V8 reads the flag each time a
 * marking cycle begins, so setting it once, after the start, takes effect from then on. A
 * `--concurrent-marking` or `--no-concurrent-marking` the operator gave node (command line or
 * NODE_OPTIONS) wins.
 */
import { availableParallelism } from 'node:os'
import { setFlagsFromString } from 'node:v8'
import { givenToNode, startedWith, type NodeFlags } from './node-flags.js'

/** Most cpus on which the hub marks on its main thread. */
export const FEW_CPUS = 2

/** The V8 flags the command sets for marking on a machine of `cpus`, once the hub serves (the benches' in-process hubs start with them). */
export function markingFlags(cpus: number = availableParallelism()): string[] {
  return cpus <= FEW_CPUS ? ['--no-concurrent-marking'] : []
}

/** Sets markingFlags() unless the operator chose; answers the flags set. */
export function markWhereCpusAllow(
  cpus: number = availableParallelism(),
  node: NodeFlags = startedWith(),
  setFlags: (flags: string) => void = setFlagsFromString
): string[] {
  if (givenToNode('concurrent-marking', node)) return []
  const flags = markingFlags(cpus)
  for (const flag of flags) setFlags(flag)
  return flags
}
