/**
 * What the OpenAPI document says of each route beyond its schemas: a summary, a description,
 * a tag, and examples — one table keyed by method and path (parameters written `{}`, whatever
 * their name), applied by @fastify/swagger's `transform` as each route is documented. A route
 * registered without an entry here is documented bare, and test/api/openapi.test.ts fails on it.
 */
import type { FastifyDynamicSwaggerOptions } from '@fastify/swagger'

type Transform = NonNullable<FastifyDynamicSwaggerOptions['transform']>

interface RouteDoc {
  summary: string
  description?: string
  tag: 'devices' | 'sessions' | 'subscriptions' | 'events' | 'status' | 'probes' | 'emqx v4' | 'tkeel core' | 'emqx mode'
  /** An example request body. */
  body?: unknown
  /** An example answer: its status and body. */
  answer: [status: number, example: unknown]
  /** The answer's media type, when it is not JSON. */
  produces?: string
  /** Served without the API's credentials. */
  open?: boolean
}

const DEVICE_ID = 'thermostat-17'
const TIME = '2026-01-04T16:40:09.162Z'
const NODE = 'iothub@host-a'

const session = {
  id: DEVICE_ID,
  protocol: 'mqtt',
  clientId: DEVICE_ID,
  deviceId: DEVICE_ID,
  username: DEVICE_ID,
  mountpoint: `${DEVICE_ID}/`,
  node: NODE,
  peerHost: '10.0.0.7',
  peerPort: 51234,
  sockPort: 1883,
  keepalive: 60,
  protoVer: 4,
  cleanStart: false,
  expiryInterval: 7200,
  connected: true,
  createdAt: TIME,
  connectedAt: TIME,
  disconnectedAt: null,
  disconnectReason: null,
  topics: [{ topic: 'v1/devices/me/attributes', brokerTopic: `${DEVICE_ID}/v1/devices/me/attributes`, qos: 1 }],
  incarnation: '01JGW8Z0V6Q4F1K2M3N4P5R6S7',
  version: 2
}

const subscription = {
  id: 'sub-dVv4Xq2b',
  type: 'subscription',
  owner: 'alice',
  source: 'iothub',
  sessionId: DEVICE_ID,
  deviceId: DEVICE_ID,
  topic: 'v1/devices/me/attributes',
  brokerTopic: `${DEVICE_ID}/v1/devices/me/attributes`,
  properties: ['attributes'],
  mode: 'realtime',
  filter: `insert into sub-dVv4Xq2b select ${DEVICE_ID}.attributes`,
  createdAt: TIME
}

const deviceFields = { id: DEVICE_ID, name: 'Hall thermostat', owner: 'alice', group: 'floor-2', desc: '', ext: { model: 'T100' }, createdAt: TIME, updatedAt: TIME }
const device = { ...deviceFields, properties: { attributes: { colour: 'red' }, connectinfo: { _online: true, _owner: 'alice', _timestamp: 1767544809162000000 } } }
const token = 'k3J9xQ2vLr8WmT5bN1cZ'

const replica = { node: NODE, address: 'http://10.0.0.2:8081', startedAt: TIME, lastSeen: TIME, logPosition: 91234, live: true, self: true }
const reconcileReport = {
  trigger: 'interval',
  startedAt: 1767544809162,
  durationMs: 412,
  pages: 3,
  brokerClients: 2500,
  brokerSubscriptions: 5000,
  ghostsEnded: 1,
  offlineEnded: 0,
  sessionsAdded: 0,
  sessionsCorrected: 0,
  topicsAdded: 0,
  topicsRemoved: 0,
  skippedChanged: 0,
  skippedBehind: 0,
  error: null
}
const notFound = (what: string) => ({ statusCode: 404, error: 'Not Found', message: `no ${what}` })

const emqxClient = {
  clientid: DEVICE_ID,
  username: DEVICE_ID,
  node: 'emqx@10.0.0.5',
  connected: true,
  ip_address: '10.0.0.7',
  port: 51234,
  proto_name: 'MQTT',
  proto_ver: 4,
  keepalive: 60,
  clean_start: false,
  expiry_interval: 7200,
  connected_at: '2026-01-04 16:40:09',
  created_at: '2026-01-04 16:40:09',
  subscriptions_cnt: 1,
  mountpoint: `${DEVICE_ID}/`,
  zone: 'external',
  is_bridge: false
}

export const ROUTE_DOCS: Record<string, RouteDoc> = {
  // ── devices ──
  'POST /v1/devices': {
    tag: 'devices',
    summary: 'Register one device or many',
    description: 'One device object or an array of up to 10,000. Answers 201 with each device and its `token` — the only time a token is shown; 409 when an id exists; 400 for an id named twice or an `ext` over 256 KiB (nothing is created).',
    body: { id: DEVICE_ID, name: 'Hall thermostat', owner: 'alice', group: 'floor-2', ext: { model: 'T100' } },
    answer: [201, { ...device, properties: {}, token }]
  },
  'GET /v1/devices': {
    tag: 'devices',
    summary: 'List devices',
    description: 'Paged by id (`limit`, `cursor` from `next`); filters `owner`, `group`, `connected` (has a connected session) and `q` (case-insensitive substring of id or name). Tokens are never listed.',
    answer: [200, { data: [device], next: 'dGhlcm1vc3RhdC0xNw' }]
  },
  'GET /v1/devices/{}': {
    tag: 'devices',
    summary: 'One device, with its properties',
    description: 'Its `properties`: `attributes`, `telemetry`, `commands`, `rawData`, `connectinfo`. The token is not shown.',
    answer: [200, device]
  },
  'PATCH /v1/devices/{}': {
    tag: 'devices',
    summary: "Change a device's name, description, group or ext",
    description: 'At least one of `name`, `desc`, `group`, `ext`; `id` and `owner` cannot change (400). Makes a `device.changed` event.',
    body: { name: 'Hall thermostat (east)', group: 'floor-3' },
    answer: [200, { ...device, name: 'Hall thermostat (east)', group: 'floor-3' }]
  },
  'DELETE /v1/devices/{}': {
    tag: 'devices',
    summary: 'Delete a device',
    description: 'Its sessions are kicked and ended, its subscription entities deleted, its token refused from then on; one stored change (`device.deleted`).',
    answer: [200, { id: DEVICE_ID, sessionsEnded: 1, subscriptionsDeleted: 2 }]
  },
  'POST /v1/devices/{}/token': {
    tag: 'devices',
    summary: "Rotate a device's token",
    description: 'A new token, shown once; the old one is refused for new connections at once. With `kick=true` its live sessions are kicked too (`kicked`: how many).',
    answer: [200, { id: DEVICE_ID, token, kicked: 1 }]
  },
  'PATCH /v1/devices/{}/attributes': {
    tag: 'devices',
    summary: 'Change attributes and push them',
    description: "A JSON object merged into the device's `attributes`, stored, then pushed (QoS 1) to its sessions subscribed to `v1/devices/me/attributes`. A change stored but not pushed still answers 200, with `pushError`.",
    body: { colour: 'red' },
    answer: [200, { attributes: { colour: 'red', interval: 30 }, pushedTo: [DEVICE_ID] }]
  },
  'POST /v1/devices/{}/commands': {
    tag: 'devices',
    summary: 'Send a command',
    description: 'Kept under `commands` until the device answers on `v1/devices/me/command/response`; pushed as `{ id, name, params }` on `v1/devices/me/commands`. 409 for an id already sent. A command stored but not pushed answers 200 with `pushError`; while one waits for the broker, the device\'s later commands wait behind it (in EMQX mode, those sent through other replicas too) and go after it, in order. One the broker has not taken within IOTHUB_COMMAND_EXPIRY (an hour) is not sent again: its `status` becomes `expired` (a try whose outcome was not known may have reached the device; its answer makes it `answered`), and its id may be sent again. 503 with Retry-After, nothing stored, when the device has IOTHUB_PUSH_BACKLOG commands waiting already.',
    body: { name: 'reboot', params: { delay: 5 } },
    answer: [200, { command: { id: 'cmd-8f2a', name: 'reboot', params: { delay: 5 }, status: 'sent', sentAt: TIME }, pushedTo: [DEVICE_ID] }]
  },
  'POST /v1/devices/{}/raw': {
    tag: 'devices',
    summary: 'Send raw bytes',
    description: 'An `application/octet-stream` body, kept as `rawData` and pushed as it is on `v1/devices/me/raw` (another content type: 415). Like commands, later raw pushes wait behind one waiting for the broker, and one not taken within IOTHUB_COMMAND_EXPIRY is dropped; 503 with Retry-After, nothing stored, when IOTHUB_PUSH_BACKLOG of them wait already.',
    answer: [200, { bytes: 12, pushedTo: [DEVICE_ID] }]
  },
  'PATCH /v1/devices/attributes': {
    tag: 'devices',
    summary: 'Change the attributes of many devices and push them',
    description:
      'A fleet push: `attributes` merged into each selected device\'s attributes and pushed, exactly as `PATCH /v1/devices/{id}/attributes` does for one. Select with exactly one of `ids` (at most 10,000, each once), a filter (`owner`, `group`), or `all: true`; a filter is walked in id order, from `after` when given. The answer counts what was done: `matched`, `changed`, `pushed` (devices) and `sessions`, `unknown` ids (the first 1,000; `unknownCount`), `failed` and `pushFailed` with `errors`. 200 once every device was attempted; 503 (the store failed, the hub is stopping) with the same counts, `attempted` and, for a filter, `resumeAfter`. At most 4 run at once (429).',
    body: { owner: 'alice', group: 'greenhouse', attributes: { setpoint: 21.5 } },
    answer: [200, { attempted: 3, matched: 3, changed: 3, pushed: 2, sessions: 2, pushFailed: 0, failed: 0, unknown: [], unknownCount: 0, errors: [], complete: true, tookMs: 4 }]
  },
  'POST /v1/devices/commands': {
    tag: 'devices',
    summary: 'Send one command to many devices',
    description:
      'A fleet push of `command` (`{ name, params?, id? }`), as `POST /v1/devices/{id}/commands` sends it to one, selected as for `PATCH /v1/devices/attributes`. Every device gets the same command id (the caller\'s, or one the hub makes and answers in `command`): devices that already have it count as `alreadySent` and get nothing, so a call repeated with that id reaches only the devices it missed.',
    body: { ids: [DEVICE_ID, 'thermostat-18', 'thermostat-99'], command: { name: 'reboot', params: { delay: 5 } } },
    answer: [
      200,
      {
        command: { id: '5b0e1c9a-3f57-4c1e-9a43-0d6a0c1f2b7e', name: 'reboot', params: { delay: 5 } },
        attempted: 3,
        matched: 2,
        changed: 2,
        alreadySent: 0,
        pushed: 1,
        sessions: 1,
        pushFailed: 0,
        failed: 0,
        unknown: ['thermostat-99'],
        unknownCount: 1,
        errors: [],
        complete: true,
        tookMs: 3
      }
    ]
  },
  // ── sessions and subscriptions ──
  'GET /v1/sessions': {
    tag: 'sessions',
    summary: 'List session entities',
    description: 'Filters `deviceId`, `clientId`, `clientIdContains` (client ids holding this text, as EMQX\'s `_like_clientid`), `protocol`, `connected`; `limit` (≤ 1000, default 100) and the opaque `cursor` from `next`.',
    answer: [200, { data: [session], next: null }]
  },
  'GET /v1/sessions/{}': {
    tag: 'sessions',
    summary: 'One session entity (its id is the client id)',
    answer: [200, session]
  },
  'DELETE /v1/sessions/{}': {
    tag: 'sessions',
    summary: 'Kick a connected session',
    description: "The broker closes the connection (EMQX mode: through EMQX's REST API); the native twin of `DELETE /api/v4/clients/{clientid}`. 404 when no such session.",
    answer: [404, notFound('session thermostat-18')]
  },
  'GET /v1/subscriptions': {
    tag: 'subscriptions',
    summary: 'List subscription entities',
    description: 'Filters `deviceId`, `sessionId`; `limit` and `cursor` as for sessions.',
    answer: [200, { data: [subscription], next: null }]
  },
  'GET /v1/subscriptions/{}': {
    tag: 'subscriptions',
    summary: 'One subscription entity',
    answer: [200, subscription]
  },
  // ── events ──
  'GET /v1/events': {
    tag: 'events',
    summary: 'Server-sent events of every committed change',
    description:
      'Sessions, subscription entities and devices, each event with the entity as it now is. Resumes after `Last-Event-ID` or `?after=`; filters `types`, `deviceId`, `owner`; 410 with `oldest` once the log was pruned past the resume point. See docs/events.md.',
    produces: 'text/event-stream',
    answer: [
      200,
      `id: 7\ndata: {"seq":7,"time":"${TIME}","type":"session.connected","node":"${NODE}","deviceId":"${DEVICE_ID}","owner":"alice","clientId":"${DEVICE_ID}","session":{…}}\n\n: heartbeat\n\n`
    ]
  },
  // ── status ──
  'GET /v1/status': {
    tag: 'status',
    summary: "This replica's status: readiness, the fleet's counts, rates, store, replicas, last reconcile",
    description:
      "Counts are fleet-wide, read at most 15 s ago (shared with the metrics' gauges; null when the store cannot count); rates and commit percentiles are this replica's over the last 10 s. `reconcile` is null in embedded mode and before the first reconcile.",
    answer: [
      200,
      {
        node: NODE,
        ready: true,
        checks: { store: { ok: true }, log: { ok: true, detail: 'log position 91234, 0.002 s behind' }, mqtt: { ok: true }, hub: { ok: true } },
        counts: { devices: 2500, sessions: 2410, connected: 2388, subscriptions: 4776, connectedByProtocol: { mqtt: 2300, coap: 88 }, connectedByNode: { [NODE]: 2388 } },
        rates: { lifecycleEventsPerSecond: 12.4, pushesPerSecond: 3.1 },
        store: { kind: 'sqlite', healthy: true, commitSecondsP50: 0.0011, commitSecondsP99: 0.0046 },
        replicas: [replica],
        reconcile: null
      }
    ]
  },
  'GET /v1/status/history': {
    tag: 'status',
    summary: "This replica's last hour, one sample per 10 s",
    description: 'Kept in memory by each replica (360 samples at most); a restart begins a new history.',
    answer: [200, { intervalSeconds: 10, samples: [{ at: TIME, connected: 2388, lifecycleEventsPerSecond: 12.4, pushesPerSecond: 3.1 }] }]
  },
  'GET /v1/replicas': {
    tag: 'status',
    summary: 'The replicas sharing the store',
    description: 'With SQLite, this one. `live`: heard of within the lease time.',
    answer: [200, { data: [replica] }]
  },
  // ── probes ──
  'GET /healthz': { tag: 'probes', summary: 'The process is up', open: true, answer: [200, { status: 'ok' }] },
  'GET /readyz': {
    tag: 'probes',
    summary: 'Ready to serve: the store answers, the caches follow the log, the listeners listen',
    description: 'Asks the store itself (at most once a second, shared); 503 with the checks that fail.',
    open: true,
    answer: [200, { status: 'ready', checks: { store: { ok: true }, log: { ok: true, detail: 'log position 91234, 0.002 s behind' }, mqtt: { ok: true }, hub: { ok: true } } }]
  },
  'GET /metrics': {
    tag: 'probes',
    summary: 'Prometheus metrics',
    open: true,
    produces: 'text/plain',
    answer: [200, '# HELP iothub_sessions_connected Connected sessions by protocol\n# TYPE iothub_sessions_connected gauge\niothub_sessions_connected{protocol="mqtt"} 2300\n']
  },
  // ── EMQX v4 compatibility ──
  'GET /api/v4/clients': {
    tag: 'emqx v4',
    summary: "EMQX v4's client listing",
    description: '`_page`, `_limit` and EMQX\'s filters (`clientid`, `username`, `conn_state`, `_like_clientid`, `_gte_created_at`, …); see docs/emqx-compat.md.',
    answer: [200, { code: 0, data: [emqxClient], meta: { page: 1, limit: 10, hasnext: false, count: 1 } }]
  },
  'DELETE /api/v4/clients/{}': {
    tag: 'emqx v4',
    summary: 'Kick a client (EMQX v4)',
    description: 'Disconnects it (reason `kicked`); an offline persistent session is discarded.',
    answer: [200, { code: 0 }]
  },
  'GET /api/v4/subscriptions': {
    tag: 'emqx v4',
    summary: "EMQX v4's subscription listing",
    description: 'Filters `clientid`, `topic`, `qos`, `share`, `_match_topic`, `node`; `_page`, `_limit`.',
    answer: [200, { code: 0, data: [{ topic: `${DEVICE_ID}/v1/devices/me/attributes`, qos: 1, node: 'emqx@10.0.0.5', clientid: DEVICE_ID }], meta: { page: 1, limit: 10, hasnext: false, count: 1 } }]
  },
  'POST /api/v4/mqtt/publish': {
    tag: 'emqx v4',
    summary: 'Publish a message (EMQX v4)',
    description: 'Published on the broker\'s (mounted) topics; errors answer `{ code: 107 | 108 | 109, message }`.',
    body: { topic: `${DEVICE_ID}/v1/devices/me/attributes`, payload: '{"colour":"red"}', qos: 1, retain: false, clientid: 'ops' },
    answer: [200, { code: 0 }]
  },
  // ── tKeel core compatibility ──
  'GET /apis/core/v1/entities/{}': {
    tag: 'tkeel core',
    summary: "tKeel core's entity read",
    description: '`type=device|session|subscription`; another `owner` or `source` answers 404, as a missing entity does.',
    answer: [
      200,
      {
        id: DEVICE_ID,
        source: 'device',
        owner: 'alice',
        type: 'device',
        configs: {},
        properties: {
          attributes: { colour: 'red' },
          telemetry: {},
          commands: {},
          connectinfo: { _online: true },
          dev: { name: 'Hall thermostat', desc: '', group: 'floor-2', ext: { model: 'T100' } },
          rawData: {},
          sysField: { _id: DEVICE_ID, _enable: true, _createdAt: 1767544809162000000, _updatedAt: 1767544809162000000 }
        }
      }
    ]
  },
  // ── EMQX mode's own routes ──
  'POST /v1/hooks/emqx': {
    tag: 'emqx mode',
    summary: "EMQX's WebHook receiver (EMQX mode)",
    description: 'Checked by the shared secret in `x-iothub-webhook-secret` (IOTHUB_WEBHOOK_SECRET), not the API credentials.',
    open: true,
    body: { event: 'client.connected', node: 'emqx@10.0.0.5', clientid: DEVICE_ID, username: DEVICE_ID, peername: '10.0.0.7:51234', mountpoint: `${DEVICE_ID}/`, clean_start: true },
    answer: [200, { applied: true }]
  },
  'GET /v1/reconcile/last': {
    tag: 'emqx mode',
    summary: "The last reconcile's report (EMQX mode)",
    description: "This replica's own last run or the lease holder's, whichever began later; 404 before any.",
    answer: [200, reconcileReport]
  },
  'POST /v1/reconcile': {
    tag: 'emqx mode',
    summary: 'Reconcile with EMQX now (EMQX mode)',
    answer: [200, { ...reconcileReport, trigger: 'api' }]
  }
}

/** `GET /v1/devices/{}` for `/v1/devices/:id` (fastify's form) or `/v1/devices/{id}` (OpenAPI's). */
export function routeKey(method: string, url: string): string {
  return `${method} ${url.replace(/:[^/]+|\{[^}]+\}/g, '{}')}`
}

/** `getV1DevicesId` for GET /v1/devices/:id: unique as long as method and path are. */
function operationId(method: string, url: string): string {
  const words = url.split(/[^A-Za-z0-9]+/).filter((w) => w !== '')
  return method.toLowerCase() + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join('')
}

export const documentRoute: Transform = ({ schema, url, route }) => {
  const methods = [route.method].flat()
  const method = methods.find((m) => m !== 'HEAD') ?? methods[0]!
  const doc = ROUTE_DOCS[routeKey(method, url)]
  if (!doc || (schema as { hide?: boolean } | undefined)?.hide) return { schema, url }
  const given = (schema ?? {}) as Record<string, unknown> & { body?: object; response?: Record<string, object> }
  const [status, example] = doc.answer
  const response: Record<string, object> = { ...given.response }
  const answered = response[status] ?? response[String(status)]
  response[status] = doc.produces
    ? { description: doc.summary, content: { [doc.produces]: { schema: { type: 'string' }, example } } }
    : { description: doc.summary, ...answered, examples: [example] }
  return {
    url,
    schema: {
      ...given,
      summary: doc.summary,
      operationId: operationId(method, url),
      ...(doc.description ? { description: doc.description } : {}),
      tags: [doc.tag],
      ...(doc.open ? { security: [] } : {}),
      ...(doc.body !== undefined && given.body ? { body: { ...given.body, examples: [doc.body] } } : {}),
      response
    }
  }
}
