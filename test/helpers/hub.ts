/**
 * Starts a real hub in this process for a test: its own temporary data dir, MQTT and HTTP on
 * ports the OS picks, logs silenced (set IOTHUB_TEST_LOG=debug to see them).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { DEFAULT_API_PASSWORD, DEFAULT_API_USER, loadConfig, type HubConfig } from '../../src/config.js'
import { Hub } from '../../src/hub.js'
import { createLogger } from '../../src/observability/logger.js'
import { apiClient, type ApiCall } from './api-client.js'

export interface TestHub {
  hub: Hub
  dataDir: string
  mqttUrl: string
  /** `mqtts://…` when the hub has a TLS listener. */
  mqttsUrl?: string
  /** `https://…` when the API serves HTTPS (the api client then trusts the hub's CA). */
  httpUrl: string
  api: ApiCall
  createDevice(input?: Record<string, unknown>): Promise<{ id: string; token: string }>
  connect(options?: IClientOptions): Promise<MqttClient>
  stop(): Promise<void>
}

export function tempDir(prefix = 'iothub-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export function testConfig(dataDir: string, overrides: Partial<HubConfig> = {}): HubConfig {
  return loadConfig({}, [], {
    dataDir,
    mqttHost: '127.0.0.1',
    mqttPort: 0,
    httpPort: 0,
    coapHost: '127.0.0.1',
    coapPort: 0,
    node: 'iothub@test',
    logLevel: (process.env.IOTHUB_TEST_LOG as HubConfig['logLevel']) ?? 'silent',
    ...overrides
  })
}

export { BASIC_ADMIN } from './api-client.js'

/**
 * The MQTT login of a superuser: the HTTP API credentials (the defaults, unless `config` says
 * otherwise). A superuser has no mountpoint: it publishes to `{deviceId}/<topic>` to reach a
 * device subscribed to `<topic>`, and subscribes to devices' topics as the broker routes them.
 */
export function superuserLogin(config: Pick<HubConfig, 'apiUser' | 'apiPassword'> = { apiUser: DEFAULT_API_USER, apiPassword: DEFAULT_API_PASSWORD }): {
  username: string
  password: string
} {
  return { username: config.apiUser, password: config.apiPassword }
}

export async function startTestHub(overrides: Partial<HubConfig> = {}, dataDir = tempDir()): Promise<TestHub> {
  const config = testConfig(dataDir, overrides)
  const hub = await Hub.open(config, { log: createLogger(config.logLevel) })
  const { mqtt: mqttAddress, mqtts, http } = await hub.start()
  const mqttUrl = `mqtt://127.0.0.1:${mqttAddress!.port}`
  const httpUrl = `${hub.apiUsesTls ? 'https' : 'http'}://127.0.0.1:${http.port}`
  const clients: MqttClient[] = []

  // a test's certificate is self-signed, or signed by the CA it configures
  const ca = hub.apiUsesTls ? readFileSync(config.tlsCa || config.tlsCert, 'utf8') : undefined
  const api = apiClient(httpUrl, `Basic ${Buffer.from(`${config.apiUser}:${config.apiPassword}`).toString('base64')}`, { ca })

  return {
    hub,
    dataDir,
    mqttUrl,
    ...(mqtts ? { mqttsUrl: `mqtts://127.0.0.1:${mqtts.port}` } : {}),
    httpUrl,
    api,
    async createDevice(input = {}) {
      const { status, body } = await api<{ id: string; token: string }>('POST', '/v1/devices', input)
      if (status !== 201) throw new Error(`device not created: ${status} ${JSON.stringify(body)}`)
      return body
    },
    async connect(options = {}) {
      const client = await connectClient(mqttUrl, options)
      clients.push(client)
      return client
    },
    async stop() {
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)))
      await hub.stop()
      rmSync(dataDir, { recursive: true, force: true })
    }
  }
}

/** Connects an mqtt.js client and waits for CONNACK; rejects with the broker's refusal. */
export function connectClient(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options })
    client.once('connect', () => {
      client.removeAllListeners('error')
      client.on('error', () => undefined)
      resolve(client)
    })
    client.once('error', (error) => {
      client.end(true)
      reject(error)
    })
  })
}

/** Polls `check` until it returns a value other than undefined/false, or fails after `ms`. */
export async function eventually<T>(check: () => T | Promise<T>, ms = 5000, what = 'condition'): Promise<Exclude<T, undefined | false>> {
  const deadline = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value as Exclude<T, undefined | false>
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
