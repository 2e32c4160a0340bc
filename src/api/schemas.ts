/** JSON schemas shared by routes: one source for validation, response shape and documentation. */

export const errorSchema = {
  type: 'object',
  properties: { statusCode: { type: 'integer' }, error: { type: 'string' }, message: { type: 'string' } }
} as const

export const topicSchema = {
  type: 'object',
  required: ['topic', 'brokerTopic', 'qos'],
  properties: {
    /** As the device names it. */
    topic: { type: 'string' },
    /** As the broker routes it: under the session's mountpoint. */
    brokerTopic: { type: 'string' },
    qos: { type: 'integer' }
  }
} as const

const sessionProperties = {
  id: { type: 'string' },
  protocol: { type: 'string' },
  clientId: { type: 'string' },
  deviceId: { type: 'string' },
  username: { type: ['string', 'null'] },
  mountpoint: { type: 'string' },
  node: { type: 'string' },
  peerHost: { type: ['string', 'null'] },
  peerPort: { type: ['integer', 'null'] },
  sockPort: { type: ['integer', 'null'] },
  keepalive: { type: 'integer' },
  protoVer: { type: 'integer' },
  cleanStart: { type: 'boolean' },
  expiryInterval: { type: 'integer' },
  connected: { type: 'boolean' },
  createdAt: { type: 'string', format: 'date-time' },
  connectedAt: { type: 'string', format: 'date-time' },
  disconnectedAt: { type: ['string', 'null'], format: 'date-time' },
  disconnectReason: { type: ['string', 'null'] },
  topics: { type: 'array', items: topicSchema },
  incarnation: { type: 'string' },
  version: { type: 'integer' }
} as const

export const sessionSchema = {
  type: 'object',
  // every field always present (null when unknown), in this order
  required: Object.keys(sessionProperties),
  properties: sessionProperties
} as const

const subscriptionProperties = {
  id: { type: 'string' },
  type: { type: 'string' },
  owner: { type: 'string' },
  source: { type: 'string' },
  sessionId: { type: 'string' },
  deviceId: { type: 'string' },
  topic: { type: 'string' },
  brokerTopic: { type: 'string' },
  properties: { type: 'array', items: { type: 'string' } },
  mode: { type: 'string' },
  filter: { type: 'string' },
  createdAt: { type: 'string', format: 'date-time' }
} as const

export const subscriptionSchema = {
  type: 'object',
  required: Object.keys(subscriptionProperties),
  properties: subscriptionProperties
} as const

import { DEVICE_ID_PATTERN } from '../domain/device.js'
export { DEVICE_ID_PATTERN }

/**
 * Ids a new device may not take: `/v1/devices/attributes` and `/v1/devices/commands` are the
 * fleet pushes' routes (routes/fleet-pushes.ts), which fastify prefers to `/v1/devices/{id}`.
 */
export const RESERVED_DEVICE_IDS: ReadonlySet<string> = new Set(['attributes', 'commands'])

export const newDeviceSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    id: { type: 'string', pattern: DEVICE_ID_PATTERN },
    name: { type: 'string', maxLength: 256 },
    owner: { type: 'string', maxLength: 256 },
    group: { type: 'string', maxLength: 256 },
    desc: { type: 'string', maxLength: 4096 },
    ext: { type: 'object' }
  }
} as const

/**
 * A change of a device (PATCH): the fields it may change. Unknown fields are refused; `id`,
 * `owner` and `token` are let through here so the route can say why they cannot change.
 */
export const deviceChangeSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    name: { type: 'string', maxLength: 256 },
    group: { type: 'string', maxLength: 256 },
    desc: { type: 'string', maxLength: 4096 },
    ext: { type: 'object' },
    id: {},
    owner: {},
    token: {},
    tokenHash: {}
  }
} as const

const deviceProperties = {
  id: { type: 'string' },
  name: { type: 'string' },
  owner: { type: 'string' },
  group: { type: 'string' },
  desc: { type: 'string' },
  ext: { type: 'object', additionalProperties: true },
  createdAt: { type: 'string', format: 'date-time' },
  updatedAt: { type: 'string', format: 'date-time' },
  /** attributes, telemetry, commands, rawData, connectinfo: documents of any shape */
  properties: { type: 'object', additionalProperties: true }
} as const

/** A device as the API shows it: never its token (nor the token's hash, which the response schema drops). */
export const deviceSchema = {
  type: 'object',
  required: Object.keys(deviceProperties),
  properties: deviceProperties
} as const

/** A device as its creation answers it: with its token, shown this once. */
export const createdDeviceSchema = {
  type: 'object',
  required: [...Object.keys(deviceProperties), 'token'],
  properties: { ...deviceProperties, token: { type: 'string' } }
} as const
