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
import { renderDevice, renderSession, renderSubscription } from '../api/render.js'
import { unmountTopic } from '../domain/namespace.js'
import type { SessionRecord, TopicSubscription } from '../domain/session.js'
import type { LogEntry, LoggedChange } from '../store/change-log.js'
import type { EventTopic, EventType, HubEvent } from './event.js'

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

export function eventOf(entry: LogEntry, source: EventSource): HubEvent | null {
  const time = new Date(entry.at).toISOString()
  const node = entry.replica === undefined ? source.node : nodeOf(entry.replica)
  // the envelope first, in the order a reader of the JSON expects it
  const head = <T extends EventType>(type: T) => ({ seq: entry.seq, time, type, node })
  const m = entry.change
  switch (m.op) {
    case 'session.put': {
      const envelope = { deviceId: m.session.deviceId, owner: source.owner(m.session.deviceId), clientId: m.session.clientId }
      const session = renderSession({ ...m.session, topics: m.topics ?? [] })
      if (m.session.connected) return { ...head('session.connected'), ...envelope, session, ...(m.tookOver ? { tookOver: m.tookOver } : {}) }
      return { ...head('session.disconnected'), ...envelope, reason: m.session.disconnectReason, session }
    }
    case 'session.version': {
      if (!m.session) return null
      const envelope = { deviceId: m.session.deviceId, owner: source.owner(m.session.deviceId), clientId: m.session.clientId }
      const session = renderSession({ ...m.session, topics: m.topics ?? [] })
      if (m.unsubscribed) return { ...head('session.unsubscribed'), ...envelope, topics: m.unsubscribed.map((t) => eventTopic(m.session!, t)), session }
      return { ...head('session.subscribed'), ...envelope, topics: (m.subscribed ?? []).map((s) => eventTopic(m.session!, s.topic, s)), session }
    }
    case 'session.delete': {
      const ended = m.ended
      return {
        ...head('session.ended'),
        deviceId: ended?.deviceId ?? '',
        owner: ended ? source.owner(ended.deviceId) : '',
        clientId: ended?.clientId ?? m.id,
        reason: m.reason ?? null,
        session: ended ? renderSession({ ...ended, topics: [] }) : null
      }
    }
    case 'subscription.put': {
      const s = m.subscription
      return { ...head('subscription.created'), deviceId: s.deviceId, owner: s.owner, clientId: s.sessionId, subscription: renderSubscription(s) }
    }
    case 'subscription.delete': {
      const s = m.subscription
      return {
        ...head('subscription.deleted'),
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
      return { ...head(d.createdAt === d.updatedAt ? 'device.created' : 'device.changed'), deviceId: d.id, owner: d.owner, device: renderDevice(d) }
    }
    case 'device.delete':
      return { ...head('device.deleted'), deviceId: m.id, owner: m.device?.owner ?? source.owner(m.id) }
    case 'device.property':
      return {
        ...head('device.property'),
        deviceId: m.deviceId,
        owner: source.owner(m.deviceId),
        name: m.name,
        value: m.value,
        updatedAt: new Date(m.updatedAt).toISOString()
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
