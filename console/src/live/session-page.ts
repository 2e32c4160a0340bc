/**
 * One page of `GET /v1/sessions`, kept current from the event stream without asking the hub
 * again: each session event carries the session as it now is, so a row on the page is replaced
 * (or dropped when it no longer matches the filters, or ended), and a session new to the page
 * is put in its place when its id falls within the page's range of ids — the listing is ordered
 * by id, so the page holds the ids after the previous page's last one and up to its own last one
 * (to the end when no page follows).
 *
 * Pure (no DOM, no fetch): test/console-live.test.ts runs it under Node.
 */
import type { HubEvent, Session } from '../api/types.js'

export interface SessionFilters {
  clientId?: string
  /** Sessions whose client id holds this text. */
  clientIdContains?: string
  deviceId?: string
  protocol?: string
  connected?: boolean
}

export interface SessionPage {
  rows: Session[]
  /** The last id of the page before this one: the range's exclusive start (none on the first page). */
  afterId?: string
  /** The last id the hub put on this page when more follow: the range's inclusive end. */
  untilId?: string
}

export function matchesFilters(session: Session, filters: SessionFilters): boolean {
  return (
    (filters.clientId === undefined || session.clientId === filters.clientId) &&
    (filters.clientIdContains === undefined || session.clientId.includes(filters.clientIdContains)) &&
    (filters.deviceId === undefined || session.deviceId === filters.deviceId) &&
    (filters.protocol === undefined || session.protocol === filters.protocol) &&
    (filters.connected === undefined || session.connected === filters.connected)
  )
}

function inRange(page: SessionPage, id: string): boolean {
  return (page.afterId === undefined || id > page.afterId) && (page.untilId === undefined || id <= page.untilId)
}

/** Whether `a` is an older state of the session than `b` (an older connection, or an older version of one). */
function olderThan(a: Session, b: Session): boolean {
  if (a.incarnation !== b.incarnation) return a.incarnation < b.incarnation
  return a.version < b.version
}

/** The page after `event`; the same page object when the event changes nothing on it. */
export function applySessionEvent(page: SessionPage, event: HubEvent, filters: SessionFilters): SessionPage {
  const session = event.session
  if (!session || !event.type.startsWith('session.')) return page
  const at = page.rows.findIndex((row) => row.id === session.id)
  const current = at < 0 ? undefined : page.rows[at]
  // an event older than what the page shows (it was read after the event was made): nothing to do
  if (current && olderThan(session, current)) return page
  const keep = event.type !== 'session.ended' && matchesFilters(session, filters)
  if (current) {
    const rows = [...page.rows]
    if (keep) rows[at] = session
    else rows.splice(at, 1)
    return { ...page, rows }
  }
  if (!keep || !inRange(page, session.id)) return page
  const rows = [...page.rows]
  const before = rows.findIndex((row) => row.id > session.id)
  rows.splice(before < 0 ? rows.length : before, 0, session)
  return { ...page, rows }
}
