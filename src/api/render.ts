/** How entities look on the native API: ISO 8601 times, nothing internal. */
import type { CreatedDevice, Device } from '../domain/device.js'
import { PROPERTY_NAMES, type PropertyName } from '../domain/device-properties.js'
import type { Session, SessionRecord, TopicSubscription } from '../domain/session.js'
import type { SubscriptionEntity } from '../domain/subscription.js'
import { unmountTopic } from '../domain/namespace.js'

/** Instants rendered lately, and how many are kept. */
const recentIso = new Map<number, string>()
const RECENT_ISO_KEPT = 8_192

/** An instant as ISO 8601, remembered: a session's times repeat in each of its events and on every page. */
export function isoTime(ms: number): string {
  let text = recentIso.get(ms)
  if (text === undefined) {
    // dropped all at once when full: the next few thousand renders refill it with what is current
    if (recentIso.size >= RECENT_ISO_KEPT) recentIso.clear()
    text = new Date(ms).toISOString()
    recentIso.set(ms, text)
  }
  return text
}

export function renderSession(s: Session) {
  return renderSessionWith(s, s.topics)
}

/** A session with `topics` as its topics (an event's session, whose topics are logged beside it). */
export function renderSessionWith(s: SessionRecord, topics: readonly TopicSubscription[]) {
  return {
    id: s.id,
    protocol: s.protocol,
    clientId: s.clientId,
    deviceId: s.deviceId,
    username: s.username,
    mountpoint: s.mountpoint,
    node: s.node,
    peerHost: s.peerHost,
    peerPort: s.peerPort,
    sockPort: s.sockPort,
    keepalive: s.keepalive,
    protoVer: s.protoVer,
    cleanStart: s.cleanStart,
    expiryInterval: s.expiryInterval,
    connected: s.connected,
    createdAt: isoTime(s.createdAt),
    connectedAt: isoTime(s.connectedAt),
    disconnectedAt: s.disconnectedAt === null ? null : isoTime(s.disconnectedAt),
    disconnectReason: s.disconnectReason,
    // the device's own topic, and the broker's (under the session's mountpoint)
    topics: topics.map((t) => ({ topic: unmountTopic(s.mountpoint, t.topic), brokerTopic: t.topic, qos: t.qos })),
    incarnation: s.incarnation,
    version: s.version
  }
}

/**
 * A device with its properties (each `{}` until it is first set). Never its token, nor the
 * token's hash: the token is shown once, by the answer that makes it (renderNewToken).
 */
export function renderDevice(d: Device, properties: Partial<Record<PropertyName, unknown>> = {}) {
  return {
    id: d.id,
    name: d.name,
    owner: d.owner,
    group: d.group,
    desc: d.desc,
    ext: d.ext,
    createdAt: isoTime(d.createdAt),
    updatedAt: isoTime(d.updatedAt),
    properties: Object.fromEntries(PROPERTY_NAMES.map((name) => [name, properties[name] ?? {}]))
  }
}

/** A device as its creation answers it: the one time its token is shown. */
export function renderCreatedDevice({ device, token }: CreatedDevice) {
  return { ...renderDevice(device), token }
}

export function renderSubscription(e: SubscriptionEntity) {
  return { ...e, createdAt: isoTime(e.createdAt) }
}
