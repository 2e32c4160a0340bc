/**
 * The stored fleet — devices, their properties, sessions, topics, subscription entities — as
 * the hub's start reads it from SQLite: each table's rows, read on the fleet reader thread
 * (fleet-reader.ts) and parsed a chunk at a time, decoded one at a time as they are iterated,
 * straight into the caches. With a million sessions, reading a table whole first (`.all()`) held every
 * row's text and its decoded object at once, the largest table alone some gigabytes; streamed,
 * a row's text is garbage as soon as it is decoded.
 *
 * Decoding also shares strings the rows repeat. JSON.parse makes a new string for every value, so a session
 * whose client id, device id and username are the same text held it three times, and every
 * session held its own copy of the node's name; these become one string each. Only references
 * change: the records are equal, field for field, to what was stored.
 */
import type { ChangeProperty } from '../../domain/change-topics.js'
import type { Device } from '../../domain/device.js'
import type { QoS, SessionRecord, TopicSubscription } from '../../domain/session.js'
import type { SubscriptionEntity } from '../../domain/subscription.js'
import type { StoredDeviceProperty, StoredTopic } from '../store.js'
import { sessionOfRow, type ReadSessionRow } from './session-columns.js'
import type { FleetTable } from './statements.js'
import { splitProperties, subscriptionOfRow, type ReadSubscriptionRow } from './subscription-columns.js'

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
 * fifteen possible), by the list as stored: read-only wherever the hub uses it, and frozen so
 * that nothing can change every entity's list through one.
 */
class SharedLists {
  private readonly lists = new Map<string, readonly ChangeProperty[]>()

  of(stored: string): ChangeProperty[] {
    let shared = this.lists.get(stored)
    if (shared === undefined) {
      const list = splitProperties(stored)
      if (this.lists.size >= MAX_SHARED) return list
      this.lists.set(stored, (shared = Object.freeze(list)))
    }
    return shared as ChangeProperty[]
  }
}

/** Devices made without `ext` (most) share one empty one. */
const NO_EXT: Record<string, unknown> = Object.freeze({})

function isEmpty(o: object): boolean {
  for (const _ in o) return false
  return true
}

/** Re-iterable: every iteration reads the table again, from its first row. */
function rowsOf<R, T>(read: FleetSource, table: FleetTable, decode: (row: R) => T): Iterable<T> {
  return {
    *[Symbol.iterator]() {
      for (const row of read<R>(table)) yield decode(row)
    }
  }
}

/** A table's rows as FLEET_QUERIES makes them, parsed, read at every iteration. */
export type FleetSource = <Row>(table: FleetTable) => Iterable<Row>

export interface FleetRows {
  devices: Iterable<Device>
  deviceProperties: Iterable<StoredDeviceProperty>
  subscriptions: Iterable<SubscriptionEntity>
  sessions: Iterable<SessionRecord>
  topics: Iterable<StoredTopic>
}

export function fleetRows(read: FleetSource): FleetRows {
  const shared = new SharedStrings()
  const share = <T extends string | null>(value: T): T => shared.of(value)
  const properties = new SharedLists()
  return {
    devices: rowsOf(read, 'devices', (d: Device) => {
      d.owner = shared.of(d.owner)
      d.group = shared.of(d.group)
      // read-only wherever the hub uses it (a change makes a new device); frozen so that stays so
      if (isEmpty(d.ext)) d.ext = NO_EXT
      return d
    }),
    deviceProperties: rowsOf(read, 'deviceProperties', ([deviceId, name, value, updatedAt]: [string, string, unknown, number]) => {
      if (name === 'connectinfo') shareConnectInfo(value as Record<string, unknown>, deviceId, shared)
      return { deviceId, name: shared.of(name), value, updatedAt }
    }),
    subscriptions: rowsOf(read, 'subscriptions', (row: ReadSubscriptionRow) => subscriptionOfRow(row, share, (stored) => properties.of(stored))),
    sessions: rowsOf(read, 'sessions', (row: ReadSessionRow) => sessionOfRow(row, share)),
    topics: rowsOf(read, 'topics', ([sessionId, topic, qos, rh, rap, nl, subId, persistent]: TopicRow): StoredTopic => {
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
