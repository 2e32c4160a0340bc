/**
 * A session as a row of the `sessions` table (schema.ts): a column a field, in the order the
 * statements name them, booleans as 0 and 1. Read back equal, field for field.
 */
import type { DisconnectReason, Protocol, SessionRecord } from '../../domain/session.js'

export const SESSION_COLUMNS = [
  'id',
  'protocol',
  'client_id',
  'device_id',
  'username',
  'mountpoint',
  'node',
  'peer_host',
  'peer_port',
  'sock_port',
  'keepalive',
  'proto_ver',
  'clean_start',
  'expiry_interval',
  'connected',
  'created_at',
  'connected_at',
  'disconnected_at',
  'disconnect_reason',
  'incarnation',
  'version'
] as const

export type SessionRow = [
  id: string,
  protocol: string,
  clientId: string,
  deviceId: string,
  username: string | null,
  mountpoint: string,
  node: string,
  peerHost: string | null,
  peerPort: number | null,
  sockPort: number | null,
  keepalive: number,
  protoVer: number,
  cleanStart: number,
  expiryInterval: number,
  connected: number,
  createdAt: number,
  connectedAt: number,
  disconnectedAt: number | null,
  disconnectReason: string | null,
  incarnation: string,
  version: number
]

export function sessionRow(s: SessionRecord): SessionRow {
  return [
    s.id,
    s.protocol,
    s.clientId,
    s.deviceId,
    s.username,
    s.mountpoint,
    s.node,
    s.peerHost,
    s.peerPort,
    s.sockPort,
    s.keepalive,
    s.protoVer,
    s.cleanStart ? 1 : 0,
    s.expiryInterval,
    s.connected ? 1 : 0,
    s.createdAt,
    s.connectedAt,
    s.disconnectedAt,
    s.disconnectReason,
    s.incarnation,
    s.version
  ]
}

/**
 * The row as the start reads it (FLEET_QUERIES in statements.ts): one JSON array, the client id,
 * device id and username 0 where they are the text before them — most often all three are the
 * session id, which then crosses, and is parsed, once.
 */
export const SESSION_JSON = `json_array(${SESSION_COLUMNS.map((c) =>
  c === 'client_id' ? 'iif(client_id = id, 0, client_id)' : c === 'device_id' ? 'iif(device_id = client_id, 0, device_id)' : c === 'username' ? 'iif(username = device_id, 0, username)' : c
).join(', ')})`

/** A row as selected, or as SESSION_JSON makes it. */
export type ReadSessionRow = [id: string, protocol: string, clientId: string | 0, deviceId: string | 0, username: string | null | 0, ...Rest<SessionRow>]

type Rest<T> = T extends [unknown, unknown, unknown, unknown, unknown, ...infer R] ? R : never

/**
 * `share` gives one copy of the text a whole fleet repeats (node names, peer addresses, the
 * reasons); the client id, device id and username, most often one text, are one string.
 */
export function sessionOfRow(r: ReadSessionRow, share: <T extends string | null>(value: T) => T = (value) => value): SessionRecord {
  const id = r[0]
  const clientId = r[2] === 0 || r[2] === id ? id : r[2]
  const deviceId = r[3] === 0 || r[3] === clientId ? clientId : r[3]
  return {
    id,
    protocol: share(r[1]) as Protocol,
    clientId,
    deviceId,
    username: r[4] === 0 || r[4] === deviceId ? deviceId : r[4],
    mountpoint: r[5],
    node: share(r[6]),
    peerHost: share(r[7]),
    peerPort: r[8],
    sockPort: r[9],
    keepalive: r[10],
    protoVer: r[11],
    cleanStart: r[12] === 1,
    expiryInterval: r[13],
    connected: r[14] === 1,
    createdAt: r[15],
    connectedAt: r[16],
    disconnectedAt: r[17],
    disconnectReason: share(r[18]) as DisconnectReason | null,
    incarnation: r[19],
    version: r[20]
  }
}
