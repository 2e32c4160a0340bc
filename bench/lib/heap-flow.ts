/**
 * The bytes the main thread allocated in V8's young generation over a stretch of time, read
 * from V8's own statistics at each collection (v8.GCProfiler), not timed.
 *
 * Why beside the latency figures: the events tail is made of collections (docs/perf-journal.md,
 * "what the events tail's episodes are made of"), and a scavenge comes each time the young
 * generation fills, so their number follows the bytes allocated per event. In a closed loop that
 * figure is one of the code, not of the machine's speed: a change meant to leave less garbage
 * shows in it where the VM's swings hide it in a p99. It still varied by a few per cent between
 * runs of one build (V8's allocation-site pretenuring, which puts a site's objects straight into
 * the old generation, is the likely cause), so compare several runs of each build; and in an open
 * loop it includes the driver, whose idle spin between due events allocates more the faster the
 * hub answers.
 *
 * What scavenges promote is not reported: the old generation's use, the only figure V8 gives of
 * it here, also shrinks as its sweeper frees pages, so its growth across a scavenge undercounts.
 */
import { GCProfiler, getHeapSpaceStatistics } from 'node:v8'

export interface HeapFlow {
  /** Bytes allocated in the young generation (what fills it between scavenges). */
  allocatedBytes: number
  /** Scavenges (young-generation collections) that ran. */
  scavenges: number
}

interface SpaceUse {
  spaceName: string
  spaceUsedSize: number
}

interface GcStatistic {
  /** Scavenge, MarkSweepCompact, and callbacks that are no collection (IncrementalMarking, ProcessWeakCallbacks). */
  gcType: string
  beforeGC: { heapSpaceStatistics: SpaceUse[] }
  afterGC: { heapSpaceStatistics: SpaceUse[] }
}

const YOUNG = new Set(['new_space', 'new_large_object_space'])

function youngUse(spaces: readonly SpaceUse[]): number {
  let sum = 0
  for (const s of spaces) if (YOUNG.has(s.spaceName)) sum += s.spaceUsedSize
  return sum
}

function youngNow(): number {
  let sum = 0
  for (const s of getHeapSpaceStatistics()) if (YOUNG.has(s.space_name)) sum += s.space_used_size
  return sum
}

/** Starts counting; `stop()` answers what the young generation took in since. */
export function recordHeapFlow(): { stop(): HeapFlow } {
  const profiler = new GCProfiler()
  const youngAtStart = youngNow()
  profiler.start()
  return {
    stop() {
      const youngAtStop = youngNow()
      const statistics = (profiler.stop()?.statistics ?? []) as GcStatistic[]
      // the young generation only grows between collections (bump allocation): what it grew by
      // from one collection's end to the next one's start is what was allocated meanwhile
      let allocatedBytes = 0
      let scavenges = 0
      let youngAfterLast = youngAtStart
      for (const gc of statistics) {
        allocatedBytes += youngUse(gc.beforeGC.heapSpaceStatistics) - youngAfterLast
        youngAfterLast = youngUse(gc.afterGC.heapSpaceStatistics)
        if (gc.gcType === 'Scavenge') scavenges++
      }
      allocatedBytes += youngAtStop - youngAfterLast
      return { allocatedBytes, scavenges }
    }
  }
}
