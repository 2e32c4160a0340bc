/**
 * How far V8 lets the old generation grow past what its last full collection left alive. By
 * default the limit is up to 4× the live heap, which suits a process whose live heap tracks its
 * work. An EMQX-mode replica on PostgreSQL is the other kind: it holds bounded caches, and what
 * grows is transient — a reconcile with EMQX keeps every listed client of a run (~200 MB live at
 * 1,000,000), then lets all of it go. With the default, such a run left ~770 MB of dead objects in
 * the old generation, which no full collection came to reclaim for as long as the replica then
 * allocated little: resident memory ~820 MiB for ~35 MB alive, and every scavenge 6–9 ms instead
 * of 2–3 ms while the old generation stayed that large (the list APIs' tail). Bounding the growth
 * to half of what is live (bench scale, 1,000,000 sessions: peak RSS 821.7 → 443.5–444.6 MiB in
 * three runs, the start reconcile as long as before, 37–45 s) costs more, smaller full
 * collections, mostly marked concurrently.
 *
 * Where one process holds the whole fleet (the embedded broker, SQLite), the live heap is the
 * fleet itself and V8's default stands: bounding it would only repeat full collections of it.
 *
 * The flag is read each time V8 sets the next limit (after every full collection), so setting it
 * once at start, before the store is opened, takes effect for the whole run. A
 * `--heap-growing-percent` given to node by the operator (command line or NODE_OPTIONS) wins.
 */
import { setFlagsFromString } from 'node:v8'
import type { HubConfig } from '../config.js'
import { givenToNode, startedWith, type NodeFlags } from './node-flags.js'

/** The old generation may grow to 1.5× what the last full collection left alive. */
export const BOUNDED_HEAP_GROWING_PERCENT = 50

const FLAG = '--heap-growing-percent'

/** Sets the bound where the hub's memory is a cache; answers the percent set, or null. */
export function boundHeapGrowth(
  config: Pick<HubConfig, 'broker' | 'store'>,
  node: NodeFlags = startedWith(),
  setFlags: (flags: string) => void = setFlagsFromString
): number | null {
  if (config.broker !== 'emqx' || config.store !== 'postgres') return null
  if (givenToNode(FLAG, node)) return null
  setFlags(`${FLAG}=${BOUNDED_HEAP_GROWING_PERCENT}`)
  return BOUNDED_HEAP_GROWING_PERCENT
}
