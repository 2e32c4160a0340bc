/**
 * The names of the events the hub tells (src/events/event.ts has their shapes): here, below the
 * settings, so that a setting naming event types (IOTHUB_EVENTS_WEBHOOK_TYPES) is checked at start.
 */
export const EVENT_TYPES = [
  'session.connected',
  'session.disconnected',
  'session.ended',
  'session.subscribed',
  'session.unsubscribed',
  'subscription.created',
  'subscription.deleted',
  'device.created',
  'device.changed',
  'device.deleted',
  'device.property'
] as const
export type EventType = (typeof EVENT_TYPES)[number]

const KNOWN = new Set<string>(EVENT_TYPES)

export function isEventType(name: string): name is EventType {
  return KNOWN.has(name)
}
