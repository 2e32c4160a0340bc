/**
 * Starts a real hub in EMQX mode for a test: its ExHook gRPC server and HTTP API on ports the OS
 * picks, in front of the EMQX REST stand-in (test/helpers/emqx-rest-standin.ts) — EMQX itself
 * cannot run here. Hook calls come from EmqxExhookClient, which calls as EMQX does, or as
 * WebHook bodies posted to /v1/hooks/emqx.
 */
import { rmSync } from 'node:fs'
import type { HubConfig } from '../../src/config.js'
import { Hub } from '../../src/hub.js'
import { createLogger } from '../../src/observability/logger.js'
import type { ExhookVersion } from '../../src/emqx/exhook/protos.js'
import { apiClient, type ApiCall } from './api-client.js'
import { EmqxExhookClient } from './emqx-exhook-client.js'
import { startEmqxRestStandin, type EmqxRestStandin, type EmqxRestStandinOptions } from './emqx-rest-standin.js'
import { tempDir, testConfig } from './hub.js'

export const WEBHOOK_SECRET = 'a-webhook-secret-for-tests-only'
export const EMQX_KEY = 'iothub-key'
export const EMQX_SECRET = 'iothub-secret'

export interface EmqxTestHub {
  hub: Hub
  standin: EmqxRestStandin
  dataDir: string
  httpUrl: string
  exhookAddress: string
  api: ApiCall
  /** A gRPC client calling the hub as an EMQX node of `version` does (closed by stop()). */
  exhook(version: ExhookVersion, node?: string): EmqxExhookClient
  /** Posts a WebHook body as EMQX would; `secret` null sends none. */
  webhook(body: unknown, secret?: string | null): Promise<{ status: number; body: unknown }>
  createDevice(id: string): Promise<{ id: string; token: string }>
  /** Waits until /readyz is 200 (the first reconcile succeeded). */
  ready(timeoutMs?: number): Promise<void>
  /** Stops the hub (and, unless `keepStandin`, the stand-in); the data dir is kept for a restart when `keepData`. */
  stop(options?: { keepData?: boolean; keepStandin?: boolean }): Promise<void>
}

export async function startEmqxTestHub(
  options: { version?: 4 | 5; standin?: EmqxRestStandin; standinOptions?: Partial<EmqxRestStandinOptions>; dataDir?: string; overrides?: Partial<HubConfig>; waitReady?: boolean } = {}
): Promise<EmqxTestHub> {
  const version = options.version ?? 5
  const standin = options.standin ?? (await startEmqxRestStandin({ version, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET, ...options.standinOptions }))
  const dataDir = options.dataDir ?? tempDir('iothub-emqx-')
  const config = testConfig(dataDir, {
    broker: 'emqx',
    emqxApi: standin.url,
    emqxApiKey: EMQX_KEY,
    emqxApiSecret: EMQX_SECRET,
    emqxVersion: version,
    exhookHost: '127.0.0.1',
    exhookPort: 0,
    webhookSecret: WEBHOOK_SECRET,
    ...options.overrides
  })
  const hub = await Hub.open(config, { log: createLogger(config.logLevel) })
  const { http, exhook } = await hub.start()
  const httpUrl = `http://127.0.0.1:${http.port}`
  const exhookAddress = `127.0.0.1:${exhook!.port}`
  const api = apiClient(httpUrl)
  const grpcClients: EmqxExhookClient[] = []

  const t: EmqxTestHub = {
    hub,
    standin,
    dataDir,
    httpUrl,
    exhookAddress,
    api,
    exhook(v, node) {
      const client = new EmqxExhookClient({ address: exhookAddress, version: v, ...(node ? { node } : {}) })
      grpcClients.push(client)
      return client
    },
    async webhook(body, secret = WEBHOOK_SECRET) {
      const response = await fetch(`${httpUrl}/v1/hooks/emqx`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(secret === null ? {} : { 'x-iothub-webhook-secret': secret }) },
        body: JSON.stringify(body)
      })
      const text = await response.text()
      return { status: response.status, body: text === '' ? null : (JSON.parse(text) as unknown) }
    },
    async createDevice(id) {
      const { status, body } = await api<{ id: string; token: string }>('POST', '/v1/devices', { id })
      if (status !== 201) throw new Error(`device not created: ${status} ${JSON.stringify(body)}`)
      return body
    },
    async ready(timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const { status, body } = await api('GET', '/readyz', undefined, null)
        if (status === 200) return
        if (Date.now() > deadline) throw new Error(`hub not ready: ${JSON.stringify(body)}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    },
    async stop({ keepData = false, keepStandin = false } = {}) {
      for (const c of grpcClients) c.close()
      await hub.stop()
      if (!keepStandin) await standin.close()
      if (!keepData) rmSync(dataDir, { recursive: true, force: true })
    }
  }
  if (options.waitReady !== false) await t.ready()
  return t
}
