/**
 * The brokers the socket benchmarks compare, started in this process on 127.0.0.1 and a
 * free port: the hub (Aedes + session registry + SQLite store, as `npm start` runs it, with
 * auth none — or, for the fan-out bench, the default token auth — and logs silenced) and bare
 * Aedes with its default in-memory persistence.
 */
import { createServer as createHttpServer } from 'node:http'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { Aedes, type AedesOptions, type Client } from 'aedes'
import { loadConfig, type HubConfig } from '../../src/config.js'
import { Hub } from '../../src/hub.js'
import { DurableFloor } from './durable-floor.js'
import { removeDir, tempDir } from './util.js'

/** Aedes' table of connected clients: public in its JavaScript, not in its types. */
export type AedesClients = Record<string, Client & { subscriptions: Record<string, unknown> }>

export interface Target {
  name: 'hub' | 'bare' | 'floor' | 'durable'
  url: string
  /** The hub's HTTP API (`http://127.0.0.1:port`); null for bare Aedes. */
  httpUrl: string | null
  aedes: Aedes
  /** The hub, when the target is one. */
  hub: Hub | null
  /** Clients Aedes counts as connected. */
  brokerClients(): number
  /** The threads its store runs on (the hub's SQLite writer and checkpointer, the durable floor's writer), as far as they have said their ids; none for bare Aedes. */
  storeThreadIds(): number[]
  stop(): Promise<void>
}

export function aedesClients(aedes: Aedes): AedesClients {
  return (aedes as Aedes & { clients: AedesClients }).clients
}

function connectedCount(aedes: Aedes): number {
  return (aedes as Aedes & { connectedClients: number }).connectedClients
}

/** BENCH_STORE_SYNC=normal runs the hub without an fsync per batch (diagnosis only). */
export function benchStoreSync(): 'full' | 'normal' {
  const raw = process.env.BENCH_STORE_SYNC ?? 'full'
  if (raw !== 'full' && raw !== 'normal') throw new Error(`BENCH_STORE_SYNC must be full or normal, got "${raw}"`)
  return raw
}

/** `auth: 'token'` (the hub's default) makes clients log in as a device: username = id, password = token. */
export async function startHub(options: { auth?: 'none' | 'token'; config?: Partial<HubConfig> } = {}): Promise<Target> {
  const dataDir = tempDir('iothub-bench-hub-')
  const config = loadConfig({}, [], {
    dataDir,
    mqttPort: 0,
    httpPort: 0,
    coapPort: 0,
    coapHost: '127.0.0.1',
    mqttHost: '127.0.0.1',
    auth: options.auth ?? 'none',
    logLevel: 'silent',
    storeSync: benchStoreSync(),
    // every simulated device connects from 127.0.0.1: the per-address limit on connections that
    // have not sent their CONNECT (100 by default, for a real fleet's many addresses) would refuse
    // the load generator's own concurrency (BENCH_CONCURRENCY, 200) whenever the hub is busy
    maxPendingConnectionsPerAddress: 100_000,
    ...options.config
  })
  const hub = new Hub(config)
  const { mqtt, http } = await hub.start()
  const aedes = hub.broker!.aedes
  return {
    name: 'hub',
    url: `mqtt://127.0.0.1:${mqtt!.port}`,
    httpUrl: `http://127.0.0.1:${http.port}`,
    aedes,
    hub,
    brokerClients: () => connectedCount(aedes),
    storeThreadIds: () => (hub.store.threads?.() ?? []).map((t) => t.threadId),
    async stop() {
      await hub.stop()
      removeDir(dataDir)
    }
  }
}

export async function startBareAedes(options: AedesOptions = {}): Promise<Target> {
  const aedes = new Aedes(options)
  await aedes.listen()
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    aedes.handle(socket)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo
  return {
    name: 'bare',
    url: `mqtt://127.0.0.1:${port}`,
    httpUrl: null,
    aedes,
    hub: null,
    brokerClients: () => connectedCount(aedes),
    storeThreadIds: () => [],
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      await new Promise<void>((resolve) => aedes.close(() => resolve()))
      for (const socket of sockets) socket.destroy()
      await closed
    }
  }
}

/**
 * The floor of the fan-out benchmark: bare Aedes behind the least an HTTP API can be — node's
 * HTTP server, no framework, no auth, no store — publishing each `PATCH
 * /v1/devices/{id}/attributes` body QoS 1 on `{id}/v1/devices/me/attributes` and answering
 * `{"pushedTo":[id]}` once Aedes has routed it. What any hub pays for one HTTP request per push.
 *
 * With `durable`, its durable floor: each body is first stored as one durable row (its device id
 * and attributes, group-committed on a writer thread with the hub's store settings,
 * durable-floor.ts), then published — what any hub that stores a change before pushing it pays.
 */
export async function startHttpFloor(options: { durable?: boolean } = {}): Promise<Target> {
  const bare = await startBareAedes()
  const dataDir = options.durable ? tempDir('iothub-bench-durable-floor-') : null
  const store = dataDir ? new DurableFloor(dataDir) : null
  await store?.started
  const path = /^\/v1\/devices\/([^/]+)\/attributes$/
  const http = createHttpServer((req, res) => {
    const id = path.exec(req.url ?? '')?.[1]
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      if (req.method !== 'PATCH' || id === undefined) {
        res.writeHead(404).end()
        return
      }
      const payload = Buffer.concat(chunks)
      const packet = { cmd: 'publish' as const, topic: `${id}/v1/devices/me/attributes`, payload, qos: 1 as const, retain: false, dup: false }
      const publish = () =>
        bare.aedes.publish(packet, (error) => {
          const body = error ? JSON.stringify({ message: error.message }) : `{"pushedTo":["${id}"]}`
          res.writeHead(error ? 500 : 200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
        })
      if (store) void store.append({ deviceId: id, attributes: payload.toString() }).then(publish)
      else publish()
    })
  })
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', () => resolve()))
  return {
    ...bare,
    name: store ? 'durable' : 'floor',
    httpUrl: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    storeThreadIds: () => (store === null || store.threadId === null ? [] : [store.threadId]),
    async stop() {
      http.closeAllConnections()
      await new Promise<void>((resolve) => http.close(() => resolve()))
      await bare.stop()
      await store?.close()
      if (dataDir) removeDir(dataDir)
    }
  }
}

/**
 * The durable floor of the connect storm: bare Aedes that stores each of a client's lifecycle
 * events as one durable row before it goes on — the CONNECT before its CONNACK, a SUBSCRIBE's
 * topics (one row per packet, as the hub records them) before its SUBACK, the end once the
 * connection is gone — and nothing else: no registry, sessions, topics, entities or change log.
 * Rows are group-committed on a writer thread with the hub's store settings (durable-floor.ts).
 * What storing every event before answering costs at least on this machine, which no hub
 * that keeps its sessions durable can undercut. Its client count includes ends not yet durable,
 * as the hub's registry holds a session until its end is stored.
 */
export async function startDurableAedes(): Promise<Target> {
  const dataDir = tempDir('iothub-bench-durable-aedes-')
  const floor = new DurableFloor(dataDir)
  await floor.started
  const subscribing = new Map<Client, { topics: string[]; answers: (() => void)[] }>()
  let endsInFlight = 0
  const bare = await startBareAedes({
    authenticate(client, _username, _password, done) {
      floor.append({ op: 'connect', clientId: client.id }).then(() => done(null, true), () => done(null, false))
    },
    authorizeSubscribe(client, sub, done) {
      // Aedes asks topic by topic, in one synchronous loop per SUBSCRIBE: one row for the packet
      let packet = subscribing.get(client)
      if (!packet) {
        const gathered = { topics: [] as string[], answers: [] as (() => void)[] }
        subscribing.set(client, gathered)
        packet = gathered
        queueMicrotask(() => {
          subscribing.delete(client)
          void floor.append({ op: 'subscribe', clientId: client.id, topics: gathered.topics }).then(() => {
            for (const answer of gathered.answers) answer()
          })
        })
      }
      packet.topics.push(sub.topic)
      packet.answers.push(() => done(null, sub))
    }
  })
  bare.aedes.on('clientDisconnect', (client) => {
    endsInFlight++
    void floor.append({ op: 'end', clientId: client.id }).then(() => endsInFlight--)
  })
  return {
    ...bare,
    name: 'durable',
    brokerClients: () => bare.brokerClients() + endsInFlight,
    storeThreadIds: () => (floor.threadId === null ? [] : [floor.threadId]),
    async stop() {
      await bare.stop()
      await floor.close()
      removeDir(dataDir)
    }
  }
}

export function startTarget(name: 'hub' | 'bare' | 'durable'): Promise<Target> {
  return name === 'hub' ? startHub() : name === 'durable' ? startDurableAedes() : startBareAedes()
}

/** The hub's group-commit totals, from its own Prometheus histograms. */
export interface CommitTotals {
  transactions: number
  commits: number
  seconds: number
}

export async function commitTotals(hub: Hub | null): Promise<CommitTotals | null> {
  if (!hub) return null
  const sum = async (h: typeof hub.metrics.batchCommits, suffix: '_sum' | '_count') =>
    (await h.get()).values.find((v) => v.metricName?.endsWith(suffix))?.value ?? 0
  return {
    transactions: await sum(hub.metrics.batchCommits, '_count'),
    commits: await sum(hub.metrics.batchCommits, '_sum'),
    seconds: await sum(hub.metrics.commitSeconds, '_sum')
  }
}
