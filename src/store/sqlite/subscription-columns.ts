/**
 * A subscription entity as a row of the `subscriptions` table (schema.ts). Its constant fields
 * are not stored, and its broker topic and filter — the longest of its text, and made from its
 * other fields — are stored only when they differ from what these functions make of those
 * fields (NULL otherwise); the read (FLEET_QUERIES in statements.ts) makes them again, the same
 * way. The entity read back is equal, field for field, to the one written.
 */
import type { ChangeProperty } from '../../domain/change-topics.js'
import type { SubscriptionEntity } from '../../domain/subscription.js'

export const SUBSCRIPTION_COLUMNS = ['id', 'session_id', 'device_id', 'owner', 'topic', 'broker_topic', 'properties', 'filter', 'created_at'] as const

/** As stored. */
export type SubscriptionRow = [
  id: string,
  sessionId: string,
  deviceId: string,
  owner: string,
  topic: string,
  brokerTopic: string | null,
  properties: string,
  filter: string | null,
  createdAt: number
]

/** A device's topic as the broker routes it: under the device's mountpoint `{deviceId}/`. */
const brokerTopicOf = (deviceId: string, topic: string): string => `${deviceId}/${topic}`

/** tKeel core's form: `insert into {id} select {deviceId}.{property}, …`. */
function filterOf(id: string, deviceId: string, properties: readonly string[]): string {
  let filter = `insert into ${id} select `
  for (let i = 0; i < properties.length; i++) filter += `${i === 0 ? '' : ', '}${deviceId}.${properties[i]}`
  return filter
}

export function subscriptionRow(e: SubscriptionEntity): SubscriptionRow {
  return [
    e.id,
    e.sessionId,
    e.deviceId,
    e.owner,
    e.topic,
    e.brokerTopic === brokerTopicOf(e.deviceId, e.topic) ? null : e.brokerTopic,
    e.properties.join(','),
    e.filter === filterOf(e.id, e.deviceId, e.properties) ? null : e.filter,
    e.createdAt
  ]
}

/**
 * The row as the start reads it (FLEET_QUERIES in statements.ts): one JSON array, the broker
 * topic and filter made again where they were not stored — by SQLite, as `brokerTopicOf` and
 * `filterOf` make them — and the device id 0 where it is the session id.
 */
export const SUBSCRIPTION_JSON = `json_array(id, session_id, iif(device_id = session_id, 0, device_id), owner, topic,
  coalesce(broker_topic, device_id || '/' || topic),
  properties,
  coalesce(filter, 'insert into ' || id || ' select ' || iif(properties = '', '', device_id || '.' || replace(properties, ',', ', ' || device_id || '.'))),
  created_at)`

/** As SUBSCRIPTION_JSON makes it. */
export type ReadSubscriptionRow = [
  id: string,
  sessionId: string,
  deviceId: string | 0,
  owner: string,
  topic: string,
  brokerTopic: string,
  properties: string,
  filter: string,
  createdAt: number
]

/**
 * `share` gives one copy of the text a fleet repeats (owners, the few change topics), and
 * `propertiesOf` one list for each stored list of properties.
 */
export function subscriptionOfRow(
  r: ReadSubscriptionRow,
  share: (value: string) => string = (value) => value,
  propertiesOf: (stored: string) => ChangeProperty[] = splitProperties
): SubscriptionEntity {
  const [id, sessionId] = r
  return {
    id,
    type: 'subscription',
    owner: share(r[3]),
    source: 'iothub',
    sessionId,
    deviceId: r[2] === 0 ? sessionId : r[2],
    topic: share(r[4]),
    brokerTopic: r[5],
    properties: propertiesOf(r[6]),
    mode: 'realtime',
    filter: r[7],
    createdAt: r[8]
  }
}

export function splitProperties(stored: string): ChangeProperty[] {
  return stored === '' ? [] : (stored.split(',') as ChangeProperty[])
}
