/**
 * The subscription entity: a session's subscription to change topics of its own device,
 * created by its SUBSCRIBE and deleted by its UNSUBSCRIBE or the session's end. It says which
 * device properties are delivered to which session topic; downstream pushes go to the sessions
 * holding one for the changed property.
 */
import { createHash } from 'node:crypto'
import { changePropertiesOf, type ChangeProperty } from './change-topics.js'
import { NO_MOUNTPOINT, unmountTopic } from './namespace.js'
import type { SessionRecord } from './session.js'

export interface SubscriptionEntity {
  id: string
  type: 'subscription'
  owner: string
  source: 'iothub'
  sessionId: string
  deviceId: string
  /** The subscription filter as the device sent it (inside its namespace). */
  topic: string
  /** The same filter as the broker routes it. */
  brokerTopic: string
  /** The device properties whose changes this subscription receives. */
  properties: ChangeProperty[]
  /** tKeel's subscription modes are realtime, period and changed; pushes happen as changes are made. */
  mode: 'realtime'
  /** tKeel core's form of the same: `insert into {id} select {deviceId}.{property}, …`. */
  filter: string
  /** Epoch milliseconds. */
  createdAt: number
}

/**
 * One id per session and filter, the same every time it is derived: a repeated SUBSCRIBE
 * finds the entity it already made. URL-safe, so it can be a path segment.
 */
function subscriptionEntityId(sessionId: string, deviceTopic: string): string {
  return `sub-${createHash('sha256').update(sessionId).update('\0').update(deviceTopic).digest('base64url').slice(0, 22)}`
}

/**
 * The subscription entity a session's subscription to `brokerTopic` makes, or null when it
 * makes none: the filter matches no change topic, or the session is not a device's (superuser).
 */
export function subscriptionEntityOf(session: SessionRecord, owner: string, brokerTopic: string, at: number): SubscriptionEntity | null {
  if (session.mountpoint === NO_MOUNTPOINT || !brokerTopic.startsWith(session.mountpoint)) return null
  const topic = unmountTopic(session.mountpoint, brokerTopic)
  const properties = changePropertiesOf(topic)
  if (properties.length === 0) return null
  const id = subscriptionEntityId(session.id, topic)
  return {
    id,
    type: 'subscription',
    owner,
    source: 'iothub',
    sessionId: session.id,
    deviceId: session.deviceId,
    topic,
    brokerTopic,
    properties,
    mode: 'realtime',
    filter: `insert into ${id} select ${properties.map((p) => `${session.deviceId}.${p}`).join(', ')}`,
    createdAt: at
  }
}
