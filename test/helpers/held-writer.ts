/**
 * A group-commit writer whose batches wait until the test releases them, for tests that order
 * what group commit does by events (which batch held whom, what was handed over when), never by
 * time. A batch's callers are named by their marker mutation's device id.
 */
import type { BatchItem } from '../../src/store/group-commit.js'
import type { Mutation } from '../../src/store/store.js'

/** `record`, if given, gets `handed over a,b` as each batch reaches the writer. */
export function heldWriter(record?: string[]) {
  const batches: string[][] = []
  const held: { resolve: () => void; reject: (error: Error) => void }[] = []
  return {
    batches,
    /** Lets the oldest batch waiting commit. */
    release(): void {
      held.shift()?.resolve()
    },
    /** Fails the oldest batch waiting, as a store that could not write it. */
    fail(error = new Error('disk full')): void {
      held.shift()?.reject(error)
    },
    get waiting(): number {
      return held.length
    },
    writeBatch(items: readonly BatchItem[]): Promise<void> {
      const ids = items.map((item) => ('mutations' in item ? (item.mutations[0] as { device: { id: string } }).device.id : '?'))
      batches.push(ids)
      record?.push(`handed over ${ids.join(',')}`)
      return new Promise((resolve, reject) => held.push({ resolve, reject }))
    }
  }
}

/** One caller's mutations, named `id`. */
export const marker = (id: string): Mutation[] => [{ op: 'device.put', device: { id } } as unknown as Mutation]

/** Resolves after the event loop has run what is due (the committer hands batches over on setImmediate). */
export const turn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

export async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await turn()
}
