/**
 * What the reconcile reads of the stored fleet (ReconcileReads), answered from the registry's
 * caches — for a hub not given the store's FleetReads: the PostgreSQL queries and the caches'
 * own implementation (registry/memory-fleet-reads.ts) are wired by the hub as they land. The
 * caches hold every stored session and topic today, so they answer what the store would.
 *
 * The keyset walk (`sessions`) sorts the ids it walks once, when a walk begins (no `after`), and
 * pages through that order by binary search; each page reads the sessions as the caches hold
 * them then (one ended meanwhile is left out, one that stopped matching the filter too). A
 * session created after the walk began is not seen by it: for the reconcile it changed after
 * the run began, so the run leaves it alone anyway. Ids compare as JavaScript strings (UTF-16
 * code units), consistently within one walk.
 */
import type { Session, SessionRecord } from '../domain/session.js'
import type { SessionRegistry } from '../registry/registry.js'
import type { PageRequest, SessionFilter } from '../store/fleet-reads.js'
import type { ReconcileReads } from './reconcile.js'

export class CacheReconcileReads implements ReconcileReads {
  /** The ids of the walk under way, sorted, and the filter they were chosen by. */
  private walk: { filter: string; ids: string[] } | undefined

  constructor(private readonly registry: SessionRegistry) {}

  session(id: string): Promise<Session | undefined> {
    return Promise.resolve(this.withTopics(this.registry.record(id)))
  }

  sessionsOf(ids: readonly string[]): Promise<Map<string, Session>> {
    const found = new Map<string, Session>()
    for (const id of ids) {
      const session = this.withTopics(this.registry.record(id))
      if (session) found.set(id, session)
    }
    return Promise.resolve(found)
  }

  sessions(filter: SessionFilter, page: PageRequest): Promise<{ sessions: Session[]; more: boolean }> {
    const unsupported = Object.keys(filter).filter((key) => key !== 'connected' && key !== 'node')
    if (unsupported.length > 0 || page.offset !== undefined) {
      return Promise.reject(new Error(`the reconcile's reads from the caches filter by connected and node only, by keyset (asked: ${[...unsupported, ...(page.offset === undefined ? [] : ['offset'])].join(', ')})`))
    }
    const key = JSON.stringify([filter.connected, filter.node])
    if (page.after === undefined || this.walk?.filter !== key) {
      const ids: string[] = []
      for (const s of this.registry.records()) if (matches(s, filter)) ids.push(s.id)
      this.walk = { filter: key, ids: ids.sort() }
    }
    const ids = this.walk.ids
    let next = page.after === undefined ? 0 : firstAfter(ids, page.after)
    const sessions: Session[] = []
    while (next < ids.length && sessions.length < page.limit) {
      const record = this.registry.record(ids[next++]!)
      if (record && matches(record, filter)) sessions.push(this.withTopics(record)!)
    }
    return Promise.resolve({ sessions, more: next < ids.length })
  }

  private withTopics(record: SessionRecord | undefined): Session | undefined {
    return record && { ...record, topics: this.registry.topics.topicsOf(record.id) }
  }
}

function matches(s: SessionRecord, filter: SessionFilter): boolean {
  return (filter.connected === undefined || s.connected === filter.connected) && (filter.node === undefined || s.node === filter.node)
}

/** The index of the first id sorting after `after` (binary search of sorted ids). */
function firstAfter(ids: readonly string[], after: string): number {
  let low = 0
  let high = ids.length
  while (low < high) {
    const mid = (low + high) >>> 1
    if (ids[mid]! <= after) low = mid + 1
    else high = mid
  }
  return low
}
