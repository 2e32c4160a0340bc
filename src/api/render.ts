/** How entities look on the native API: ISO 8601 times, nothing internal. */
import type { CreatedDevice, Device } from '../domain/device.js'
import { PROPERTY_NAMES, type PropertyName } from '../domain/device-properties.js'
import type { Session } from '../domain/session.js'
import type { SubscriptionEntity } from '../domain/subscription.js'
import { unmountTopic } from '../domain/namespace.js'

const iso = (ms: number): string => new Date(ms).toISOString()

export function renderSession(s: Session) {
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
    createdAt: iso(s.createdAt),
    connectedAt: iso(s.connectedAt),
    disconnectedAt: s.disconnectedAt === null ? null : iso(s.disconnectedAt),
    disconnectReason: s.disconnectReason,
    // the device's own topic, and the broker's (under the session's mountpoint)
    topics: s.topics.map((t) => ({ topic: unmountTopic(s.mountpoint, t.topic), brokerTopic: t.topic, qos: t.qos })),
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
    createdAt: iso(d.createdAt),
    updatedAt: iso(d.updatedAt),
    properties: Object.fromEntries(PROPERTY_NAMES.map((name) => [name, properties[name] ?? {}]))
  }
}

/** A device as its creation answers it: the one time its token is shown. */
export function renderCreatedDevice({ device, token }: CreatedDevice) {
  return { ...renderDevice(device), token }
}

export function renderSubscription(e: SubscriptionEntity) {
  return { ...e, createdAt: iso(e.createdAt) }
}
