/**
 * The hub's own work per ExHook call, without gRPC: the calls bench/exhook.ts makes through
 * gRPC, made straight into the hub's EmqxSource — the same client facts the ExHook server makes
 * of a ClientInfo, the same registry, store and group commit — with nothing on the wire and no
 * callers' process.
 *
 * Why: the hub/floor target asks how much the hub adds to what grpc-js costs, on a machine whose
 * two cpus the callers share. What the hub adds is this loop's cpu per call; measured here, it
 * is a figure of the code that the VM's swings and the callers do not blur (a round of gRPC calls
 * swings by a tenth from minute to minute, this by a few per cent), to compare builds with and to
 * set beside what the target leaves it (bench/exhook.ts, "what 0.92 leaves the hub").
 *
 * A closed loop as the gRPC rounds run it: `concurrency` clients at a time, each client.connected
 * → session.subscribed (its attributes topic, QoS 1) → client.disconnected (normal), a client's
 * next call made when the previous one is answered.
 */
import type { TopicSubscription } from '../../src/domain/session.js'
import type { EmqxClient } from '../../src/emqx/emqx-client.js'
import { EmqxCarrier } from '../../src/emqx/emqx-carrier.js'
import type { Hub } from '../../src/hub.js'
import { attributesTopic } from './exhook-fleet.js'

/** The node the bench's callers name (test/helpers/emqx-exhook-client.ts' default). */
const NODE = 'emqx@127.0.0.1'

/** The peer port the bench's callers put in a v3 ClientInfo (test/helpers/emqx-exhook-client.ts' default). */
export const V3_PEER_PORT = 50000

/**
 * A client as ExhookServer reads the ClientInfo the bench's callers send (clientid = username,
 * `%u/` mountpoint); `peerPort` only as v3 sends it.
 */
function clientOf(id: string, peerPort: number | undefined): EmqxClient {
  return {
    node: NODE,
    clientId: id,
    username: id,
    protocol: 'mqtt',
    peerHost: '127.0.0.1',
    peerPort,
    sockPort: 1883,
    mountpoint: `${id}/`,
    protoVer: undefined,
    keepalive: undefined,
    cleanStart: undefined,
    expiryInterval: undefined,
    connectedAt: undefined
  }
}

export interface DirectRun {
  calls: number
  wallMs: number
  /** Calls whose event was not applied (stale, failed): the loop is only a measure when there are none. */
  notApplied: number
}

/**
 * Runs `clients` simulated clients' three calls each into the hub's EmqxSource, `concurrency`
 * clients at a time. The loop's own promises and client objects are in what it measures, as the
 * ExHook server's are in a gRPC round.
 */
export async function runDirect(hub: Hub, prefix: string, clients: number, concurrency: number, peerPort?: number): Promise<DirectRun> {
  if (!(hub.carrier instanceof EmqxCarrier)) throw new Error('the direct ExHook loop needs a hub in EMQX mode')
  const source = hub.carrier.source
  let notApplied = 0
  const count = (result: { applied: boolean }): void => {
    if (!result.applied) notApplied++
  }
  const client = async (id: string): Promise<void> => {
    // a new client object per call, as the ExHook server makes one of each call's ClientInfo
    count(await source.connected(clientOf(id, peerPort)))
    const subscription: TopicSubscription = { topic: attributesTopic(id), qos: 1, rh: 0, rap: false, nl: false }
    count(await source.subscribed(clientOf(id, peerPort), [subscription]))
    count(await source.disconnected(clientOf(id, peerPort), 'normal'))
  }
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < clients) await client(`${prefix}-${next++}`)
  }
  const started = performance.now()
  await Promise.all(Array.from({ length: Math.min(concurrency, clients) }, lane))
  return { calls: clients * 3, wallMs: performance.now() - started, notApplied }
}
