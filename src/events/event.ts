/**
 * The one shape of every event the hub tells: what changed, numbered by the change log's own
 * sequence, with the entity as it is after the change (rendered as the native API renders it),
 * so a consumer needs no second read. docs/events.md describes each type.
 */
import type { renderDevice, renderSession, renderSubscription } from '../api/render.js'
import type { SessionEndReason } from '../domain/transitions.js'

export { EVENT_TYPES, isEventType, type EventType } from '../domain/event-types.js'

export type RenderedSession = ReturnType<typeof renderSession>
export type RenderedSubscription = ReturnType<typeof renderSubscription>
/** A device as `GET /v1/devices/{id}` shows it: never its token, nor the token's hash. */
export type RenderedDevice = ReturnType<typeof renderDevice>

/** A session's topic as events show it: the device's own filter and the broker's. */
export interface EventTopic {
  topic: string
  brokerTopic: string
  qos?: number
}

interface Envelope {
  /** The change log's sequence number of the change: unique and increasing, the resume point. */
  seq: number
  /** When the change was committed (ISO 8601). */
  time: string
  /** The hub replica that committed it. */
  node: string
  deviceId: string
  /** The device's owner ('' for none, or a session that is no device's). */
  owner: string
}

export type HubEvent = Envelope &
  (
    | { type: 'session.connected'; clientId: string; session: RenderedSession; tookOver?: string }
    | { type: 'session.disconnected'; clientId: string; reason: string | null; session: RenderedSession }
    | { type: 'session.ended'; clientId: string; reason: SessionEndReason | null; session: RenderedSession | null }
    | { type: 'session.subscribed' | 'session.unsubscribed'; clientId: string; topics: EventTopic[]; session: RenderedSession }
    | { type: 'subscription.created'; clientId: string; subscription: RenderedSubscription }
    | { type: 'subscription.deleted'; clientId: string | null; subscriptionId: string; subscription: RenderedSubscription | null }
    | { type: 'device.created' | 'device.changed'; device: RenderedDevice }
    | { type: 'device.deleted' }
    | { type: 'device.property'; name: string; value: unknown; updatedAt: string }
  )
