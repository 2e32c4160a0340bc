import type { Mutation } from './store.js'

/**
 * A change to live state in two halves: the mutations that make it durable, and `apply`, which
 * installs it in memory. Callers commit the mutations and call `apply` only once they are
 * durable — so memory never shows what the disk would not bring back after a crash.
 */
export interface Plan {
  mutations: Mutation[]
  apply(): void
}

export const EMPTY_PLAN: Plan = { mutations: [], apply: () => undefined }

export function combinePlans(plans: readonly Plan[]): Plan {
  return {
    mutations: plans.flatMap((p) => p.mutations),
    apply: () => {
      for (const p of plans) p.apply()
    }
  }
}
