/**
 * Starts a real hub in EMQX mode for a test: its ExHook gRPC server and HTTP API on ports the OS
 * picks, in front of the EMQX REST stand-in (test/helpers/emqx-rest-standin.ts) — EMQX itself
 * cannot run here. Hook calls come from EmqxExhookClient, which calls as EMQX does, or as
 * WebHook bodies posted to /v1/hooks/emqx.
 *
 * With IOTHUB_TEST_EMQX_REPLICAS=2 (and no store chosen by the test) it starts two replicas on
 * a PostgreSQL database of their own instead, and spreads the test's calls over them: see
 * test/helpers/alternating.ts.
 */
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import type { HubConfig } from '../../src/config.js'
import { Hub } from '../../src/hub.js'
import { createLogger } from '../../src/observability/logger.js'
import type { ExhookVersion } from '../../src/emqx/exhook/protos.js'
import { Alternation, AlternatingExhookClient, createReplicaDatabase, EMQX_REPLICAS, type ReplicaDatabase, type ReplicaEndpoint } from './alternating.js'
import { apiClient, type ApiCall } from './api-client.js'
import { EmqxExhookClient } from './emqx-exhook-client.js'
import { startEmqxRestStandin, type EmqxRestStandin, type EmqxRestStandinOptions } from './emqx-rest-standin.js'
import { tempDir, testConfig } from './hub.js'

export { EMQX_REPLICAS, oneHubOnly } from './alternating.js'

export const WEBHOOK_SECRET = 'a-webhook-secret-for-tests-only'
export const EMQX_KEY = 'iothub-key'
export const EMQX_SECRET = 'iothub-secret'

export interface EmqxTestHub {
  /** The hub (in the replicated run, replica A). */
  hub: Hub
  /** Every replica behind this test hub: [hub] alone, or A and B in the replicated run. */
  replicas: readonly Hub[]
  standin: EmqxRestStandin
  dataDir: string
  /** The hub's (replica A's) API. */
  httpUrl: string
  /** The hub's (replica A's) ExHook server. */
  exhookAddress: string
  api: ApiCall
  /** A gRPC client calling the hub as an EMQX node of `version` does (closed by stop()). */
  exhook(version: ExhookVersion, node?: string): EmqxExhookClient
  /** Posts a WebHook body as EMQX would; `secret` null sends none. */
  webhook(body: unknown, secret?: string | null): Promise<{ status: number; body: unknown }>
  createDevice(id: string): Promise<{ id: string; token: string }>
  /** Waits until /readyz is 200 and says reconciled with EMQX (the first reconcile succeeded) on every replica. */
  ready(timeoutMs?: number): Promise<void>
  /**
   * Stops the hub (and, unless `keepStandin`, the stand-in); the data dir (in the replicated run,
   * the replicas' database too) is kept for a restart when `keepData`.
   */
  stop(options?: { keepData?: boolean; keepStandin?: boolean }): Promise<void>
}

/** Replicated runs' databases kept by stop({ keepData }), by the data dir a restart names. */
const keptDatabases = new Map<string, ReplicaDatabase>()

export async function startEmqxTestHub(
  options: { version?: 4 | 5; standin?: EmqxRestStandin; standinOptions?: Partial<EmqxRestStandinOptions>; dataDir?: string; overrides?: Partial<HubConfig>; waitReady?: boolean } = {}
): Promise<EmqxTestHub> {
  const version = options.version ?? 5
  const standin = options.standin ?? (await startEmqxRestStandin({ version, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET, ...options.standinOptions }))
  const dataDir = options.dataDir ?? tempDir('iothub-emqx-')
  const configIn = (dir: string, store: Partial<HubConfig>) =>
    testConfig(dir, {
      broker: 'emqx',
      emqxApi: standin.url,
      emqxApiKey: EMQX_KEY,
      emqxApiSecret: EMQX_SECRET,
      emqxVersion: version,
      exhookHost: '127.0.0.1',
      exhookPort: 0,
      webhookSecret: WEBHOOK_SECRET,
      ...store,
      ...options.overrides
    })
  // a test that chose its store (postgres-hub, the replica suite) runs as it asked
  const replicated = EMQX_REPLICAS > 1 && options.overrides?.store === undefined && options.overrides?.databaseUrl === undefined

  const endpoints: ReplicaEndpoint[] = []
  let database: ReplicaDatabase | undefined
  if (!replicated) {
    endpoints.push(await startReplica('A', configIn(dataDir, {})))
  } else {
    database = keptDatabases.get(dataDir) ?? (await createReplicaDatabase())
    keptDatabases.delete(dataDir)
    const store = { store: 'postgres' as const, databaseUrl: database.url }
    try {
      // one after another, as a deployment's replicas come up: A creates the schema, and each
      // reconciles at its start. B's data dir lies inside A's, so it goes (or stays) with it.
      endpoints.push(await startReplica('A', configIn(dataDir, store)))
      for (let i = 1; i < EMQX_REPLICAS; i++) endpoints.push(await startReplica('AB'[i]!, configIn(join(dataDir, `replica-${'ab'[i]}`), store)))
    } catch (error) {
      await Promise.all(endpoints.map((e) => e.hub.stop()))
      await database.drop()
      throw error
    }
  }
  const [a] = endpoints as [ReplicaEndpoint]
  const alternation = replicated ? new Alternation(endpoints) : undefined
  const api = alternation?.spreadApi ?? a.api
  const grpcClients: EmqxExhookClient[] = []

  const t: EmqxTestHub = {
    hub: a.hub,
    replicas: endpoints.map((e) => e.hub),
    standin,
    dataDir,
    httpUrl: a.httpUrl,
    exhookAddress: a.exhookAddress,
    api,
    exhook(v, node) {
      const options = { version: v, ...(node ? { node } : {}) }
      const client = alternation ? new AlternatingExhookClient(alternation, options) : new EmqxExhookClient({ ...options, address: a.exhookAddress })
      grpcClients.push(client)
      return client
    },
    webhook(body, secret = WEBHOOK_SECRET) {
      const post = async (replica: ReplicaEndpoint) => {
        const response = await fetch(`${replica.httpUrl}/v1/hooks/emqx`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(secret === null ? {} : { 'x-iothub-webhook-secret': secret }) },
          body: JSON.stringify(body)
        })
        const text = await response.text()
        return { status: response.status, body: text === '' ? null : (JSON.parse(text) as unknown) }
      }
      return alternation ? alternation.hook(post) : post(a)
    },
    async createDevice(id) {
      const { status, body } = await api<{ id: string; token: string }>('POST', '/v1/devices', { id })
      if (status !== 201) throw new Error(`device not created: ${status} ${JSON.stringify(body)}`)
      return body
    },
    async ready(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      for (const replica of endpoints) {
        for (;;) {
          const { status, body } = await replica.api<{ checks?: { emqx?: { detail?: string } } }>('GET', '/readyz', undefined, null)
          // ready once it serves; these tests begin once the start reconcile is done, too
          if (status === 200 && body.checks?.emqx?.detail?.startsWith('reconciled') === true) break
          if (Date.now() > deadline) throw new Error(`hub${replicated ? ` replica ${replica.name}` : ''} not ready: ${JSON.stringify(body)}`)
          await new Promise((resolve) => setTimeout(resolve, 50))
        }
      }
    },
    async stop({ keepData = false, keepStandin = false } = {}) {
      alternation?.stop()
      for (const c of grpcClients) c.close()
      await Promise.all(endpoints.map((e) => e.hub.stop()))
      if (!keepStandin) await standin.close()
      if (keepData) {
        if (database) keptDatabases.set(dataDir, database)
      } else {
        rmSync(dataDir, { recursive: true, force: true })
        await database?.drop()
      }
    }
  }
  if (options.waitReady !== false) await t.ready()
  return t
}

async function startReplica(name: string, config: HubConfig): Promise<ReplicaEndpoint> {
  const hub = await Hub.open(config, { log: createLogger(config.logLevel) })
  const { http, exhook } = await hub.start().catch(async (error: unknown) => {
    await hub.stop()
    throw error
  })
  const httpUrl = `http://127.0.0.1:${http.port}`
  return { name, hub, httpUrl, exhookAddress: `127.0.0.1:${exhook!.port}`, api: apiClient(httpUrl) }
}
