/** How entities look on the native API: ISO 8601 times, nothing internal. */
import type { Device } from '../domain/device.js'
import type { Session } from '../domain/session.js'

const iso = (ms: number): string => new Date(ms).toISOString()

export function renderSession(s: Session) {
  return {
    id: s.id,
    protocol: s.protocol,
    clientId: s.clientId,
    deviceId: s.deviceId,
    username: s.username,
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
    topics: s.topics.map((t) => ({ topic: t.topic, qos: t.qos })),
    incarnation: s.incarnation,
    version: s.version
  }
}

export function renderDevice(d: Device) {
  return { ...d, createdAt: iso(d.createdAt), updatedAt: iso(d.updatedAt) }
}
