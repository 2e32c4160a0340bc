/**
 * Several EMQX-mode hub replicas on one PostgreSQL database, acting — as they are meant to — as
 * one hub in front of one EMQX cluster: EMQX node n1's ExHook channel lands on replica A, n2's on
 * replica B, and so on. Every replica talks to the same EMQX REST stand-in, which holds the
 * broker's truth; the test keeps that truth in step with the hooks it sends, as a real EMQX
 * would (ReplicaSet.connect/subscribe/… do both).
 *
 * `oneHub: true` starts a single hub that plays every replica's part (each "replica" is then
 * the same hub, reached by its own node's channel): the control run, whose passing shows that a
 * failure of the same steps on real replicas is their disagreement, not this harness.
 */
import type { TestContext } from 'node:test'
import type { HubConfig } from '../../src/config.js'
import type { ExhookVersion } from '../../src/emqx/exhook/protos.js'
import type { ApiCall } from './api-client.js'
import type { EmqxExhookClient } from './emqx-exhook-client.js'
import { EMQX_KEY, EMQX_SECRET, startEmqxTestHub, type EmqxTestHub } from './emqx-hub.js'
import { startEmqxRestStandin, type EmqxRestStandin, type EmqxRestStandinOptions } from './emqx-rest-standin.js'
import { createDatabase, type TestDatabase } from './postgres.js'

/** EMQX node names: replica i hears node NODES[i] on its own channel. */
export const NODES = ['n1@emqx.test', 'n2@emqx.test', 'n3@emqx.test'] as const
const REPLICA_NAMES = ['A', 'B', 'C'] as const

export type { TestDatabase }

/** A database of its own for one replica set: `iothub_replicas_<pid>_<n>`. */
export function createTestDatabase(): Promise<TestDatabase> {
  return createDatabase('iothub_replicas')
}

export interface Replica {
  /** 'A', 'B', 'C' (in a oneHub run, each names the one hub reached from its own node). */
  readonly name: string
  readonly hub: EmqxTestHub
  readonly api: ApiCall
  /** The EMQX node whose ExHook channel lands on this replica. */
  readonly node: string
  /** That node's channel to this replica. */
  readonly exhook: EmqxExhookClient
  /** A channel from any node to this replica (one per node, kept). */
  exhookFrom(node: string): EmqxExhookClient
}

/** One MQTT connection as EMQX knows it: what each of its hooks carries. */
export interface Connection {
  clientid: string
  username: string
  node: string
  peerhost: string
  peerport: number
  /** EMQX's `%u/` mountpoint: the device's topics live under `{deviceId}/`. */
  mountpoint: string
}

export interface ReplicaSet {
  readonly standin: EmqxRestStandin
  readonly db: TestDatabase
  readonly replicas: Replica[]
  /** The tokens of the devices made before the replicas started (options.devices). */
  readonly tokens: ReadonlyMap<string, string>
  /** A new connection of `clientId` (a device id) on `node`, from a peer port no other connection used. */
  connection(clientId: string, node: string): Connection
  /** EMQX accepted `conn`: the broker holds it, then `via` hears client.connected. */
  connect(via: Replica, conn: Connection): Promise<void>
  /** `conn` subscribed to the device topic `topic`: the broker holds it, then `via` hears session.subscribed (mounted). */
  subscribe(via: Replica, conn: Connection, topic: string, qos?: 0 | 1 | 2): Promise<void>
  unsubscribe(via: Replica, conn: Connection, topic: string): Promise<void>
  /** `conn` went away (its clean session with it): the broker forgets it, then `via` hears client.disconnected. */
  disconnect(via: Replica, conn: Connection, reason?: string): Promise<void>
  /**
   * `to` took the client over from `from` with a clean start, as EMQX tells it: the broker
   * holds the new connection (no subscriptions), `toVia` hears its client.connected, then
   * `fromVia` hears the old connection's client.disconnected, reason `discarded`.
   */
  takeover(fromVia: Replica, from: Connection, toVia: Replica, to: Connection): Promise<void>
  /** A device made through `via`'s API (201), with its token. */
  createDevice(via: Replica, id: string): Promise<{ id: string; token: string }>
  stop(): Promise<void>
}

export interface ReplicaSetOptions {
  /** 2 or 3 replicas (or roles, with oneHub). */
  count: number
  db: TestDatabase
  /** One hub plays every replica: the control run. */
  oneHub?: boolean
  /** ExHook protocol of every channel (default v3, which carries the peer port). */
  exhookVersion?: ExhookVersion
  /**
   * Devices made through the first replica before the others start, so every replica loads
   * them from PostgreSQL at its start: a case about sessions or attributes is then not also a
   * case about a device made on another replica (that one is a case of its own).
   */
  devices?: string[]
  /** Settings of every replica beyond the store's (e.g. a short `storeTimeout` for outage cases). */
  overrides?: Partial<HubConfig>
  /** The stand-in's, beyond its version and credentials (e.g. `afterReply`, to act while a replica reads EMQX). */
  standinOptions?: Partial<EmqxRestStandinOptions>
}

/** A replica set on a database of its own, both stopped and dropped when the test ends. */
export async function replicasForTest(t: TestContext, options: Omit<ReplicaSetOptions, 'db'>): Promise<ReplicaSet> {
  const db = await createTestDatabase()
  const set = await startReplicas({ ...options, db }).catch(async (error: unknown) => {
    await db.drop() // startReplicas stopped whatever it had started
    throw error
  })
  // one hook, so the replicas stop before their database is dropped under them
  t.after(async () => {
    await set.stop()
    await db.drop()
  })
  return set
}

export async function startReplicas(options: ReplicaSetOptions): Promise<ReplicaSet> {
  const { count, db } = options
  if (count < 1 || count > NODES.length) throw new Error(`between 1 and ${NODES.length} replicas, not ${count}`)
  const version = options.exhookVersion ?? 'v3'
  const standin = await startEmqxRestStandin({ ...options.standinOptions, version: 5, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET })
  const hubs: EmqxTestHub[] = []
  const tokens = new Map<string, string>()
  const stop = async () => {
    // each hub's own dataDir goes with it; the stand-in is shared, so it goes last
    await Promise.all(hubs.map((h) => h.stop({ keepStandin: true })))
    await standin.close()
  }
  try {
    const overrides = { ...options.overrides, store: 'postgres' as const, databaseUrl: db.url }
    // one after another: each opens (and, the first, creates) the schema, then reconciles
    for (let i = 0; i < (options.oneHub ? 1 : count); i++) {
      hubs.push(await startEmqxTestHub({ version: 5, standin, overrides }))
      if (i === 0) for (const id of options.devices ?? []) tokens.set(id, (await hubs[0]!.createDevice(id)).token)
    }
  } catch (error) {
    await stop()
    throw error
  }

  const replicas = REPLICA_NAMES.slice(0, count).map((name, i): Replica => {
    const hub = hubs[options.oneHub ? 0 : i]!
    const channels = new Map<string, EmqxExhookClient>()
    const exhookFrom = (node: string) => {
      let channel = channels.get(node)
      if (!channel) {
        channel = hub.exhook(version, node) // closed by the hub's stop()
        channels.set(node, channel)
      }
      return channel
    }
    const node = NODES[i]!
    return { name: options.oneHub ? `${name} (one hub)` : name, hub, api: hub.api, node, exhook: exhookFrom(node), exhookFrom }
  })

  let nextPort = 40000
  return {
    standin,
    db,
    replicas,
    tokens,
    connection(clientId, node) {
      return { clientid: clientId, username: clientId, node, peerhost: '127.0.0.1', peerport: nextPort++, mountpoint: `${clientId}/` }
    },
    async connect(via, conn) {
      standin.removeClient(conn.clientid)
      standin.addClient({ clientid: conn.clientid, username: conn.username, node: conn.node, ipAddress: conn.peerhost, port: conn.peerport, mountpoint: conn.mountpoint })
      await via.exhookFrom(conn.node).onClientConnected(conn)
    },
    async subscribe(via, conn, topic, qos = 1) {
      standin.subscribe(conn.clientid, conn.mountpoint + topic, qos).node = conn.node
      await via.exhookFrom(conn.node).onSessionSubscribed(conn, conn.mountpoint + topic, { qos })
    },
    async unsubscribe(via, conn, topic) {
      standin.unsubscribe(conn.clientid, conn.mountpoint + topic)
      await via.exhookFrom(conn.node).onSessionUnsubscribed(conn, conn.mountpoint + topic)
    },
    async disconnect(via, conn, reason = 'normal') {
      standin.removeClient(conn.clientid)
      await via.exhookFrom(conn.node).onClientDisconnected(conn, reason)
    },
    async takeover(fromVia, from, toVia, to) {
      if (from.clientid !== to.clientid) throw new Error(`a takeover is of one client, not ${from.clientid} by ${to.clientid}`)
      // a clean start discards the old session, its subscriptions with it
      standin.removeClient(to.clientid)
      standin.addClient({ clientid: to.clientid, username: to.username, node: to.node, ipAddress: to.peerhost, port: to.peerport, mountpoint: to.mountpoint })
      await toVia.exhookFrom(to.node).onClientConnected(to)
      await fromVia.exhookFrom(from.node).onClientDisconnected(from, 'discarded')
    },
    async createDevice(via, id) {
      const { status, body } = await via.api<{ id: string; token: string }>('POST', '/v1/devices', { id })
      if (status !== 201) throw new Error(`device ${id} not created through ${via.name}: ${status} ${JSON.stringify(body)}`)
      return body
    },
    stop
  }
}
