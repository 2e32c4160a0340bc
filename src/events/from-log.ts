/**
 * How change-log entries become events: one entry makes at most one event, numbered with the
 * entry's own sequence — so events are unique and increasing, every replica reading the log makes
 * the same ones, and resuming after an event's `seq` is exact. A pure function of the entry (and
 * of device owners, which never change once a device is made): what an event needs beyond the
 * rows, the logged mutation carries (store.ts, "for the event stream").
 *
 * A session's topic rows make no events of their own: the session's event shows its topics after
 * the change. Entries logged before the event stream existed make the events they can: a
 * session's change without its topics shows none, a version change without its session makes
 * none.
 */
import { isoTime, renderDevice, renderSessionWith, renderSubscription } from '../api/render.js'
import { unmountTopic } from '../domain/namespace.js'
import type { SessionRecord, TopicSubscription } from '../domain/session.js'
import type { LogEntry, LoggedChange } from '../store/change-log.js'
import { valueJson } from '../store/property-json.js'
import type { EventTopic, HubEvent } from './event.js'

export interface EventSource {
  /** The node of a change whose entry names no replica (a store with one writer: this hub). */
  node: string
  /** The owner of a device, as looked up for this batch ('' when it has none or is unknown). */
  owner(deviceId: string): string
}

/** The device an entry's event needs the owner of, when the entry does not carry it. */
export function ownerNeeded(change: LoggedChange): string | undefined {
  switch (change.op) {
    case 'session.put':
      return change.session.deviceId
    case 'session.version':
      return change.session?.deviceId
    case 'session.delete':
      return change.ended?.deviceId
    case 'device.property':
      return change.deviceId
    default:
      return undefined
  }
}

const NO_TOPICS: readonly TopicSubscription[] = []

export function eventOf(entry: LogEntry, source: EventSource): HubEvent | null {
  // Built as plain literals, the envelope's fields first in the order a reader of the JSON
  // expects: with consumers attached every live entry becomes an event, and object spreads here
  // were the stream's largest cost to the hub (bench/events-stream.ts).
  const seq = entry.seq
  const time = isoTime(entry.at)
  const node = entry.replica === undefined ? source.node : nodeOf(entry.replica)
  const m = entry.change
  switch (m.op) {
    case 'session.put': {
      const s = m.session
      const owner = source.owner(s.deviceId)
      const session = renderSessionWith(s, m.topics ?? NO_TOPICS)
      if (s.connected) {
        const event: HubEvent = { seq, time, type: 'session.connected', node, deviceId: s.deviceId, owner, clientId: s.clientId, session }
        if (m.tookOver) event.tookOver = m.tookOver
        return event
      }
      return { seq, time, type: 'session.disconnected', node, deviceId: s.deviceId, owner, clientId: s.clientId, reason: s.disconnectReason, session }
    }
    case 'session.version': {
      const s = m.session
      if (!s) return null
      const owner = source.owner(s.deviceId)
      const session = renderSessionWith(s, m.topics ?? NO_TOPICS)
      if (m.unsubscribed) {
        const topics = m.unsubscribed.map((t) => eventTopic(s, t))
        return { seq, time, type: 'session.unsubscribed', node, deviceId: s.deviceId, owner, clientId: s.clientId, topics, session }
      }
      const topics = (m.subscribed ?? []).map((sub) => eventTopic(s, sub.topic, sub))
      return { seq, time, type: 'session.subscribed', node, deviceId: s.deviceId, owner, clientId: s.clientId, topics, session }
    }
    case 'session.delete': {
      const ended = m.ended
      return {
        seq,
        time,
        type: 'session.ended',
        node,
        deviceId: ended?.deviceId ?? '',
        owner: ended ? source.owner(ended.deviceId) : '',
        clientId: ended?.clientId ?? m.id,
        reason: m.reason ?? null,
        session: ended ? renderSessionWith(ended, NO_TOPICS) : null
      }
    }
    case 'subscription.put': {
      const s = m.subscription
      return { seq, time, type: 'subscription.created', node, deviceId: s.deviceId, owner: s.owner, clientId: s.sessionId, subscription: renderSubscription(s) }
    }
    case 'subscription.delete': {
      const s = m.subscription
      return {
        seq,
        time,
        type: 'subscription.deleted',
        node,
        deviceId: s?.deviceId ?? '',
        owner: s?.owner ?? '',
        clientId: s?.sessionId ?? null,
        subscriptionId: m.id,
        subscription: s ? renderSubscription(s) : null
      }
    }
    case 'device.put': {
      const d = m.device
      // a device is put once, when it is made; a later put would be a change of it
      const type = d.createdAt === d.updatedAt ? 'device.created' : 'device.changed'
      return { seq, time, type, node, deviceId: d.id, owner: d.owner, device: renderDevice(d) }
    }
    case 'device.delete':
      return { seq, time, type: 'device.deleted', node, deviceId: m.id, owner: m.device?.owner ?? source.owner(m.id) }
    // eventJson writes these keys in this order too
    case 'device.property':
      return {
        seq,
        time,
        type: 'device.property',
        node,
        deviceId: m.deviceId,
        owner: source.owner(m.deviceId),
        name: m.name,
        value: m.value,
        updatedAt: isoTime(m.updatedAt)
      }
    // a session's topics show in its own events; a clear (logged before ends deleted each
    // subscription entity by id) names no entity
    case 'topic.put':
    case 'topic.delete':
    case 'topic.clear':
    case 'subscription.clear':
      return null
  }
}

/** The node of a replica's run id (`node#run`, coordination.ts). */
function nodeOf(replica: string): string {
  const hash = replica.lastIndexOf('#')
  return hash < 0 ? replica : replica.slice(0, hash)
}

function eventTopic(session: SessionRecord, brokerTopic: string, subscription?: TopicSubscription): EventTopic {
  return { topic: unmountTopic(session.mountpoint, brokerTopic), brokerTopic, ...(subscription ? { qos: subscription.qos } : {}) }
}

/**
 * `JSON.stringify(event)`: for a property change that carries its measured value (a live entry of
 * this process, store/property-json.ts), written around the value's JSON with the keys in the
 * order `eventOf` builds them — the value, up to 256 KiB, is not serialized once more for the
 * stream.
 */
export function eventJson(event: HubEvent, change: LoggedChange): string {
  const value = change.op === 'device.property' ? valueJson(change) : undefined
  if (value === undefined || event.type !== 'device.property') return JSON.stringify(event)
  const text = JSON.stringify
  return `{"seq":${text(event.seq)},"time":${text(event.time)},"type":"device.property","node":${text(event.node)},"deviceId":${text(event.deviceId)},"owner":${text(event.owner)},"name":${text(event.name)},"value":${value},"updatedAt":${text(event.updatedAt)}}`
}
