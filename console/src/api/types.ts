/** The API's shapes as the console reads them (README "HTTP API", docs/events.md). */

/** 'mqtt', 'coap', or another a later hub adds. */
export type Protocol = string

export interface Topic {
  topic: string
  brokerTopic: string
  qos?: number
}

export interface Session {
  id: string
  protocol: Protocol
  clientId: string
  deviceId: string
  username: string
  node: string
  peerHost: string
  peerPort: number
  keepalive: number
  protoVer: number
  cleanStart: boolean
  connected: boolean
  createdAt: string
  connectedAt: string
  disconnectedAt: string | null
  disconnectReason: string | null
  topics: Topic[]
  incarnation: string
  version: number
}

export interface Device {
  id: string
  name: string
  owner: string
  group: string
  desc: string
  ext: Record<string, unknown>
  createdAt: string
  updatedAt: string
  properties?: Record<string, unknown>
}

export interface Subscription {
  id: string
  sessionId: string
  deviceId: string
  topic: string
  brokerTopic: string
  properties: string[]
  createdAt: string
}

/** A page of a native listing. */
export interface Page<T> {
  data: T[]
  next: string | null
}

export interface Replica {
  node: string
  address: string | null
  startedAt: string
  lastSeen: string
  logPosition: number
  live: boolean
  self: boolean
}

export interface Status {
  node: string
  ready: boolean
  checks: Record<string, { ok: boolean; detail?: string }>
  /** null when the store could not count the fleet (the checks say why). */
  counts: {
    devices: number
    sessions: number
    connected: number
    subscriptions: number
    connectedByProtocol: Record<string, number>
    connectedByNode: Record<string, number>
  } | null
  rates: { lifecycleEventsPerSecond: number; pushesPerSecond: number }
  store: { kind: string; healthy: boolean; commitSecondsP50: number | null; commitSecondsP99: number | null }
  replicas: Replica[]
  reconcile: Record<string, unknown> | null
}

export interface StatusSample {
  at: string
  /** null when the fleet could not be counted then. */
  connected: number | null
  lifecycleEventsPerSecond: number
  pushesPerSecond: number
}

export interface StatusHistory {
  intervalSeconds: number
  samples: StatusSample[]
}

/** One event of GET /v1/events. */
export interface HubEvent {
  seq: number
  time: string
  type: string
  node: string
  deviceId: string
  owner: string
  clientId?: string
  session?: Session
  reason?: string
  topics?: Topic[]
  subscription?: Subscription
  subscriptionId?: string
  device?: Device
  name?: string
  value?: unknown
  tookOver?: string
}

// the hub's own list (a pure module, bundled in): one place names the event types
export { EVENT_TYPES } from '../../../src/domain/event-types.js'
