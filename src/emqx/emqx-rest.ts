/**
 * EMQX's management REST API, as the hub uses it: list clients and subscriptions (paged, for
 * the reconcile) and publish (downstream pushes). One client for both major versions:
 *
 * | | EMQX 4 (`/api/v4`) | EMQX 5 (`/api/v5`) |
 * |---|---|---|
 * | clients | `GET /clients?_page=&_limit=` | `GET /clients?page=&limit=&fields=` (only the fields read; asked again without `fields` if refused) |
 * | subscriptions | `GET /subscriptions?_page=&_limit=` | `GET /subscriptions?page=&limit=` |
 * | paging | `{ code: 0, data, meta: { page, limit, hasnext, count } }` | `{ data, meta: { page, limit, hasnext, count } }` |
 * | publish | `POST /mqtt/publish` `{ topic, payload, encoding, qos, retain, clientid }` → `{ code: 0 }` | `POST /publish` `{ topic, payload, payload_encoding, qos, retain }` → 200 `{ id }` (202: no subscriber) |
 *
 * Basic auth with EMQX 4's AppID/AppSecret or EMQX 5's API key/secret. Each request has a
 * timeout and is retried with backoff when EMQX is unreachable or answers 5xx; a 401/403 is not
 * retried and says which credentials to check.
 */
import type { BrokerPublisher, PublishOptions } from '../devices/dispatcher.js'
import type { QoS } from '../domain/session.js'
import type { EmqxClient } from './emqx-client.js'

export interface EmqxRestOptions {
  baseUrl: string
  apiKey: string
  apiSecret: string
  version: 4 | 5
  /** Per request, ms. */
  timeoutMs?: number
  /** Tries per request before giving up (1 = no retry). */
  attempts?: number
  /** First backoff, ms; doubled each retry. */
  backoffMs?: number
  /** Items per page when listing (EMQX 4 and 5 cap `limit` at 10,000; their default is 100). */
  pageSize?: number
}

/** A client EMQX lists: connected, or (EMQX 5) a persistent session kept offline. */
export interface EmqxListedClient {
  client: EmqxClient
  connected: boolean
}

export interface EmqxSubscription {
  node: string | undefined
  clientId: string
  topic: string
  qos: QoS
}

export class EmqxApiError extends Error {
  override name = 'EmqxApiError'
  constructor(
    message: string,
    /** The HTTP status, or 0 when EMQX could not be reached. */
    readonly status: number,
    /** EMQX 4's own code, where it answered 200 with one other than 0. */
    readonly code?: number
  ) {
    super(message)
  }
}

/** EMQX 4's codes that another try may not get: 101 an RPC error (between its nodes), 102 an unknown one. */
const EMQX4_TRANSIENT_CODES = new Set([101, 102])

/**
 * Whether EMQX refused a publish for good — the same publish would be refused again: a bad
 * request (400: a payload over its packet limit, a topic it will not take), 413, or EMQX 4's
 * answer with a code of the request's own (200 with any code but 101 and 102: 107–109 a
 * parameter, 115 the topic).
 * Anything else (unreachable, busy, EMQX 4's RPC or unknown error, the credentials, a wrong API
 * path) is what time or an operator can mend.
 */
export function publishRefusedForGood(error: Error): boolean {
  if (!(error instanceof EmqxApiError)) return false
  if (error.status === 200) return error.code !== undefined && !EMQX4_TRANSIENT_CODES.has(error.code)
  return error.status === 400 || error.status === 413
}

export class EmqxRestClient implements BrokerPublisher {
  private readonly auth: string
  private readonly prefix: string
  private readonly timeoutMs: number
  private readonly attempts: number
  private readonly backoffMs: number
  readonly pageSize: number

  constructor(private readonly options: EmqxRestOptions) {
    this.auth = `Basic ${Buffer.from(`${options.apiKey}:${options.apiSecret}`).toString('base64')}`
    this.prefix = `${options.baseUrl.replace(/\/+$/, '')}/api/v${options.version}`
    this.timeoutMs = options.timeoutMs ?? 5000
    this.attempts = options.attempts ?? 3
    this.backoffMs = options.backoffMs ?? 200
    this.pageSize = Math.min(options.pageSize ?? 1000, 10_000)
  }

  get version(): 4 | 5 {
    return this.options.version
  }

  /** Publishes as the hub; resolves when EMQX has accepted the message (`withinMs`: tries and all, at most that long). */
  async publish(message: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean }, options: PublishOptions = {}): Promise<void> {
    const payload = message.payload.toString('base64')
    const tries = options.withinMs === undefined ? undefined : { until: performance.now() + options.withinMs }
    if (this.options.version === 4) {
      const body = await this.request('POST', '/mqtt/publish', { topic: message.topic, payload, encoding: 'base64', qos: message.qos, retain: message.retain, clientid: 'iothub' }, tries)
      const code = (body as { code?: unknown }).code
      if (code !== 0) throw new EmqxApiError(`EMQX refused the publish to ${message.topic}: ${JSON.stringify(body)}`, 200, typeof code === 'number' ? code : undefined)
      return
    }
    await this.request('POST', '/publish', { topic: message.topic, payload, payload_encoding: 'base64', qos: message.qos, retain: message.retain }, tries)
  }

  /** Disconnects a client (EMQX's kick); false when EMQX has no such client. */
  async kick(clientId: string): Promise<boolean> {
    try {
      const body = await this.request('DELETE', `/clients/${encodeURIComponent(clientId)}`)
      // EMQX 4 answers 200 with a code of its own: 0 done, 112 "client not online"
      return this.options.version === 5 || (body as { code?: unknown }).code === 0
    } catch (error) {
      if (error instanceof EmqxApiError && error.status === 404) return false
      throw error
    }
  }

  /** Every client EMQX holds, page by page. */
  async *clients(): AsyncGenerator<EmqxListedClient[]> {
    // EMQX 5 answers only the fields asked for (`fields=`, a comma-separated list; every field by
    // default): a client row is ~50 fields, mostly counters the hub does not read, so this
    // makes each page of a reconcile a fraction of the bytes for EMQX to render and for the hub
    // to read. A version that refuses the parameter is asked again without it.
    const fields = this.options.version === 5 && !this.fieldsRefused ? `fields=${CLIENT_FIELDS}` : undefined
    try {
      for await (const page of this.pages('/clients', fields)) yield page.map((c) => ({ client: clientOf(c, this.options.version), connected: c.connected !== false }))
    } catch (error) {
      if (fields === undefined || !(error instanceof FieldsRefused)) throw error
      this.fieldsRefused = true
      yield* this.clients()
    }
  }

  /** Whether EMQX answered 400 to `fields=` (a version before it): then lists ask for every field. */
  private fieldsRefused = false

  /** Every subscription, page by page. */
  async *subscriptions(): AsyncGenerator<EmqxSubscription[]> {
    for await (const page of this.pages('/subscriptions')) yield page.map(subscriptionOf)
  }

  /**
   * The one client EMQX holds under `clientId` now, or null: `GET /clients/{clientid}` (EMQX 4
   * answers `{ code: 0, data: [row] }`, an empty list when none; EMQX 5 the row, or 404
   * CLIENTID_NOT_FOUND).
   */
  async client(clientId: string): Promise<EmqxListedClient | null> {
    let body: unknown
    try {
      body = await this.request('GET', `/clients/${encodeURIComponent(clientId)}`)
    } catch (error) {
      if (error instanceof EmqxApiError && error.status === 404) return null
      throw error
    }
    const row = this.options.version === 4 ? firstRow(body) : (body as Record<string, unknown>)
    if (row === null || typeof row !== 'object' || row.clientid !== clientId) return null
    return { client: clientOf(row, this.options.version), connected: row.connected !== false }
  }

  /**
   * The subscriptions of one client: EMQX 4 `GET /subscriptions/{clientid}` (`{ code: 0, data }`),
   * EMQX 5 `GET /clients/{clientid}/subscriptions` (a list; 404 when the client is gone).
   */
  async subscriptionsOf(clientId: string): Promise<EmqxSubscription[]> {
    const id = encodeURIComponent(clientId)
    try {
      const body = await this.request('GET', this.options.version === 4 ? `/subscriptions/${id}` : `/clients/${id}/subscriptions`)
      const rows = this.options.version === 4 ? (body as { data?: unknown }).data : body
      if (!Array.isArray(rows)) throw new EmqxApiError(`EMQX answered the subscriptions of ${clientId} without a list`, 200)
      return (rows as Record<string, unknown>[]).map(subscriptionOf)
    } catch (error) {
      if (error instanceof EmqxApiError && error.status === 404) return []
      throw error
    }
  }

  /** Pages requested so far (for the reconcile's report). */
  pagesRead = 0

  private async *pages(path: string, query?: string): AsyncGenerator<Record<string, unknown>[]> {
    const [pageParam, limitParam] = this.options.version === 4 ? ['_page', '_limit'] : ['page', 'limit']
    for (let page = 1; ; page++) {
      const url = `${path}?${pageParam}=${page}&${limitParam}=${this.pageSize}${query ? `&${query}` : ''}`
      let body: { data?: unknown; meta?: { hasnext?: unknown } }
      try {
        body = (await this.request('GET', url)) as typeof body
      } catch (error) {
        // only the first page can be refused for its parameters: nothing was yielded yet
        if (query !== undefined && page === 1 && error instanceof EmqxApiError && error.status === 400) throw new FieldsRefused(error.message)
        throw error
      }
      if (!Array.isArray(body.data)) throw new EmqxApiError(`EMQX's ${path} answered without a data list`, 200)
      this.pagesRead++
      yield body.data as Record<string, unknown>[]
      // `hasnext` is documented for both versions; a short page ends the listing too
      if (body.meta?.hasnext === false || (body.meta?.hasnext === undefined && body.data.length < this.pageSize)) return
      if (body.data.length === 0) return
    }
  }

  /** `tries.until` (performance.now() ms): no try goes on past it, and none begins too late to; a try may take all of it, whatever `timeoutMs`. */
  private async request(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, tries?: { until: number }): Promise<unknown> {
    let lastError: EmqxApiError | undefined
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      const backoff = attempt > 1 ? this.backoffMs * 2 ** (attempt - 2) : 0
      // a try with less than a backoff's time left would only be cut off
      const left = tries === undefined ? Infinity : tries.until - performance.now() - backoff
      if (attempt > 1 && left < Math.max(backoff, 1)) break
      if (backoff > 0) await new Promise((resolve) => setTimeout(resolve, backoff))
      // a request within a time (a push's, IOTHUB_PUSH_TIMEOUT) may spend all of it on one try: an
      // EMQX that answers slowly is answered late rather than not at all
      const timeoutMs = Math.max(1, Math.ceil(tries === undefined ? this.timeoutMs : left))
      let response: Response
      try {
        response = await fetch(this.prefix + path, {
          method,
          headers: { authorization: this.auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(timeoutMs)
        })
      } catch (error) {
        lastError = new EmqxApiError(`EMQX's API at ${this.prefix} cannot be reached: ${(error as Error).message}`, 0)
        continue
      }
      let text: string
      try {
        // the timeout covers the body too: a listing page cut off or stalled mid-body
        text = await response.text()
      } catch (error) {
        const cut = new EmqxApiError(`EMQX's API answered ${response.status} to ${method} ${path} but its body could not be read: ${(error as Error).message}`, 0)
        // a read is asked again; a change (a publish, a kick) was made or not: asking again could make it twice
        if (method !== 'GET') throw cut
        lastError = cut
        continue
      }
      if (response.status === 401 || response.status === 403) {
        throw new EmqxApiError(`EMQX's API answered ${response.status} to ${method} ${path}: check IOTHUB_EMQX_API_KEY and IOTHUB_EMQX_API_SECRET (${text.slice(0, 200)})`, response.status)
      }
      if (response.status >= 500) {
        lastError = new EmqxApiError(`EMQX's API answered ${response.status} to ${method} ${path}: ${text.slice(0, 200)}`, response.status)
        continue
      }
      if (response.status >= 400) throw new EmqxApiError(`EMQX's API answered ${response.status} to ${method} ${path}: ${text.slice(0, 200)}`, response.status)
      if (text === '') return {}
      try {
        return JSON.parse(text) as unknown
      } catch {
        throw new EmqxApiError(`EMQX's API answered ${method} ${path} with something that is not JSON`, response.status)
      }
    }
    throw lastError!
  }
}

/**
 * A client of EMQX's listing in the hub's terms. EMQX 5's dates are RFC 3339; EMQX 4's are
 * "YYYY-MM-DD HH:mm:ss" in the node's zone, read as UTC (run EMQX 4 nodes in UTC, as containers do).
 */
/** The fields of a listed client that clientOf reads (EMQX 5's names, all in its `fields` enum). */
const CLIENT_FIELDS = ['clientid', 'node', 'username', 'proto_name', 'proto_ver', 'ip_address', 'port', 'mountpoint', 'keepalive', 'clean_start', 'expiry_interval', 'connected', 'connected_at'].join(',')

/** EMQX refused a listing's optional parameters (400 on its first page). */
class FieldsRefused extends Error {}

function clientOf(c: Record<string, unknown>, version: 4 | 5): EmqxClient {
  const text = (v: unknown): string | null => (typeof v === 'string' && v !== '' && v !== 'undefined' ? v : null)
  const int = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined)
  const connectedAt = text(c.connected_at)
  const parsed = connectedAt === null ? NaN : Date.parse(version === 4 ? `${connectedAt.replace(' ', 'T')}Z` : connectedAt)
  const clientId = text(c.clientid)
  const node = text(c.node)
  if (clientId === null || node === null) throw new EmqxApiError('EMQX listed a client without clientid or node', 200)
  return {
    node,
    clientId,
    username: text(c.username),
    protocol: text(c.proto_name)?.toLowerCase() === 'mqtt' ? 'mqtt' : (text(c.proto_name)?.toLowerCase() ?? undefined),
    peerHost: text(c.ip_address),
    peerPort: int(c.port),
    sockPort: undefined,
    mountpoint: text(c.mountpoint) ?? undefined,
    protoVer: int(c.proto_ver),
    keepalive: int(c.keepalive),
    cleanStart: typeof c.clean_start === 'boolean' ? c.clean_start : undefined,
    expiryInterval: int(c.expiry_interval),
    connectedAt: Number.isFinite(parsed) ? parsed : undefined
  }
}

function firstRow(body: unknown): Record<string, unknown> | null {
  const data = (body as { data?: unknown }).data
  if (!Array.isArray(data)) throw new EmqxApiError('EMQX answered a client lookup without a data list', 200)
  return (data[0] as Record<string, unknown> | undefined) ?? null
}

function subscriptionOf(s: Record<string, unknown>): EmqxSubscription {
  if (typeof s.clientid !== 'string' || typeof s.topic !== 'string') throw new EmqxApiError('EMQX listed a subscription without clientid or topic', 200)
  const qos = s.qos === 1 || s.qos === 2 ? s.qos : 0
  return { node: typeof s.node === 'string' ? s.node : undefined, clientId: s.clientid, topic: s.topic, qos }
}
