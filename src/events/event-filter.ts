/** Which events one consumer asked for: `?types=`, `?deviceId=`, `?owner=` (all must match). */
import { EVENT_TYPES, isEventType, type EventType, type HubEvent } from './event.js'

export interface EventFilter {
  types?: ReadonlySet<EventType>
  deviceId?: string
  owner?: string
}

/** The filter of a query, or the reason it is not one (answered 400). */
export function parseFilter(query: { types?: string; deviceId?: string; owner?: string }): EventFilter | { error: string } {
  const filter: EventFilter = {}
  if (query.types !== undefined) {
    const names = query.types.split(',').map((t) => t.trim())
    const unknown = names.filter((n) => !isEventType(n))
    if (unknown.length > 0) return { error: `querystring/types names no event type: ${unknown.join(', ')} (known: ${EVENT_TYPES.join(', ')})` }
    filter.types = new Set(names as EventType[])
  }
  if (query.deviceId !== undefined) filter.deviceId = query.deviceId
  if (query.owner !== undefined) filter.owner = query.owner
  return filter
}

export function matches(filter: EventFilter, event: HubEvent): boolean {
  return (
    (filter.types === undefined || filter.types.has(event.type)) &&
    (filter.deviceId === undefined || filter.deviceId === event.deviceId) &&
    (filter.owner === undefined || filter.owner === event.owner)
  )
}
