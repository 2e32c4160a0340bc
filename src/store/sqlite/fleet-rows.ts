/**
 * The stored fleet — devices, their properties, sessions, topics, subscription entities — as
 * the hub's start reads it from SQLite: each table's rows decoded one at a time as they are
 * iterated, straight into the caches. With a million sessions, reading a table whole first
 * (`.all()`) held every row's text and its decoded object at once, the largest table alone
 * some gigabytes; streamed, a row's text is garbage as soon as it is decoded.
 *
 * Decoding also shares strings the documents repeat. JSON.parse makes a new string for every
 * value, so a session whose client id, device id and username are the same text held it three
 * times, and every session held its own copy of the node's name; these become one string each.
 * Only references change: the records are equal, field for field, to what was stored.
 */
import type Database from 'better-sqlite3'
import type { ChangeProperty } from '../../domain/change-topics.js'
import type { Device } from '../../domain/device.js'
import type { QoS, SessionRecord, TopicSubscription } from '../../domain/session.js'
import type { SubscriptionEntity } from '../../domain/subscription.js'
import type { StoredDeviceProperty, StoredTopic } from '../store.js'

/**
 * One copy of each of a few distinct strings (node names, owners, peer addresses): at most
 * MAX_SHARED are remembered, so a fleet of distinct values costs no more than it did.
 */
class SharedStrings {
  private readonly strings = new Map<string, string>()

  of<T extends string | null>(value: T): T {
    if (value === null) return value
    const shared = this.strings.get(value)
    if (shared !== undefined) return shared as T
    if (this.strings.size < MAX_SHARED) this.strings.set(value, value)
    return value
  }
}

const MAX_SHARED = 10_000

/**
 * One frozen copy of each list of change properties a subscription entity names (there are
 * fifteen possible): read-only wherever the hub uses it, and frozen so that nothing can change
 * every entity's list through one.
 */
class SharedLists<T extends string> {
  private readonly lists = new Map<string, readonly T[]>()

  of(list: T[]): T[] {
    const key = list.join('\0')
    let shared = this.lists.get(key)
    if (shared === undefined && this.lists.size < MAX_SHARED) this.lists.set(key, (shared = Object.freeze(list)))
    return (shared ?? list) as T[]
  }
}

/** Devices made without `ext` (most) share one empty one. */
const NO_EXT: Record<string, unknown> = Object.freeze({})

function isEmpty(o: object): boolean {
  for (const _ in o) return false
  return true
}

/** Re-iterable: every iteration reads the table again, from its first row. */
function rowsOf<R, T>(statement: Database.Statement, decode: (row: R) => T): Iterable<T> {
  return {
    *[Symbol.iterator]() {
      for (const row of statement.iterate() as IterableIterator<R>) yield decode(row)
    }
  }
}

export interface FleetStatements {
  devices: Database.Statement
  deviceProperties: Database.Statement
  subscriptions: Database.Statement
  sessions: Database.Statement
  topics: Database.Statement
}

export interface FleetRows {
  devices: Iterable<Device>
  deviceProperties: Iterable<StoredDeviceProperty>
  subscriptions: Iterable<SubscriptionEntity>
  sessions: Iterable<SessionRecord>
  topics: Iterable<StoredTopic>
}

export function fleetRows(s: FleetStatements): FleetRows {
  const shared = new SharedStrings()
  const properties = new SharedLists<ChangeProperty>()
  return {
    devices: rowsOf(s.devices, (doc: string) => {
      const d = JSON.parse(doc) as Device
      d.owner = shared.of(d.owner)
      d.group = shared.of(d.group)
      // read-only wherever the hub uses it (a change makes a new device); frozen so that stays so
      if (isEmpty(d.ext)) d.ext = NO_EXT
      return d
    }),
    deviceProperties: rowsOf(s.deviceProperties, ([deviceId, name, value, updatedAt]: [string, string, string, number]) => {
      const parsed = JSON.parse(value) as unknown
      if (name === 'connectinfo') shareConnectInfo(parsed as Record<string, unknown>, deviceId, shared)
      return { deviceId, name: shared.of(name), value: parsed, updatedAt }
    }),
    subscriptions: rowsOf(s.subscriptions, (doc: string) => {
      const e = JSON.parse(doc) as SubscriptionEntity
      if (e.deviceId === e.sessionId) e.deviceId = e.sessionId
      e.owner = shared.of(e.owner)
      // the filter as the device sent it: the same few change topics across the fleet
      e.topic = shared.of(e.topic)
      e.properties = properties.of(e.properties)
      e.type = 'subscription'
      e.source = 'iothub'
      e.mode = 'realtime'
      return e
    }),
    // sessions stored before device namespaces existed were not mounted: mountpoint ''
    sessions: rowsOf(s.sessions, (doc: string) => {
      const r = JSON.parse(doc) as SessionRecord
      if (r.clientId === r.id) r.clientId = r.id
      if (r.deviceId === r.clientId) r.deviceId = r.clientId
      if (r.username === r.deviceId) r.username = r.deviceId
      r.node = shared.of(r.node)
      r.peerHost = shared.of(r.peerHost)
      r.disconnectReason = shared.of(r.disconnectReason)
      return r
    }),
    topics: rowsOf(s.topics, ([sessionId, topic, qos, rh, rap, nl, subId, persistent]: TopicRow): StoredTopic => {
      // built field by field (not spread): a million rows each made four objects more to drop
      const subscription: TopicSubscription = { topic, qos: qos as QoS }
      if (rh !== null) subscription.rh = rh
      if (rap !== null) subscription.rap = rap === 1
      if (nl !== null) subscription.nl = nl === 1
      if (subId !== null) subscription.subscriptionIdentifier = subId
      return { sessionId, persistent: persistent === 1, subscription }
    })
  }
}

/** A device's connectinfo names its client and user, most often the device id itself, and a few hosts, ports and owners. */
function shareConnectInfo(info: Record<string, unknown>, deviceId: string, shared: SharedStrings): void {
  if (info === null || typeof info !== 'object') return
  for (const field of ['_clientid', '_username'] as const) if (info[field] === deviceId) info[field] = deviceId
  for (const field of ['_owner', '_peerhost', '_protocol', '_socketport'] as const) {
    const value = info[field]
    if (typeof value === 'string') info[field] = shared.of(value)
  }
}

type TopicRow = [sessionId: string, topic: string, qos: number, rh: number | null, rap: number | null, nl: number | null, subId: number | null, persistent: number]
