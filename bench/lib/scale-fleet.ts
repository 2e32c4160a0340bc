/**
 * The stored fleet of bench/scale.ts: N devices, each with one persistent session subscribed to
 * its attributes (one topic, one subscription entity) and its `connectinfo` property — written
 * straight into a store, as a hub that had seen these devices connect would have left it.
 *
 * The rows are made by the hub's own code, so a hub loads them as its own: the session records
 * by the pure transitions (src/domain/transitions.ts) applied to the lifecycle events a carrier
 * makes, the topic rows and subscription entities by the registry's `sessionMutations`, the
 * devices by `createDevice`; the mutations are then written by the stores' own statements
 * (PostgreSQL: `BatchStatements`, many clients per multi-row statement; SQLite: `prepareWrites`
 * and `encodeMutation`, in one transaction). Only the change log is skipped: its entries are
 * pruned in a running hub anyway, and `load()` reads the tables.
 *
 * Per client i (id `scale-{i, 8 digits}` = client id = username = device id):
 * - EMQX mode: the connection as EMQX 5's REST listing shows it (the reconcile's way of
 *   recording a client, `listedConnect` then its topics), then, for odd i, `client.disconnected`
 *   (reason normal) — so even i are connected, odd i offline. `emqxClientOf(i)` is that listing
 *   row, which the EMQX stand-in is filled with: the hub's view and EMQX's agree, and a
 *   reconcile finds nothing to fix (its report says so; a mismatch would show as fixes).
 * - embedded mode: an MQTT 3.1.1 connect with clean session 0, a SUBSCRIBE, a DISCONNECT: every
 *   session offline.
 */
import type Database from 'better-sqlite3'
import type pg from 'pg'
import { createDevice } from '../../src/domain/device.js'
import { newTokenKey, TokenHasher } from '../../src/domain/secret.js'
import { nanos, type ConnectInfo } from '../../src/domain/device-properties.js'
import { newIncarnation } from '../../src/domain/incarnation.js'
import { connectedEvent, connectionFacts, type LifecycleEvent } from '../../src/domain/lifecycle-event.js'
import { deviceMountpoint } from '../../src/domain/namespace.js'
import type { SessionRecord, TopicSubscription } from '../../src/domain/session.js'
import type { SubscriptionEntity } from '../../src/domain/subscription.js'
import { transition } from '../../src/domain/transitions.js'
import { orderConnect } from '../../src/emqx/connection-order.js'
import type { EmqxClient } from '../../src/emqx/emqx-client.js'
import { sessionMutations } from '../../src/registry/session-mutations.js'
import { NO_ENTITIES, NO_TOPICS, type StoredSession } from '../../src/store/decision.js'
import { BatchStatements } from '../../src/store/postgres/batch-statements.js'
import { qualifiedTables, recountFleet } from '../../src/store/postgres/schema.js'
import { encodeMutation, prepareWrites } from '../../src/store/sqlite/statements.js'
import type { Mutation } from '../../src/store/store.js'
import type { StandinClient } from '../../test/helpers/emqx-rest-standin.js'

export type FleetMode = 'emqx' | 'embedded'

export interface FleetShape {
  mode: FleetMode
  size: number
  /** Epoch ms the fleet's times are counted from: devices made a day before, connections just before it. */
  base: number
  /** Seconds an offline session is kept: long enough that none expires while the bench runs. */
  expiryInterval: number
}

/** The node EMQX's rows name (the stand-in's default). */
export const EMQX_NODE = 'emqx@127.0.0.1'
/** The embedded hub's node name (IOTHUB_NODE), which its sessions carry. */
export const EMBEDDED_NODE = 'iothub@scale-bench'
/** The embedded hub's MQTT port as its sessions record it (their `sockPort`). */
const EMBEDDED_SOCK_PORT = 1883

export const clientIdOf = (i: number): string => `scale-${String(i).padStart(8, '0')}`
/** The change topic each device subscribes to, as the broker routes it (under `{id}/`). */
export const attributesTopicOf = (id: string): string => `${id}/v1/devices/me/attributes`
/** EMQX mode: even clients are connected, odd ones offline. */
export const isConnected = (shape: FleetShape, i: number): boolean => shape.mode === 'emqx' && i % 2 === 0

const connectedAtOf = (shape: FleetShape, i: number): number => shape.base - 60_000 - (i % 3_600_000)
const disconnectedAtOf = (shape: FleetShape, i: number): number => connectedAtOf(shape, i) + 30_000
const peerPortOf = (i: number): number => 10_000 + (i % 50_000)

/** Client i as EMQX 5's REST API lists it (what the stand-in holds, and what the hub recorded). */
export function emqxClientOf(shape: FleetShape, i: number): Omit<StandinClient, 'username' | 'extra'> & { username: string } {
  const id = clientIdOf(i)
  const connected = isConnected(shape, i)
  return {
    clientid: id,
    username: id,
    node: EMQX_NODE,
    connected,
    connectedAt: connectedAtOf(shape, i),
    createdAt: connectedAtOf(shape, i),
    ...(connected ? {} : { disconnectedAt: disconnectedAtOf(shape, i) }),
    ipAddress: '127.0.0.1',
    port: peerPortOf(i),
    protoName: 'MQTT',
    protoVer: 4,
    cleanStart: false,
    expiryInterval: shape.expiryInterval,
    keepalive: 60,
    mountpoint: deviceMountpoint(id)
  }
}

/**
 * What the reconcile records of a listed client: EmqxSource's connection facts of the
 * EmqxClient its REST client makes of the row (emqx-rest.ts `clientOf`), ordered as a listed
 * connect of a client the hub does not hold (its incarnation carries EMQX's connected_at).
 */
function emqxConnect(shape: FleetShape, i: number): LifecycleEvent {
  const row = emqxClientOf(shape, i)
  const client: EmqxClient = {
    node: row.node,
    clientId: row.clientid,
    username: row.username,
    protocol: 'mqtt',
    peerHost: row.ipAddress,
    peerPort: row.port,
    sockPort: undefined,
    mountpoint: row.mountpoint,
    protoVer: row.protoVer,
    keepalive: row.keepalive,
    cleanStart: row.cleanStart,
    expiryInterval: row.expiryInterval,
    connectedAt: row.connectedAt
  }
  const order = orderConnect(client, undefined, undefined, true)
  if (order.verdict !== 'newer') throw new Error(`a listed connect of a client the hub does not hold ordered as ${order.verdict}`)
  const facts = connectionFacts(
    // auth token: the device id is the username; EMQX's `%u/` mountpoint is the device's own
    { clientId: client.clientId, protocol: 'mqtt', deviceId: row.username, username: row.username, mountpoint: row.mountpoint, node: client.node, at: client.connectedAt },
    {
      peerHost: client.peerHost,
      peerPort: client.peerPort,
      sockPort: client.sockPort,
      keepalive: client.keepalive,
      protoVer: client.protoVer,
      cleanStart: client.cleanStart,
      expiryInterval: client.expiryInterval ?? shape.expiryInterval
    }
  )
  return { ...facts, incarnation: order.incarnation }
}

/** An MQTT 3.1.1 CONNECT with clean session 0, as the embedded broker records it (mqtt/connect.ts). */
function embeddedConnect(shape: FleetShape, i: number): LifecycleEvent {
  const id = clientIdOf(i)
  return connectedEvent(
    { clientId: id, incarnation: newIncarnation(EMBEDDED_NODE), protocol: 'mqtt', deviceId: id, username: id, mountpoint: deviceMountpoint(id), node: EMBEDDED_NODE, at: connectedAtOf(shape, i) },
    { peerHost: '127.0.0.1', peerPort: peerPortOf(i), sockPort: EMBEDDED_SOCK_PORT, keepalive: 60, protoVer: 4, cleanStart: false, expiryInterval: shape.expiryInterval }
  )
}

/** `connectinfo` as the ConnectInfoTracker computes it after the session's last change (devices/connectinfo.ts). */
function connectInfoOf(session: SessionRecord, owner: string): ConnectInfo {
  return {
    _clientid: session.clientId,
    _online: session.connected,
    _owner: owner,
    _peerhost: session.peerHost ?? '',
    _protocol: session.protocol,
    _socketport: session.sockPort === null ? '' : String(session.sockPort),
    _username: session.username ?? '',
    _timestamp: nanos(session.connected ? session.connectedAt : (session.disconnectedAt ?? session.connectedAt))
  }
}

/** The fill's devices' tokens are never used (nor known): hashed under a key of their own. */
const FILL_TOKENS = new TokenHasher(newTokenKey())

/**
 * Client i's mutations, in the order the hub commits them: the device's creation, then each
 * lifecycle event's mutations (as the registry makes them from the session as stored), then the
 * connectinfo write that follows the last connection change.
 */
export function clientMutations(shape: FleetShape, i: number): Mutation[] {
  const id = clientIdOf(i)
  const { device } = createDevice({ id }, FILL_TOKENS, shape.base - 86_400_000)
  const ownerOf = () => device.owner
  const mutations: Mutation[] = [{ op: 'device.put', device }]
  const topics = new Map<string, { subscription: TopicSubscription; persistent: boolean }>()
  const entities = new Map<string, SubscriptionEntity>()
  let session: SessionRecord | undefined
  const apply = (event: LifecycleEvent) => {
    const stored: StoredSession = {
      session,
      topics: topics.size === 0 ? NO_TOPICS : topics,
      entities: entities.size === 0 ? NO_ENTITIES : entities,
      lastIncarnation: undefined
    }
    const t = transition(session, event)
    if (t.outcome !== 'applied') throw new Error(`${event.kind} of ${id} not applied: ${t.why}`)
    const made = sessionMutations(id, t, stored, ownerOf, event.at)
    for (const m of made) {
      if (m.op === 'topic.put') topics.set(m.subscription.topic, { subscription: m.subscription, persistent: m.persistent })
      if (m.op === 'subscription.put') entities.set(m.subscription.brokerTopic, m.subscription)
    }
    mutations.push(...made)
    session = t.session ?? undefined
  }
  const connect = shape.mode === 'emqx' ? emqxConnect(shape, i) : embeddedConnect(shape, i)
  apply(connect)
  const topic = attributesTopicOf(id)
  // EMQX mode: the listing's topics as the reconcile records them ({ topic, qos }); embedded: an
  // MQTT 3.1.1 SUBSCRIBE, which carries no retain-handling or no-local options either
  apply({ kind: 'subscribed', clientId: id, incarnation: connect.incarnation, at: connect.at + 5, subscriptions: [{ topic, qos: 1 }] })
  if (!isConnected(shape, i)) {
    apply({ kind: 'disconnected', clientId: id, incarnation: connect.incarnation, at: disconnectedAtOf(shape, i), reason: 'client_disconnect' })
  }
  if (!session || topics.size !== 1 || entities.size !== 1) throw new Error(`${id}: not one session with one topic and one subscription entity`)
  const shownAt = session.connected ? session.connectedAt : session.disconnectedAt!
  mutations.push({ op: 'device.property', deviceId: id, name: 'connectinfo', value: connectInfoOf(session, device.owner), updatedAt: shownAt })
  return mutations
}

export interface FillReport {
  clients: number
  /** Rows the statements wrote (a row written twice counts twice). */
  rowWrites: number
  ms: number
}

/**
 * Writes the fleet into a PostgreSQL schema the hub has made, `chunk` clients per transaction,
 * each table's rows of a chunk in one multi-row statement (the store's own BatchStatements).
 */
export async function fillPostgres(client: pg.Client, schema: string, shape: FleetShape, chunk = 5_000): Promise<FillReport> {
  const started = Date.now()
  const statements = new BatchStatements(qualifiedTables(schema))
  let rowWrites = 0
  // the fill's durability is the database's business at the end (VACUUM/CHECKPOINT follow); no
  // fsync per chunk
  await client.query('SET synchronous_commit = off')
  for (let from = 0; from < shape.size; from += chunk) {
    const mutations: Mutation[] = []
    for (let i = from; i < Math.min(shape.size, from + chunk); i++) mutations.push(...clientMutations(shape, i))
    await client.query('BEGIN')
    try {
      for (const statement of statements.plan(mutations)) rowWrites += (await client.query(statement)).rowCount ?? 0
      await client.query('COMMIT')
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined)
      throw error
    }
  }
  // written without the store's log append, which keeps the stored totals
  for (const statement of recountFleet(qualifiedTables(schema))) await client.query(statement)
  return { clients: shape.size, rowWrites, ms: Date.now() - started }
}

/** Writes the fleet into a SQLite file the hub has made, every mutation by the store's own statement, in one transaction. */
export function fillSqlite(db: Database.Database, shape: FleetShape): FillReport {
  const started = Date.now()
  const statements = prepareWrites(db)
  let rowWrites = 0
  db.transaction(() => {
    for (let i = 0; i < shape.size; i++) {
      for (const m of clientMutations(shape, i)) {
        const [op, params] = encodeMutation(m)
        rowWrites += statements[op].run(params).changes
      }
    }
  })()
  return { clients: shape.size, rowWrites, ms: Date.now() - started }
}
