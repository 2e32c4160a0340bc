/**
 * Where a delivery of events out of the hub (leased-delivery.ts) keeps the last change-log entry
 * it has delivered, so that whoever runs it next — this replica after a restart, another after
 * this one died — resumes there.
 *
 * With replicas sharing a store (PostgreSQL), in the note of the delivery's own lease: the lease
 * row is in the store, every replica reads it when it asks for the lease, and only its holder
 * may write it. With a store that one process writes (SQLite), leases live in that process
 * (coordination.ts, SoleReplica) and die with it: the position is a small file beside the
 * database instead, replaced whole (written aside, then renamed over it) so a crash leaves the
 * old position or the new one, never half of one.
 */
import { readFileSync } from 'node:fs'
import { open, rename } from 'node:fs/promises'
import type { Lease } from '../replicas/lease.js'

export interface DeliveryPosition {
  /** The position saved, as the lease was last seen (call after the lease was taken); null: none yet. */
  saved(): number | null
  /** Records `delivered`; only the lease's holder gets here. */
  save(delivered: number): Promise<void>
}

interface PositionNote {
  delivered: number
}

function deliveredOf(value: unknown): number | null {
  const delivered = (value as Partial<PositionNote> | null | undefined)?.delivered
  return typeof delivered === 'number' && Number.isSafeInteger(delivered) && delivered >= 0 ? delivered : null
}

/** The position in the lease's note (a store whose leases are shared rows). */
export function leaseNotePosition(lease: Lease): DeliveryPosition {
  return {
    saved: () => deliveredOf(lease.seen?.note),
    save: (delivered) => lease.done(Date.now(), { delivered } satisfies PositionNote)
  }
}

/** The position in the file `path` (a store with one writer, whose leases die with it). */
export function filePosition(path: string): DeliveryPosition {
  let known: number | null = null
  try {
    known = deliveredOf(JSON.parse(readFileSync(path, 'utf8')))
  } catch {
    // no file yet (or an unreadable one): no position saved
  }
  return {
    saved: () => known,
    async save(delivered) {
      const aside = `${path}.tmp`
      const file = await open(aside, 'w')
      try {
        await file.writeFile(JSON.stringify({ delivered } satisfies PositionNote))
        await file.sync()
      } finally {
        await file.close()
      }
      await rename(aside, path)
      known = delivered
    }
  }
}
