/**
 * The change log: every committed change of what the hub knows — devices, device properties,
 * sessions, their topics, subscription entities — appended in the transaction that makes it, and
 * numbered in commit order (a reader never sees entry n+1 before entry n, and numbers have no
 * gaps). It is how a replica's caches follow changes made by other replicas, and what the event
 * stream reads. The broker's own state (queued and retained messages, wills, the publish
 * journal) is not in it: only the embedded broker, one process, holds that.
 */
import type { Mutation } from './store.js'

/** The mutations that are changes of what the hub knows, and so logged. */
export type LoggedChange = Extract<
  Mutation,
  {
    op:
      | 'device.put'
      | 'device.delete'
      | 'device.property'
      | 'session.put'
      | 'session.version'
      | 'session.delete'
      | 'topic.put'
      | 'topic.delete'
      | 'topic.clear'
      | 'subscription.put'
      | 'subscription.delete'
      | 'subscription.clear'
  }
>

const LOGGED_OPS = new Set<Mutation['op']>([
  'device.put',
  'device.delete',
  'device.property',
  'session.put',
  'session.version',
  'session.delete',
  'topic.put',
  'topic.delete',
  'topic.clear',
  'subscription.put',
  'subscription.delete',
  'subscription.clear'
])

/**
 * A change of what the hub knows: logged, or carried by its session's entry in the same batch
 * (a `topic.*` marked `carried`). What a batch's later decisions must see of its earlier ones.
 */
export function isChange(m: Mutation): m is LoggedChange {
  return LOGGED_OPS.has(m.op)
}

/**
 * A change written to the change log on its own. A topic change its session's entry carries is
 * not: the log holds it once, and whoever follows the log takes it from that entry
 * (registry/cache-applier.ts).
 */
export function isLogged(m: Mutation): m is LoggedChange {
  return LOGGED_OPS.has(m.op) && !('carried' in m && m.carried === true)
}

export interface LogEntry {
  seq: number
  /** Epoch milliseconds of the commit. */
  at: number
  change: LoggedChange
  /** The run of the replica that committed it (store.ts, `replica`), where the store has several writers. */
  replica?: string
}

/** The logged changes of a batch, in the order the batch makes them. */
export function loggedChanges(mutations: readonly Mutation[]): LoggedChange[] {
  const changes: LoggedChange[] = []
  for (const m of mutations) if (isLogged(m)) changes.push(m)
  return changes
}

/** What a committed batch appended: its entries, numbered `previous + 1` onwards. */
export interface CommittedLog {
  previous: number
  entries: LogEntry[]
}

export interface LogReader {
  /** Entries after `after`, in order, at most `limit`. */
  readLog(after: number, limit: number): Promise<LogEntry[]>
}
