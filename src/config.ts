/**
 * One typed, validated configuration object, from `IOTHUB_*` environment variables and the
 * matching CLI flags (`--mqtt-port` for `IOTHUB_MQTT_PORT`); a flag wins over the environment.
 * A bad value stops the hub at start with a message naming the variable — never a silent default.
 */
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import { EVENT_TYPES, isEventType, type EventType } from './domain/event-types.js'

/**
 * How long a push's publish may take, its tries included (ms), unless configured
 * (`IOTHUB_PUSH_TIMEOUT`). A push is published in its device's turn (devices/device-properties.ts),
 * which the device's own upstream data waits for — and EMQX's ExHook waits 5 s for the hub's
 * answer to a device's publish by default, then refuses it. A push the broker did not take in time
 * is kept and tried again (devices/kept-pushes.ts).
 */
export const PUSH_WITHIN_MS = 2500
/** Default of `pushRetryInterval`: between tries of the pushes the broker refused, ms. */
export const PUSH_RETRY_MS = 10_000
/**
 * Default of `commandExpiry`, s: a command (raw push) the broker has not taken an hour after it
 * was sent is not sent any more — as a cloud-to-device message's default lifetime elsewhere.
 */
export const COMMAND_EXPIRY_S = 3600

export interface HubConfig {
  mqttHost: string
  /** 0 picks a free port; the chosen one is logged and reported by the API. */
  mqttPort: number
  httpHost: string
  httpPort: number
  dataDir: string
  /** `token`: username = device id, password = its token. `none`: anyone may connect. */
  auth: 'token' | 'none'
  /** Seconds a disconnected persistent session is kept (EMQX's default is 7200). */
  sessionExpiry: number
  apiUser: string
  apiPassword: string
  /** Accepted as `Authorization: Bearer <token>` beside Basic auth; '' turns Bearer off. */
  apiToken: string
  /** This hub's name in session entities (`node`), as EMQX names its nodes. */
  node: string
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
  /** `full` fsyncs every batch (survives power loss); `normal` survives a process crash only. */
  storeSync: 'full' | 'normal'
  /** Milliseconds a store write waits for a lock another process holds (a backup, say). */
  storeBusyTimeout: number
  /** Largest MQTT packet accepted, in bytes (EMQX's default max_packet_size is 1 MB). */
  maxPacketSize: number
  /** Longest topic accepted in SUBSCRIBE or PUBLISH, in characters. */
  maxTopicLength: number
  /** Most levels a topic may have. */
  maxTopicLevels: number
  /** Longest client id accepted, in characters. */
  maxClientIdLength: number
  /** Seconds between sweeps that end expired persistent sessions. */
  expirySweepInterval: number
  /** `embedded`: our own Aedes broker. `emqx`: an EMQX cluster carries the connections (no MQTT listener here). */
  broker: 'embedded' | 'emqx'
  /** `sqlite`: one file in `dataDir`. `postgres`: `databaseUrl`, shared by every hub replica. */
  store: 'sqlite' | 'postgres'
  /** PostgreSQL connection string (`postgres://user@host:5432/db`); required with `store: postgres`. */
  databaseUrl: string
  /** EMQX's management API base URL (`http://emqx:18083` for v5, `http://emqx:8081` for v4); required in emqx mode. */
  emqxApi: string
  /** EMQX 4's AppID or EMQX 5's API key, with its secret: Basic auth on the management API. */
  emqxApiKey: string
  emqxApiSecret: string
  emqxVersion: 4 | 5
  exhookHost: string
  /** The ExHook gRPC server's port (EMQX's default exhook URL is http://127.0.0.1:9000); 0 picks a free one. */
  exhookPort: number
  /** Shared secret EMQX's WebHook sends in the `x-iothub-webhook-secret` header; '' turns the receiver off. */
  webhookSecret: string
  /** Seconds between reconciles with the broker's REST API (emqx mode). */
  reconcileInterval: number
  /** Seconds the change log keeps an entry (a live replica that has not applied it keeps it longer). */
  logRetain: number
  /** Most change-log entries kept, newest first (same exception). */
  logRetainEntries: number
  /** Sessions a replica keeps in memory where the store is shared (PostgreSQL); the rest are read when needed. */
  cacheSessions: number
  /** Devices (and their properties) a replica keeps in memory where the store is shared. */
  cacheDevices: number
  coapHost: string
  /** UDP port of the CoAP gateway (embedded mode); 0 picks a free one. */
  coapPort: number
  /** Seconds between a CoAP client's heartbeats; silent for 1.5 × that, its session ends (EMQX's default is 30). */
  coapHeartbeat: number
  /** Milliseconds before a confirmable CoAP message is first sent again (RFC 7252's ACK_TIMEOUT, 2 s). */
  coapAckTimeout: number

  // ── limits on what one device (and all of them) can make the hub hold ──
  /** Most topics one session may subscribe to (MQTT) or observe (CoAP). */
  maxSubscriptionsPerSession: number
  /** Most sessions (connected or kept offline) one device may hold at once. */
  maxSessionsPerDevice: number
  /** Most connects (right credentials) of one device within a minute; the next bans it for `flappingBan` ms. 0: no limit. */
  maxConnectsPerDevice: number
  /** Ms a flapping device's connects are refused for. */
  flappingBan: number
  /** Most MQTT connections the hub holds at once (lowered at start to fit the open-file limit). */
  maxConnections: number
  /** Most new MQTT connections accepted per second, hub-wide (a burst of as many is allowed). */
  maxConnectRate: number
  /** Milliseconds a new MQTT connection may take to send its CONNECT. */
  connectTimeout: number
  /** Bytes waiting to be written to one connection past which it is a slow consumer and is closed. */
  maxInflightBytes: number
  /** Milliseconds a connection's socket may stay full before it is closed as a slow consumer. */
  slowConsumerTimeout: number
  /** Connections one client address may hold that have not sent their CONNECT yet. */
  maxPendingConnectionsPerAddress: number
  /** PUBLISH, SUBSCRIBE and UNSUBSCRIBE packets (CoAP: requests on /ps) per second one connection may send; 0: no limit (embedded/inbound-rate.ts). */
  maxMessageRate: number
  /** Bytes per second of those packets (CoAP: of those requests' topics and payloads); 0: no limit. */
  maxByteRate: number
  // ── retained messages and offline queues bounded (issue 11) ──
  /** Most retained messages one device's publishes may hold (0: devices retain nothing). */
  maxRetainedPerDevice: number
  /** Most bytes (topic + payload) of one device's retained messages. */
  maxRetainedBytesPerDevice: number
  /** Most retained messages on the whole hub, whoever published them. */
  maxRetained: number
  /** Most bytes (topic + payload) of retained messages on the whole hub. */
  maxRetainedBytes: number
  /** Most messages queued for one persistent session; beyond, the oldest are dropped. */
  maxQueuedPerSession: number
  /** Most bytes (topic + payload) queued for one persistent session; beyond, the oldest are dropped. */
  maxQueuedBytesPerSession: number
  // ── bad input against the hub: parsing limits, the login throttle, slow HTTP requests ──
  /** Deepest nesting of arrays and objects taken in a JSON payload or API body. */
  maxJsonDepth: number
  /** Wrong logins a key (client address, device id) may make within a minute before it is throttled. */
  loginFailuresAllowed: number
  /** First wait, in ms, a throttled key is given (at most `loginBackoffMax`). */
  loginBackoffFirst: number
  /** Longest wait, in ms, a throttled key is given; each further failure doubles the wait up to this. */
  loginBackoffMax: number
  /** Most keys the login throttle remembers; those that failed longest ago are forgotten first. */
  loginThrottleKeys: number
  /** Ms an HTTP request may take to arrive, headers and body; a slower one is answered 408 and closed. */
  httpRequestTimeout: number
  // ── the event stream, GET /v1/events (issue 14) ──
  /** Seconds between heartbeat comments on an event stream. */
  eventsHeartbeat: number
  /** Bytes of events that may wait in one event stream's socket before its consumer is closed as slow. */
  eventsBuffer: number
  /** Where events are POSTed as they are committed ('' turns webhooks out off). */
  eventsWebhookUrl: string
  /** Key of the HMAC-SHA256 signature of each webhook body (required with a URL). */
  eventsWebhookSecret: string
  /** Event types the webhook gets (all when empty). */
  eventsWebhookTypes: readonly EventType[]
  /** Most events in one webhook POST. */
  eventsWebhookBatch: number
  /** Milliseconds a webhook POST may take before it counts as failed and is sent again. */
  eventsWebhookTimeout: number
  /** Longest wait between retries of a failed webhook POST, ms (the wait doubles from 500 ms up to it). */
  eventsWebhookBackoffMax: number
  /** `on`: events are published on `$iothub/events/{type}/{clientId}`; `auto`: on in embedded mode, off in EMQX mode. */
  eventsMqtt: 'on' | 'off'
  /** Event types published on MQTT. */
  eventsMqttTypes: readonly EventType[]
  // ── outages (issue 11): the store's deadline ──
  /** Milliseconds any store call (commit, probe) may take before its caller is refused. */
  storeTimeout: number
  /** EMQX mode: ms a push's publish may take, its tries included, before it is kept and tried again (devices/dispatcher.ts); the embedded broker's is local. */
  pushTimeout: number
  /** Most commands (raw pushes) of one device that may wait for the broker in this process; more are refused (devices/dispatcher.ts). */
  pushBacklog: number
  /** Ms between tries of the pushes the broker refused (devices/kept-pushes.ts) and, in EMQX mode, between looks for those of runs that are over (emqx/push-replay.ts). */
  pushRetryInterval: number
  /** Seconds after which a command (raw push) the broker has not taken is dropped, not published; 0: never. */
  commandExpiry: number
  // --- encryption in transit (TLS) ---
  mqttsHost: string
  /** MQTT over TLS; listens only when `tlsCert` and `tlsKey` are set. 0 picks a free port. */
  mqttsPort: number
  /** PEM file of the server certificate (and its chain); '' turns TLS off. Reloaded when it changes. */
  tlsCert: string
  /** PEM file of the certificate's private key (unencrypted). */
  tlsKey: string
  /** PEM file of CA certificates sent with the chain; '' for none. */
  tlsCa: string
  /** `auto`: the API serves HTTPS when a certificate is configured; `off`: plain HTTP always. */
  apiTls: 'auto' | 'off'
  /** Milliseconds a TLS client has to finish its handshake before its socket is closed. */
  tlsHandshakeTimeout: number
}

export const DEFAULT_API_USER = 'admin'
export const DEFAULT_API_PASSWORD = 'public'

interface Option<K extends keyof HubConfig> {
  key: K
  env: string
  flag: string
  parse: (raw: string, name: string) => HubConfig[K]
  fallback: () => HubConfig[K]
  help: string
}

const port = (raw: string, name: string): number => integer(raw, name, 0, 65535)

function integer(raw: string, name: string, min: number, max: number): number {
  const n = Number(raw)
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${raw}"`)
  }
  return n
}

function oneOf<T extends string>(values: readonly T[]) {
  return (raw: string, name: string): T => {
    if (!(values as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${raw}"`)
    return raw as T
  }
}

function text(raw: string, name: string): string {
  if (raw.length === 0) throw new ConfigError(`${name} must not be empty`)
  return raw
}

function bearerToken(raw: string, name: string): string {
  // a guessable token would open the whole API
  if (raw.length < 16) throw new ConfigError(`${name} must be at least 16 characters`)
  if (!/^[\x21-\x7e]+$/.test(raw)) throw new ConfigError(`${name} must be printable ASCII without spaces`)
  return raw
}

function filePath(raw: string, name: string): string {
  return resolve(text(raw, name))
}

function httpUrl(raw: string, name: string): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError(`${name} must be a URL like http://emqx:18083, got "${raw}"`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${name} must be an http or https URL, got "${raw}"`)
  return raw.replace(/\/+$/, '')
}

function postgresUrl(raw: string, name: string): string {
  if (!/^postgres(ql)?:\/\//.test(raw)) throw new ConfigError(`${name} must be a postgres:// connection string, got "${raw.replace(/:[^:@/]*@/, ':***@')}"`)
  return raw
}

function webhookSecret(raw: string, name: string): string {
  // it alone guards the hook receiver: a short one would be guessed
  if (raw.length < 16) throw new ConfigError(`${name} must be at least 16 characters`)
  return raw
}

function webhookUrl(raw: string, name: string): string {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    throw new ConfigError(`${name} must be a URL like https://platform.example/iothub-events, got "${raw}"`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${name} must be an http or https URL, got "${raw}"`)
  return raw
}

function eventTypes(raw: string, name: string): EventType[] {
  const names = raw.split(',').map((t) => t.trim())
  const unknown = names.filter((n) => !isEventType(n))
  if (unknown.length > 0) throw new ConfigError(`${name} names no event type: ${unknown.join(', ')} (known: ${EVENT_TYPES.join(', ')})`)
  return names as EventType[]
}

/** What MQTT presence topics carry unless told: presence, the session events. */
export const PRESENCE_TYPES: readonly EventType[] = EVENT_TYPES.filter((t) => t.startsWith('session.'))

const OPTIONS = [
  { key: 'mqttHost', env: 'IOTHUB_MQTT_HOST', flag: 'mqtt-host', parse: text, fallback: () => '0.0.0.0', help: 'MQTT listen address' },
  { key: 'mqttPort', env: 'IOTHUB_MQTT_PORT', flag: 'mqtt-port', parse: port, fallback: () => 1883, help: 'MQTT TCP port (0 = any free)' },
  { key: 'httpHost', env: 'IOTHUB_HTTP_HOST', flag: 'http-host', parse: text, fallback: () => '0.0.0.0', help: 'HTTP API listen address (loopback while the default API credentials are in use)' },
  { key: 'httpPort', env: 'IOTHUB_HTTP_PORT', flag: 'http-port', parse: port, fallback: () => 8081, help: 'HTTP API port (0 = any free)' },
  { key: 'dataDir', env: 'IOTHUB_DATA_DIR', flag: 'data-dir', parse: (raw: string, name: string) => resolve(text(raw, name)), fallback: () => resolve('data'), help: 'folder of the SQLite store' },
  { key: 'auth', env: 'IOTHUB_AUTH', flag: 'auth', parse: oneOf(['token', 'none'] as const), fallback: () => 'token' as const, help: 'token: username = device id, password = token; none: accept anyone' },
  { key: 'sessionExpiry', env: 'IOTHUB_SESSION_EXPIRY', flag: 'session-expiry', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 31), fallback: () => 7200, help: 'seconds a disconnected persistent session is kept' },
  { key: 'apiUser', env: 'IOTHUB_API_USER', flag: 'api-user', parse: text, fallback: () => DEFAULT_API_USER, help: 'HTTP API Basic auth user' },
  { key: 'apiPassword', env: 'IOTHUB_API_PASSWORD', flag: 'api-password', parse: text, fallback: () => DEFAULT_API_PASSWORD, help: 'HTTP API Basic auth password' },
  { key: 'apiToken', env: 'IOTHUB_API_TOKEN', flag: 'api-token', parse: bearerToken, fallback: () => '', help: 'HTTP API Bearer token (as tKeel clients send; off when unset)' },
  { key: 'node', env: 'IOTHUB_NODE', flag: 'node', parse: text, fallback: () => `iothub@${hostname()}`, help: "this hub's node name" },
  { key: 'logLevel', env: 'IOTHUB_LOG_LEVEL', flag: 'log-level', parse: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const), fallback: () => 'info' as const, help: 'log level' },
  { key: 'storeSync', env: 'IOTHUB_STORE_SYNC', flag: 'store-sync', parse: oneOf(['full', 'normal'] as const), fallback: () => 'full' as const, help: 'full: fsync every batch; normal: survive process crashes only' },
  { key: 'storeBusyTimeout', env: 'IOTHUB_STORE_BUSY_TIMEOUT', flag: 'store-busy-timeout', parse: (raw: string, name: string) => integer(raw, name, 0, 600_000), fallback: () => 5000, help: 'ms a write waits for a lock held by another process' },
  { key: 'maxPacketSize', env: 'IOTHUB_MAX_PACKET_SIZE', flag: 'max-packet-size', parse: (raw: string, name: string) => integer(raw, name, 64, 268_435_455), fallback: () => 1_048_576, help: 'largest MQTT packet in bytes' },
  { key: 'maxTopicLength', env: 'IOTHUB_MAX_TOPIC_LENGTH', flag: 'max-topic-length', parse: (raw: string, name: string) => integer(raw, name, 1, 65535), fallback: () => 1024, help: 'longest topic in characters' },
  { key: 'maxTopicLevels', env: 'IOTHUB_MAX_TOPIC_LEVELS', flag: 'max-topic-levels', parse: (raw: string, name: string) => integer(raw, name, 1, 100), fallback: () => 32, help: 'most levels in a topic (at most 100)' },
  { key: 'maxClientIdLength', env: 'IOTHUB_MAX_CLIENTID_LENGTH', flag: 'max-clientid-length', parse: (raw: string, name: string) => integer(raw, name, 1, 65535), fallback: () => 256, help: 'longest client id in characters' },
  { key: 'expirySweepInterval', env: 'IOTHUB_EXPIRY_SWEEP_INTERVAL', flag: 'expiry-sweep-interval', parse: (raw: string, name: string) => integer(raw, name, 1, 86400), fallback: () => 30, help: 'seconds between expired-session sweeps' },
  { key: 'broker', env: 'IOTHUB_BROKER', flag: 'broker', parse: oneOf(['embedded', 'emqx'] as const), fallback: () => 'embedded' as const, help: 'embedded: our own MQTT broker; emqx: in front of an EMQX cluster' },
  { key: 'store', env: 'IOTHUB_STORE', flag: 'store', parse: oneOf(['sqlite', 'postgres'] as const), fallback: () => 'sqlite' as const, help: 'sqlite: a file in the data dir; postgres: IOTHUB_DATABASE_URL' },
  { key: 'databaseUrl', env: 'IOTHUB_DATABASE_URL', flag: 'database-url', parse: postgresUrl, fallback: () => '', help: 'PostgreSQL connection string (with --store postgres)' },
  { key: 'emqxApi', env: 'IOTHUB_EMQX_API', flag: 'emqx-api', parse: httpUrl, fallback: () => '', help: "EMQX management API base URL (emqx mode)" },
  { key: 'emqxApiKey', env: 'IOTHUB_EMQX_API_KEY', flag: 'emqx-api-key', parse: text, fallback: () => '', help: "EMQX 4 AppID / EMQX 5 API key" },
  { key: 'emqxApiSecret', env: 'IOTHUB_EMQX_API_SECRET', flag: 'emqx-api-secret', parse: text, fallback: () => '', help: "EMQX 4 AppSecret / EMQX 5 API secret" },
  { key: 'emqxVersion', env: 'IOTHUB_EMQX_VERSION', flag: 'emqx-version', parse: (raw: string, name: string) => Number(oneOf(['4', '5'] as const)(raw, name)), fallback: () => 5 as const, help: "EMQX's major version: 4 or 5" },
  { key: 'exhookHost', env: 'IOTHUB_EXHOOK_HOST', flag: 'exhook-host', parse: text, fallback: () => '0.0.0.0', help: 'ExHook gRPC listen address (emqx mode)' },
  { key: 'exhookPort', env: 'IOTHUB_EXHOOK_PORT', flag: 'exhook-port', parse: port, fallback: () => 9000, help: 'ExHook gRPC port (emqx mode; 0 = any free)' },
  { key: 'webhookSecret', env: 'IOTHUB_WEBHOOK_SECRET', flag: 'webhook-secret', parse: webhookSecret, fallback: () => '', help: 'shared secret of POST /v1/hooks/emqx (off when unset)' },
  { key: 'coapHost', env: 'IOTHUB_COAP_HOST', flag: 'coap-host', parse: text, fallback: () => '0.0.0.0', help: 'CoAP listen address (embedded mode)' },
  { key: 'coapPort', env: 'IOTHUB_COAP_PORT', flag: 'coap-port', parse: port, fallback: () => 5683, help: 'CoAP UDP port (0 = any free)' },
  { key: 'coapHeartbeat', env: 'IOTHUB_COAP_HEARTBEAT', flag: 'coap-heartbeat', parse: (raw: string, name: string) => integer(raw, name, 1, 86400), fallback: () => 30, help: 'seconds between CoAP heartbeats; silent 1.5 × that ends the session' },
  { key: 'coapAckTimeout', env: 'IOTHUB_COAP_ACK_TIMEOUT', flag: 'coap-ack-timeout', parse: (raw: string, name: string) => integer(raw, name, 10, 60_000), fallback: () => 2000, help: 'ms before a confirmable CoAP message is sent again (RFC 7252 ACK_TIMEOUT)' },
  { key: 'reconcileInterval', env: 'IOTHUB_RECONCILE_INTERVAL', flag: 'reconcile-interval', parse: (raw: string, name: string) => integer(raw, name, 1, 86400), fallback: () => 300, help: 'seconds between reconciles with EMQX (emqx mode)' },
  { key: 'logRetain', env: 'IOTHUB_LOG_RETAIN', flag: 'log-retain', parse: (raw: string, name: string) => integer(raw, name, 60, 365 * 86400), fallback: () => 86400, help: 'seconds the change log keeps an entry' },
  { key: 'logRetainEntries', env: 'IOTHUB_LOG_RETAIN_ENTRIES', flag: 'log-retain-entries', parse: (raw: string, name: string) => integer(raw, name, 1000, 2 ** 40), fallback: () => 1_000_000, help: 'most change-log entries kept' },
  { key: 'cacheSessions', env: 'IOTHUB_CACHE_SESSIONS', flag: 'cache-sessions', parse: (raw: string, name: string) => integer(raw, name, 100, 100_000_000), fallback: () => 100_000, help: 'sessions a replica keeps in memory (postgres store; the rest are read when needed)' },
  { key: 'cacheDevices', env: 'IOTHUB_CACHE_DEVICES', flag: 'cache-devices', parse: (raw: string, name: string) => integer(raw, name, 100, 100_000_000), fallback: () => 100_000, help: 'devices, with their properties, a replica keeps in memory (postgres store)' },
  // ── limits on what one device (and all of them) can make the hub hold ──
  { key: 'maxSubscriptionsPerSession', env: 'IOTHUB_MAX_SUBSCRIPTIONS_PER_SESSION', flag: 'max-subscriptions-per-session', parse: (raw: string, name: string) => integer(raw, name, 1, 100_000), fallback: () => 100, help: 'most topics one session may subscribe to or observe' },
  { key: 'maxSessionsPerDevice', env: 'IOTHUB_MAX_SESSIONS_PER_DEVICE', flag: 'max-sessions-per-device', parse: (raw: string, name: string) => integer(raw, name, 1, 100_000), fallback: () => 10, help: 'most sessions, connected or kept offline, one device may hold' },
  { key: 'maxConnectsPerDevice', env: 'IOTHUB_MAX_CONNECTS_PER_DEVICE', flag: 'max-connects-per-device', parse: (raw: string, name: string) => integer(raw, name, 0, 1023), fallback: () => 60, help: 'most connects of one device within a minute; the next is refused for IOTHUB_FLAPPING_BAN ms, as EMQX\'s flapping detection (0: no limit)' },
  { key: 'flappingBan', env: 'IOTHUB_FLAPPING_BAN', flag: 'flapping-ban', parse: (raw: string, name: string) => integer(raw, name, 1000, 86_400_000), fallback: () => 60_000, help: 'ms a device over IOTHUB_MAX_CONNECTS_PER_DEVICE is refused for' },
  { key: 'maxConnections', env: 'IOTHUB_MAX_CONNECTIONS', flag: 'max-connections', parse: (raw: string, name: string) => integer(raw, name, 1, 10_000_000), fallback: () => 100_000, help: 'most MQTT connections at once (lowered to fit the open-file limit)' },
  { key: 'maxConnectRate', env: 'IOTHUB_MAX_CONNECT_RATE', flag: 'max-connect-rate', parse: (raw: string, name: string) => integer(raw, name, 1, 10_000_000), fallback: () => 10_000, help: 'most new MQTT connections accepted per second' },
  { key: 'connectTimeout', env: 'IOTHUB_CONNECT_TIMEOUT', flag: 'connect-timeout', parse: (raw: string, name: string) => integer(raw, name, 100, 600_000), fallback: () => 15_000, help: 'ms a new MQTT connection may take to send CONNECT' },
  { key: 'maxInflightBytes', env: 'IOTHUB_MAX_INFLIGHT_BYTES', flag: 'max-inflight-bytes', parse: (raw: string, name: string) => integer(raw, name, 1024, 2 ** 31), fallback: () => 4 * 1_048_576, help: 'bytes queued for one connection before it is closed as a slow consumer' },
  { key: 'slowConsumerTimeout', env: 'IOTHUB_SLOW_CONSUMER_TIMEOUT', flag: 'slow-consumer-timeout', parse: (raw: string, name: string) => integer(raw, name, 100, 600_000), fallback: () => 10_000, help: 'ms a connection may stay unable to take more bytes before it is closed' },
  { key: 'maxMessageRate', env: 'IOTHUB_MAX_MESSAGE_RATE', flag: 'max-message-rate', parse: (raw: string, name: string) => integer(raw, name, 0, 10_000_000), fallback: () => 1000, help: 'PUBLISH, SUBSCRIBE and UNSUBSCRIBE packets one MQTT connection may send per second before its reading waits; CoAP: /ps requests, 4.29 beyond (0: no limit)' },
  { key: 'maxByteRate', env: 'IOTHUB_MAX_BYTE_RATE', flag: 'max-byte-rate', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 40), fallback: () => 10_485_760, help: 'bytes of those packets (CoAP: requests) one connection may send per second (0: no limit)' },
  { key: 'maxPendingConnectionsPerAddress', env: 'IOTHUB_MAX_PENDING_CONNECTIONS_PER_ADDRESS', flag: 'max-pending-connections-per-address', parse: (raw: string, name: string) => integer(raw, name, 1, 10_000_000), fallback: () => 100, help: 'connections one address may hold before their CONNECT' },
  // ── retained messages and offline queues bounded (issue 11) ──
  { key: 'maxRetainedPerDevice', env: 'IOTHUB_MAX_RETAINED_PER_DEVICE', flag: 'max-retained-per-device', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 31), fallback: () => 100, help: "most retained messages of one device's publishes" },
  { key: 'maxRetainedBytesPerDevice', env: 'IOTHUB_MAX_RETAINED_BYTES_PER_DEVICE', flag: 'max-retained-bytes-per-device', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 40), fallback: () => 1_048_576, help: "most bytes of one device's retained messages" },
  { key: 'maxRetained', env: 'IOTHUB_MAX_RETAINED', flag: 'max-retained', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 31), fallback: () => 100_000, help: 'most retained messages on the hub' },
  { key: 'maxRetainedBytes', env: 'IOTHUB_MAX_RETAINED_BYTES', flag: 'max-retained-bytes', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 40), fallback: () => 268_435_456, help: 'most bytes of retained messages on the hub' },
  { key: 'maxQueuedPerSession', env: 'IOTHUB_MAX_QUEUED_PER_SESSION', flag: 'max-queued-per-session', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 31), fallback: () => 1000, help: 'most messages queued for one offline session (oldest dropped beyond)' },
  { key: 'maxQueuedBytesPerSession', env: 'IOTHUB_MAX_QUEUED_BYTES_PER_SESSION', flag: 'max-queued-bytes-per-session', parse: (raw: string, name: string) => integer(raw, name, 0, 2 ** 40), fallback: () => 16_777_216, help: 'most bytes queued for one offline session (oldest dropped beyond)' },
  // ── bad input against the hub: parsing limits, the login throttle, slow HTTP requests ──
  // (a depth of 1,000 still leaves the stack room for the recursive walks of a parsed value)
  { key: 'maxJsonDepth', env: 'IOTHUB_MAX_JSON_DEPTH', flag: 'max-json-depth', parse: (raw: string, name: string) => integer(raw, name, 1, 1000), fallback: () => 32, help: 'deepest nesting of a JSON payload or API body (at most 1000)' },
  { key: 'loginFailuresAllowed', env: 'IOTHUB_LOGIN_FAILURES_ALLOWED', flag: 'login-failures-allowed', parse: (raw: string, name: string) => integer(raw, name, 1, 1_000_000), fallback: () => 10, help: 'wrong logins per minute per client address before it is throttled' },
  { key: 'loginBackoffFirst', env: 'IOTHUB_LOGIN_BACKOFF_FIRST', flag: 'login-backoff-first', parse: (raw: string, name: string) => integer(raw, name, 1000, 86_400_000), fallback: () => 1000, help: 'ms: first wait of a throttled login; it doubles up to IOTHUB_LOGIN_BACKOFF_MAX' },
  { key: 'loginBackoffMax', env: 'IOTHUB_LOGIN_BACKOFF_MAX', flag: 'login-backoff-max', parse: (raw: string, name: string) => integer(raw, name, 1000, 86_400_000), fallback: () => 60_000, help: 'ms: longest wait of a throttled login (it doubles from IOTHUB_LOGIN_BACKOFF_FIRST)' },
  { key: 'loginThrottleKeys', env: 'IOTHUB_LOGIN_THROTTLE_KEYS', flag: 'login-throttle-keys', parse: (raw: string, name: string) => integer(raw, name, 100, 10_000_000), fallback: () => 10_000, help: 'most addresses and device ids the login throttle remembers' },
  { key: 'httpRequestTimeout', env: 'IOTHUB_HTTP_REQUEST_TIMEOUT', flag: 'http-request-timeout', parse: (raw: string, name: string) => integer(raw, name, 1000, 3_600_000), fallback: () => 30_000, help: 'ms an HTTP request may take to arrive; slower ones get 408' },
  // ── the event stream, GET /v1/events (issue 14) ──
  { key: 'eventsHeartbeat', env: 'IOTHUB_EVENTS_HEARTBEAT', flag: 'events-heartbeat', parse: (raw: string, name: string) => integer(raw, name, 1, 3600), fallback: () => 15, help: 'seconds between heartbeat comments on GET /v1/events' },
  { key: 'eventsBuffer', env: 'IOTHUB_EVENTS_BUFFER', flag: 'events-buffer', parse: (raw: string, name: string) => integer(raw, name, 4096, 1_073_741_824), fallback: () => 1_048_576, help: 'bytes of events that may wait for one GET /v1/events consumer before it is closed as slow' },
  { key: 'eventsWebhookUrl', env: 'IOTHUB_EVENTS_WEBHOOK_URL', flag: 'events-webhook-url', parse: webhookUrl, fallback: () => '', help: 'POST every event here, in order, at least once (off when unset)' },
  { key: 'eventsWebhookSecret', env: 'IOTHUB_EVENTS_WEBHOOK_SECRET', flag: 'events-webhook-secret', parse: webhookSecret, fallback: () => '', help: 'key of the x-iothub-signature HMAC-SHA256 of each webhook body' },
  { key: 'eventsWebhookTypes', env: 'IOTHUB_EVENTS_WEBHOOK_TYPES', flag: 'events-webhook-types', parse: eventTypes, fallback: () => [], help: 'comma list of the event types the webhook gets (default all)' },
  { key: 'eventsWebhookBatch', env: 'IOTHUB_EVENTS_WEBHOOK_BATCH', flag: 'events-webhook-batch', parse: (raw: string, name: string) => integer(raw, name, 1, 10_000), fallback: () => 500, help: 'most events in one webhook POST (a JSON array)' },
  { key: 'eventsWebhookTimeout', env: 'IOTHUB_EVENTS_WEBHOOK_TIMEOUT', flag: 'events-webhook-timeout', parse: (raw: string, name: string) => integer(raw, name, 100, 600_000), fallback: () => 10_000, help: 'ms a webhook POST may take before it is sent again' },
  { key: 'eventsWebhookBackoffMax', env: 'IOTHUB_EVENTS_WEBHOOK_BACKOFF_MAX', flag: 'events-webhook-backoff-max', parse: (raw: string, name: string) => integer(raw, name, 500, 3_600_000), fallback: () => 30_000, help: 'ms: longest wait between retries of a failed webhook POST (doubles from 500 ms)' },
  { key: 'eventsMqtt', env: 'IOTHUB_EVENTS_MQTT', flag: 'events-mqtt', parse: oneOf(['on', 'off', 'auto'] as const), fallback: () => 'auto' as const, help: 'publish events on $iothub/events/{type}/{clientId}: on, off, auto (on in embedded mode, off in emqx mode)' },
  { key: 'eventsMqttTypes', env: 'IOTHUB_EVENTS_MQTT_TYPES', flag: 'events-mqtt-types', parse: eventTypes, fallback: () => [...PRESENCE_TYPES], help: 'comma list of the event types published on MQTT (default the session.* types)' },
  // ── outages (issue 11): the store's deadline ──
  { key: 'storeTimeout', env: 'IOTHUB_STORE_TIMEOUT', flag: 'store-timeout', parse: (raw: string, name: string) => integer(raw, name, 100, 600_000), fallback: () => 5000, help: 'ms a store write or probe may take before its caller is refused' },
  { key: 'pushBacklog', env: 'IOTHUB_PUSH_BACKLOG', flag: 'push-backlog', parse: (raw: string, name: string) => integer(raw, name, 1, 1_000_000), fallback: () => 1000, help: 'most commands (raw pushes) of one device that may wait for the broker; more are refused with 503' },
  { key: 'pushRetryInterval', env: 'IOTHUB_PUSH_RETRY_INTERVAL', flag: 'push-retry-interval', parse: (raw: string, name: string) => integer(raw, name, 1000, 600_000), fallback: () => PUSH_RETRY_MS, help: "ms between tries of the pushes the broker refused (and, in EMQX mode, between looks for those of replicas' runs that are over); a 503 for a full backlog says it in Retry-After" },
  { key: 'commandExpiry', env: 'IOTHUB_COMMAND_EXPIRY', flag: 'command-expiry', parse: (raw: string, name: string) => integer(raw, name, 0, 30 * 86_400), fallback: () => COMMAND_EXPIRY_S, help: 'seconds after it was sent that a command (raw push) the broker has not taken is dropped rather than published late (0: never)' },
  { key: 'pushTimeout', env: 'IOTHUB_PUSH_TIMEOUT', flag: 'push-timeout', parse: (raw: string, name: string) => integer(raw, name, 100, 60_000), fallback: () => PUSH_WITHIN_MS, help: "EMQX mode: ms a push's REST publish may take, its tries included, before it is kept and tried again (under ExHook's timeout); a command first waiting for an earlier one through another replica waits at most half of it (none for 10 s after a wait in vain)" },
  // --- encryption in transit (TLS) ---
  // '' until checkCombination makes it the MQTT host: one option's default cannot read another's
  { key: 'mqttsHost', env: 'IOTHUB_MQTTS_HOST', flag: 'mqtts-host', parse: text, fallback: () => '', help: 'MQTT over TLS listen address (default: the MQTT host)' },
  { key: 'mqttsPort', env: 'IOTHUB_MQTTS_PORT', flag: 'mqtts-port', parse: port, fallback: () => 8883, help: 'MQTT over TLS port, with IOTHUB_TLS_CERT and IOTHUB_TLS_KEY (0 = any free)' },
  { key: 'tlsCert', env: 'IOTHUB_TLS_CERT', flag: 'tls-cert', parse: filePath, fallback: () => '', help: 'PEM certificate (chain) file: turns on MQTT over TLS and HTTPS; reloaded when it changes' },
  { key: 'tlsKey', env: 'IOTHUB_TLS_KEY', flag: 'tls-key', parse: filePath, fallback: () => '', help: "PEM private key file of IOTHUB_TLS_CERT's certificate" },
  { key: 'tlsCa', env: 'IOTHUB_TLS_CA', flag: 'tls-ca', parse: filePath, fallback: () => '', help: 'PEM file of CA certificates sent with the chain (optional)' },
  { key: 'apiTls', env: 'IOTHUB_API_TLS', flag: 'api-tls', parse: oneOf(['auto', 'off'] as const), fallback: () => 'auto' as const, help: 'auto: the HTTP API serves HTTPS when a certificate is configured; off: plain HTTP' },
  { key: 'tlsHandshakeTimeout', env: 'IOTHUB_TLS_HANDSHAKE_TIMEOUT', flag: 'tls-handshake-timeout', parse: (raw: string, name: string) => integer(raw, name, 100, 120_000), fallback: () => 10_000, help: 'ms a TLS client has to finish its handshake' }
] satisfies Option<keyof HubConfig>[]

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/**
 * Builds the config from the environment, then CLI flags (`--name value` or `--name=value`),
 * then `overrides` (what tests pass). Unknown flags are errors.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, argv: readonly string[] = [], overrides: Partial<HubConfig> = {}): HubConfig {
  const flags = parseFlags(argv)
  const config: Record<string, unknown> = {}
  for (const option of OPTIONS) {
    const fromFlag = flags.get(option.flag)
    flags.delete(option.flag)
    const fromEnv = env[option.env]
    if (fromFlag !== undefined) config[option.key] = option.parse(fromFlag, `--${option.flag}`)
    else if (fromEnv !== undefined && fromEnv !== '') config[option.key] = option.parse(fromEnv, option.env)
    else config[option.key] = option.fallback()
  }
  if (flags.size > 0) throw new ConfigError(`unknown option ${[...flags.keys()].map((f) => `--${f}`).join(', ')} (see iothub --help)`)
  return checkCombination({ ...(config as unknown as HubConfig), ...overrides })
}

/** What one option alone cannot say: options another one requires. */
function checkCombination(config: HubConfig): HubConfig {
  if (config.store === 'postgres' && config.databaseUrl === '') {
    throw new ConfigError('IOTHUB_STORE=postgres needs IOTHUB_DATABASE_URL (e.g. postgres://iothub@db:5432/iothub)')
  }
  if (config.broker === 'emqx') {
    if (config.emqxApi === '') throw new ConfigError("IOTHUB_BROKER=emqx needs IOTHUB_EMQX_API, EMQX's management API (e.g. http://emqx:18083)")
    if (config.emqxApiKey === '' || config.emqxApiSecret === '') {
      throw new ConfigError('IOTHUB_BROKER=emqx needs IOTHUB_EMQX_API_KEY and IOTHUB_EMQX_API_SECRET (EMQX 4 AppID/AppSecret, EMQX 5 API key/secret)')
    }
  }
  if (config.eventsWebhookUrl !== '' && config.eventsWebhookSecret === '') {
    throw new ConfigError('IOTHUB_EVENTS_WEBHOOK_URL needs IOTHUB_EVENTS_WEBHOOK_SECRET, the key its receiver checks each body\'s signature with')
  }
  if (config.maxInflightBytes < config.maxPacketSize) {
    throw new ConfigError(`IOTHUB_MAX_INFLIGHT_BYTES (${config.maxInflightBytes}) must be at least IOTHUB_MAX_PACKET_SIZE (${config.maxPacketSize}): one packet alone would make a slow consumer`)
  }
  if ((config.tlsCert === '') !== (config.tlsKey === '')) {
    throw new ConfigError(config.tlsCert === '' ? 'IOTHUB_TLS_KEY needs IOTHUB_TLS_CERT, the certificate of that key' : 'IOTHUB_TLS_CERT needs IOTHUB_TLS_KEY, the private key of that certificate')
  }
  if (config.tlsCa !== '' && config.tlsCert === '') throw new ConfigError('IOTHUB_TLS_CA needs IOTHUB_TLS_CERT and IOTHUB_TLS_KEY')
  const eventsMqtt = (config.eventsMqtt as HubConfig['eventsMqtt'] | 'auto') === 'auto' ? (config.broker === 'embedded' ? 'on' : 'off') : config.eventsMqtt
  return { ...config, eventsMqtt, mqttsHost: config.mqttsHost === '' ? config.mqttHost : config.mqttsHost }
}

function parseFlags(argv: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith('--')) throw new ConfigError(`unexpected argument "${arg}" (see iothub --help)`)
    const eq = arg.indexOf('=')
    if (eq > 0) flags.set(arg.slice(2, eq), arg.slice(eq + 1))
    else {
      const value = argv[i + 1]
      if (value === undefined || value.startsWith('--')) throw new ConfigError(`${arg} needs a value`)
      flags.set(arg.slice(2), value)
      i++
    }
  }
  return flags
}

export function usesDefaultApiCredentials(config: HubConfig): boolean {
  return config.apiUser === DEFAULT_API_USER && config.apiPassword === DEFAULT_API_PASSWORD
}

export function configHelp(): string {
  return OPTIONS.map((o) => `  --${o.flag.padEnd(24)} ${o.env.padEnd(30)} ${o.help}`).join('\n')
}
