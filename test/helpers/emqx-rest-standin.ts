/**
 * A stand-in for EMQX's management REST API, for tests that cannot run EMQX: the v4 API of EMQX 4.3/4.4
 * (`/api/v4`, management listener 8081, AppID/AppSecret) or the v5 API of EMQX 5.x (`/api/v5`, dashboard
 * listener 18083, API key/secret). The test owns the "broker state": it adds and removes clients and
 * subscriptions, reads what was published, makes the API fail (401, 503, reset connections) and reads
 * the log of requests.
 *
 * What it follows:
 *  v4 - emqx/emqx-docs en_US/advanced/http-api.md (EMQX 4.x HTTP API; same text as
 *       docs.emqx.com/en/enterprise/v4.4/advanced/http-api.html):
 *       Basic auth with AppID/AppSecret; every answer carries `code` (0 = success);
 *       GET /api/v4/clients and /api/v4/subscriptions page with `_page` (default 1) and `_limit`
 *       (default 10000 = emqx-management's max_row_limit; no maximum is enforced), answer
 *       `{code: 0, data: [...], meta: {page, limit, hasnext, count}}`, where `count` is the total and,
 *       "in multi-condition/fuzzy query, it is fixed at -1" (4.1+);
 *       client rows: node, clientid, username, proto_name, proto_ver, ip_address, port, is_bridge,
 *       connected_at, disconnected_at (only when connected is false), connected, zone, keepalive,
 *       clean_start, expiry_interval, created_at, subscriptions_cnt, ... ; times "YYYY-MM-DD HH:mm:ss";
 *       subscription rows: node, clientid, topic, qos;
 *       GET /api/v4/clients/{clientid} -> {code: 0, data: [row]};
 *       POST /api/v4/mqtt/publish {topic | topics (comma separated), clientid, payload,
 *       encoding plain|base64, qos, retain} -> {code: 0}.
 *       From 4.3/4.4 source (emqx_mgmt_api_pubsub.erl): clientid may be absent; no topic gives
 *       HTTP 200 {code: 115, message: "bad_topic"}; `"return": true` adds data.msgid.
 *       401 (minirest 4.x, apply_handler): header WWW-Authenticate: Basic Realm="minirest-server",
 *       body the text UNAUTHORIZED.
 *  v5 - emqx/emqx apps/emqx_dashboard/src/emqx_dashboard_swagger.erl (commit 0306d1c4 era, 5.x):
 *       `page` (pos_integer, default 1), `limit` (1..10000, default 100), meta {page, limit, count,
 *       hasnext}, where `count` "is present only if the query can be optimized and does not require a
 *       full table scan" (absent with fuzzy filters like_clientid/like_username/match_topic);
 *       apps/emqx_management/src/emqx_mgmt_api_clients.erl (GET /clients: clientid and username
 *       repeatable, conn_state, like_*, node, fields; client fields; GET/DELETE /clients/:clientid,
 *       404 CLIENTID_NOT_FOUND; GET /clients/:clientid/subscriptions);
 *       emqx_mgmt_api_subscriptions.erl (rows: topic, clientid, node, durable, qos, nl, rap, rh);
 *       emqx_mgmt_api.erl (answer {data, meta}, no `code`; hasnext = page overflow or data left);
 *       emqx_mgmt_api_publish.erl (POST /publish {topic, payload, qos, retain, payload_encoding
 *       plain|base64, properties}; 200 {id} when it reached a subscriber, 202 {reason_code: 16,
 *       message: "no_matching_subscribers"} when none matched, 400 {reason_code: 144,
 *       message: "topic_name_invalid"} for a topic with wildcards);
 *       emqx_dashboard.erl authorize/1 (401, header WWW-Authenticate: Basic Realm="emqx-dashboard",
 *       {code: "BAD_API_KEY_OR_SECRET", message: "Check api_key/api_secret"}; no Authorization header:
 *       {code: "AUTHORIZATION_HEADER_ERROR", ...}).
 *       Cursor paging: 5.x also has GET /api/v5/clients_v2 (`cursor`, meta {count, hasnext, cursor}),
 *       hidden from the documented API, and `position`/meta {start, position} only on
 *       /clients/:clientid/mqueue_messages and /inflight_messages; /clients and /subscriptions page by
 *       page/limit, which is what this stand-in serves.
 *
 * Choices of this stand-in (not EMQX facts): rows are listed in insertion order; times are rendered
 * in UTC (EMQX uses its node's zone); a v4 `_page`/`_limit` that is not a positive integer answers
 * HTTP 400 {code: 108}. Real EMQX 5 may answer hasnext: true for a page that ends exactly at the last
 * row (its ets:select continuation is not yet exhausted); `hasnextOnExactPageEnd` reproduces that.
 *
 * Each version is one entry of `API`: its prefix, its health paths, its 401/404/503 answers and its
 * route table (method, path with `:name` segments, handler), so a route added to one version says
 * so in one line instead of in a branch of an if/else chain the other version shares.
 */
import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface EmqxRestStandinOptions {
  version: 4 | 5
  /** v4 AppID / v5 API key */
  apiKey: string
  /** v4 AppSecret / v5 API secret */
  apiSecret: string
  /** 0 (default) lets the OS pick. */
  port?: number
  host?: string
  /** Node name shown in rows (default 'emqx@127.0.0.1'). */
  node?: string
  /** v5 only: answer hasnext: true when a page ends exactly at the last row, as EMQX can. */
  hasnextOnExactPageEnd?: boolean
  /** Runs before each request is answered (a test's way to act while the hub is mid-listing). */
  beforeReply?: (method: string, path: string) => Promise<void>
  /** Runs once a request's answer is made, before it is sent (a test's way to make a page the hub reads stale). */
  afterReply?: (method: string, path: string) => Promise<void>
}

/** A client session as the stand-in broker holds it. Times are epoch milliseconds. */
export interface StandinClient {
  clientid: string
  username: string | null
  node: string
  connected: boolean
  connectedAt: number
  createdAt: number
  /** Set when connected is false. */
  disconnectedAt?: number
  ipAddress: string
  port: number
  protoName: string
  protoVer: number
  cleanStart: boolean
  expiryInterval: number
  keepalive: number
  mountpoint: string
  /** Merged last into the rendered row (override or add fields). */
  extra?: Record<string, unknown>
}

export type StandinClientInput = Partial<StandinClient> & { clientid: string }

export interface StandinSubscription {
  clientid: string
  /** As EMQX shows it: a shared one as '$share/group/filter'. */
  topic: string
  qos: 0 | 1 | 2
  node?: string
  nl?: 0 | 1
  rap?: 0 | 1
  rh?: 0 | 1 | 2
}

export interface PublishedMessage {
  path: string
  /** The JSON body as received. */
  body: Record<string, unknown>
  topics: string[]
  payload: Buffer
  qos: number
  retain: boolean
  clientid?: string
  /** The id answered (v5) or generated (v4). */
  id: string
}

export interface RequestLogEntry {
  method: string
  /** Path with query string, as requested. */
  path: string
  status: number
}

export interface EmqxRestStandin {
  readonly version: 4 | 5
  /** Base URL, e.g. http://127.0.0.1:39123 (append /api/v4/... or /api/v5/...). */
  readonly url: string
  readonly clients: Map<string, StandinClient>
  subscriptions: StandinSubscription[]
  readonly published: PublishedMessage[]
  readonly requests: RequestLogEntry[]
  addClient(input: StandinClientInput): StandinClient
  /** Removes the client and its subscriptions; false when unknown. */
  removeClient(clientid: string): boolean
  subscribe(clientid: string, topic: string, qos?: 0 | 1 | 2, opts?: Pick<StandinSubscription, 'nl' | 'rap' | 'rh'>): StandinSubscription
  unsubscribe(clientid: string, topic: string): boolean
  /** down: every request fails, with HTTP 503 (default) or by resetting its connection ('reset'). */
  setDown(down: boolean, how?: '503' | 'reset'): void
  /** Every authenticated request answers 401 as EMQX does for wrong credentials. */
  setAuthFailure(failing: boolean): void
  close(): Promise<void>
}

type Reply = { status: number; body?: unknown; text?: string; headers?: Record<string, string> }

/** What a route's handler is given: the path's `:name` segments (decoded), the query, the raw body. */
interface RouteRequest {
  params: Record<string, string>
  query: URLSearchParams
  raw: string
}

interface Route {
  /** An HTTP method, or '*' for any. */
  method: string
  /** The path after the version's prefix; a `:name` segment matches any one segment. */
  path: string
  handle: (request: RouteRequest) => Reply
}

/** One API version as the stand-in serves it: where it lives, how it answers besides its routes, and its routes in the order they are tried. */
interface ApiVersion {
  prefix: '/api/v4' | '/api/v5'
  /** Health checks: answered to a GET without credentials, matched exactly. */
  healthPaths: string[]
  /** Every request while the stand-in is down with '503'. */
  unavailable: Reply
  /** A path outside the prefix, or no route's. */
  notFound: Reply
  /** Wrong or missing credentials; `headerPresent`: a Basic Authorization header was sent. */
  unauthorized: (headerPresent: boolean) => Reply
  routes: Route[]
}

/** The route's parameters when it takes this method and these (decoded) segments; undefined when it does not. */
function matchRoute(route: Route, method: string, segments: string[]): Record<string, string> | undefined {
  if (route.method !== '*' && route.method !== method) return undefined
  const pattern = route.path.split('/').filter(Boolean)
  if (pattern.length !== segments.length) return undefined
  const params: Record<string, string> = {}
  for (let i = 0; i < pattern.length; i++) {
    const part = pattern[i]!
    if (part.startsWith(':')) params[part.slice(1)] = segments[i]!
    else if (part !== segments[i]) return undefined
  }
  return params
}

export async function startEmqxRestStandin(options: EmqxRestStandinOptions): Promise<EmqxRestStandin> {
  const version = options.version
  const node = options.node ?? 'emqx@127.0.0.1'
  const clients = new VersionedMap<string, StandinClient>()
  const published: PublishedMessage[] = []
  const requests: RequestLogEntry[] = []
  let down: false | '503' | 'reset' = false
  let authFailure = false

  const state = {
    subscriptions: [] as StandinSubscription[]
  }
  /** Caches of listings, each valid while what it was made of is unchanged (see clientsInOrder, subscriptionCounts). */
  let ordered: { version: number; list: StandinClient[] } | undefined
  // subscriptions change by a new array (subscribe, unsubscribe, removeClient, the setter) or a
  // test's push onto it: the array and its length say whether the counts still hold
  let countsOf: { list: StandinSubscription[]; length: number; counts: Map<string, number> } | undefined

  const server = createServer((req, res) => {
    void handle(req, res)
  })

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET'
    const rawPath = req.url ?? '/'
    if (down === 'reset') {
      requests.push({ method, path: rawPath, status: 0 })
      req.socket.destroy()
      return
    }
    await options.beforeReply?.(method, rawPath)
    let reply: Reply
    if (down === '503') {
      reply = api.unavailable
    } else {
      const body = await readBody(req)
      reply = route(method, new URL(rawPath, 'http://standin'), req.headers.authorization, body)
    }
    await options.afterReply?.(method, rawPath)
    requests.push({ method, path: rawPath, status: reply.status })
    const headers: Record<string, string> = { ...reply.headers }
    let payload = ''
    if (reply.body !== undefined) {
      headers['content-type'] = 'application/json'
      payload = JSON.stringify(reply.body)
    } else if (reply.text !== undefined) {
      headers['content-type'] = headers['content-type'] ?? 'text/plain'
      payload = reply.text
    }
    res.writeHead(reply.status, headers)
    res.end(payload)
  }

  /**
   * Health checks first (no credentials), then anything outside the version's prefix is not
   * found, then credentials, then the version's route table: the first route whose method and
   * path match answers; none matching is not found (after the credentials, as EMQX checks them).
   */
  function route(method: string, url: URL, authorization: string | undefined, raw: string): Reply {
    const path = url.pathname
    if (method === 'GET' && api.healthPaths.includes(path)) return { status: 200, text: `Node ${node} is started\nemqx is running` }
    if (!path.startsWith(`${api.prefix}/`) && path !== api.prefix) return api.notFound
    const denied = checkAuth(authorization)
    if (denied) return denied
    const segments = path.slice(api.prefix.length).split('/').filter(Boolean).map(decodeURIComponent)
    for (const r of api.routes) {
      const params = matchRoute(r, method, segments)
      if (params) return r.handle({ params, query: url.searchParams, raw })
    }
    return api.notFound
  }

  function checkAuth(authorization: string | undefined): Reply | undefined {
    const match = /^Basic\s+(.+)$/i.exec(authorization ?? '')
    let ok = false
    if (match?.[1]) {
      const decoded = Buffer.from(match[1], 'base64').toString('utf8')
      const colon = decoded.indexOf(':')
      ok = colon >= 0 && decoded.slice(0, colon) === options.apiKey && decoded.slice(colon + 1) === options.apiSecret
    }
    return ok && !authFailure ? undefined : api.unauthorized(match !== null)
  }

  // ------------------------------------------------------------------------------------ route tables

  const API: Record<4 | 5, ApiVersion> = {
    4: {
      prefix: '/api/v4',
      healthPaths: ['/status'],
      unavailable: { status: 503, text: 'Service Unavailable' },
      notFound: { status: 404, text: 'Not Found' },
      unauthorized: () => ({ status: 401, text: 'UNAUTHORIZED', headers: { 'www-authenticate': 'Basic Realm="minirest-server"' } }),
      routes: [
        { method: 'GET', path: '/clients', handle: ({ query }) => listV4(query, 'clients') },
        {
          method: 'GET',
          path: '/clients/:clientid',
          handle: ({ params }) => {
            const client = clients.get(params.clientid!)
            return { status: 200, body: { code: 0, data: client ? [renderClientV4(client)] : [] } }
          }
        },
        {
          method: 'DELETE',
          path: '/clients/:clientid',
          // minirest:return({error, ?ERROR12, ...}) answers HTTP 200 with the code
          handle: ({ params }) => (removeClient(params.clientid!) ? { status: 200, body: { code: 0 } } : { status: 200, body: { code: 112, message: 'not_found' } })
        },
        { method: 'GET', path: '/subscriptions', handle: ({ query }) => listV4(query, 'subscriptions') },
        {
          method: 'GET',
          path: '/subscriptions/:clientid',
          handle: ({ params }) => ({ status: 200, body: { code: 0, data: state.subscriptions.filter((s) => s.clientid === params.clientid).map(renderSubscriptionV4) } })
        },
        { method: 'POST', path: '/mqtt/publish', handle: ({ raw }) => publishV4(raw) },
        { method: 'GET', path: '/brokers', handle: () => ({ status: 200, body: { code: 0, data: [brokerInfoV4()] } }) },
        { method: 'GET', path: '/brokers/:node', handle: () => ({ status: 200, body: { code: 0, data: brokerInfoV4() } }) }
      ]
    },
    5: {
      prefix: '/api/v5',
      healthPaths: ['/status', '/api/v5/status'],
      unavailable: { status: 503, body: { code: 'SERVICE_UNAVAILABLE', message: 'emqx is not running' } },
      notFound: { status: 404, body: { code: 'NOT_FOUND', message: 'Request Path Not Found' } },
      unauthorized: (headerPresent) => ({
        status: 401,
        body: headerPresent
          ? { code: 'BAD_API_KEY_OR_SECRET', message: 'Check api_key/api_secret' }
          : { code: 'AUTHORIZATION_HEADER_ERROR', message: 'Support authorization: basic/bearer ' },
        headers: { 'www-authenticate': 'Basic Realm="emqx-dashboard"' }
      }),
      routes: [
        { method: 'GET', path: '/clients', handle: ({ query }) => listV5(query, 'clients') },
        { method: 'GET', path: '/clients/:clientid', handle: ({ params }) => withClientV5(params.clientid!, (client) => ({ status: 200, body: renderClientV5(client) })) },
        {
          method: 'DELETE',
          path: '/clients/:clientid',
          handle: ({ params }) =>
            withClientV5(params.clientid!, (client) => {
              removeClient(client.clientid)
              return { status: 204 }
            })
        },
        // any other method on a client: an unknown client is still CLIENTID_NOT_FOUND, a known one the path's 404
        { method: '*', path: '/clients/:clientid', handle: ({ params }) => withClientV5(params.clientid!, () => API[5].notFound) },
        {
          method: 'GET',
          path: '/clients/:clientid/subscriptions',
          handle: ({ params }) =>
            withClientV5(params.clientid!, (client) => ({ status: 200, body: state.subscriptions.filter((s) => s.clientid === client.clientid).map(renderSubscriptionV5) }))
        },
        { method: 'GET', path: '/subscriptions', handle: ({ query }) => listV5(query, 'subscriptions') },
        { method: 'POST', path: '/publish', handle: ({ raw }) => publishV5(raw) }
      ]
    }
  }
  const api = API[version]

  // ------------------------------------------------------------------------------------ v4

  function brokerInfoV4(): Record<string, unknown> {
    return { datetime: v4Time(Date.now()), node, node_status: 'Running', otp_release: '24.3.4.2/12.3.2.2', sysdescr: 'EMQX Broker', uptime: '1 hours, 0 minutes, 0 seconds', version: '4.4.19' }
  }

  function listV4(query: URLSearchParams, what: 'clients' | 'subscriptions'): Reply {
    const page = positiveInt(query.get('_page'), 1)
    const limit = positiveInt(query.get('_limit'), 10000)
    if (page === undefined || limit === undefined) {
      return { status: 400, body: { code: 108, message: '_page and _limit must be positive integers' } }
    }
    let filtered = false
    // PERFORMANCE (bench/reconcile.ts lists 100,000 clients): only the page's rows are rendered; see pageOf
    let paged: Paged
    if (what === 'clients') {
      const list = filterClients(query, { exact: ['clientid', 'username', 'node'], like: ['_like_clientid', '_like_username'], state: 'conn_state' })
      filtered = list.filtered
      const counts = subscriptionCounts()
      paged = pageOf(list.clients, page, limit, false, (c) => renderClientV4(c, counts))
    } else {
      const list = filterSubscriptions(query, { clientid: 'clientid', topic: 'topic', qos: 'qos', share: 'share', match: '_match_topic', node: 'node' })
      filtered = list.filtered
      paged = pageOf(list.subscriptions, page, limit, false, renderSubscriptionV4)
    }
    const { data, hasnext, total } = paged
    return { status: 200, body: { code: 0, data, meta: { page, limit, hasnext, count: filtered ? -1 : total } } }
  }

  function publishV4(raw: string): Reply {
    const body = parseJson(raw)
    if (!body) return { status: 400, body: { code: 109, message: 'request body is not valid JSON' } }
    const topics = topicList(body.topic, body.topics)
    if (body.clientid !== undefined && typeof body.clientid !== 'string') {
      return { status: 200, body: { code: 108, message: 'bad clientid: must be string' } }
    }
    if (topics.length === 0 || topics.some((t) => /[+#]/.test(t))) return { status: 200, body: { code: 115, message: 'bad_topic' } }
    const encoding = typeof body.encoding === 'string' ? body.encoding : 'plain'
    const payload = decodePayload(body.payload, encoding)
    if (!payload) return { status: 200, body: { code: 108, message: 'bad payload' } }
    const id = guid()
    published.push({
      path: '/api/v4/mqtt/publish',
      body,
      topics,
      payload,
      qos: typeof body.qos === 'number' ? body.qos : 0,
      retain: body.retain === true,
      clientid: typeof body.clientid === 'string' ? body.clientid : undefined,
      id
    })
    return { status: 200, body: body.return !== undefined ? { code: 0, data: { msgid: id } } : { code: 0 } }
  }

  // ------------------------------------------------------------------------------------ v5

  /** Answers with `found` for a client the broker holds, 404 CLIENTID_NOT_FOUND (EMQX 5's) for one it does not. */
  function withClientV5(clientid: string, found: (client: StandinClient) => Reply): Reply {
    const client = clients.get(clientid)
    return client ? found(client) : { status: 404, body: { code: 'CLIENTID_NOT_FOUND', message: 'Client ID not found' } }
  }

  function listV5(query: URLSearchParams, what: 'clients' | 'subscriptions'): Reply {
    const page = positiveInt(query.get('page'), 1)
    const limit = positiveInt(query.get('limit'), 100)
    if (page === undefined) return badRequestV5('page: expected a positive integer')
    if (limit === undefined || limit > 10000) return badRequestV5('limit: expected an integer in 1..10000')
    let fuzzy = false
    // PERFORMANCE (bench/reconcile.ts lists 100,000 clients): only the page's rows are rendered; see pageOf
    let paged: Paged
    const hasnextOnExactEnd = options.hasnextOnExactPageEnd === true
    if (what === 'clients') {
      const list = filterClients(query, { exact: ['clientid', 'username', 'node'], like: ['like_clientid', 'like_username'], state: 'conn_state' })
      fuzzy = list.fuzzy
      const counts = subscriptionCounts()
      paged = pageOf(list.clients, page, limit, hasnextOnExactEnd, (c) => renderClientV5(c, counts))
      const fields = query.get('fields')
      if (fields && fields !== 'all') {
        const keep = fields.split(',').map((f) => f.trim()).filter(Boolean)
        paged.data = paged.data.map((row) => Object.fromEntries(keep.filter((k) => k in row).map((k) => [k, row[k]])))
      }
    } else {
      const list = filterSubscriptions(query, { clientid: 'clientid', topic: 'topic', qos: 'qos', share: 'share_group', match: 'match_topic', node: 'node' })
      fuzzy = list.fuzzy
      paged = pageOf(list.subscriptions, page, limit, hasnextOnExactEnd, renderSubscriptionV5)
    }
    const { data, hasnext, total } = paged
    const meta: Record<string, unknown> = { page, limit, hasnext }
    if (!fuzzy) meta.count = total
    return { status: 200, body: { data, meta } }
  }

  function publishV5(raw: string): Reply {
    const body = parseJson(raw)
    if (!body) return badRequestV5('request body is not valid JSON')
    if (typeof body.topic !== 'string') return badRequestV5('topic: required field')
    if (typeof body.payload !== 'string') return badRequestV5('payload: required field')
    const qos = body.qos ?? 0
    if (qos !== 0 && qos !== 1 && qos !== 2) return badRequestV5('qos: expected 0, 1 or 2')
    const encoding = body.payload_encoding ?? 'plain'
    if (encoding !== 'plain' && encoding !== 'base64') return badRequestV5('payload_encoding: expected plain or base64')
    if (body.topic === '' || /[+#]/.test(body.topic)) return { status: 400, body: { reason_code: 144, message: 'topic_name_invalid' } }
    const payload = decodePayload(body.payload, encoding)
    if (!payload) return { status: 400, body: { reason_code: 131, message: `{decode_base64_payload_failed,<<"${body.payload}">>}` } }
    const id = guid()
    published.push({
      path: '/api/v5/publish',
      body,
      topics: [body.topic],
      payload,
      qos,
      retain: body.retain === true,
      clientid: typeof body.clientid === 'string' ? body.clientid : undefined,
      id
    })
    const topic = body.topic
    const delivered = topic.startsWith('$delayed/') || state.subscriptions.some((s) => topicMatches(unshare(s.topic), topic))
    if (!delivered) return { status: 202, body: { reason_code: 16, message: 'no_matching_subscribers' } }
    return { status: 200, body: { id } }
  }

  function badRequestV5(message: string): Reply {
    return { status: 400, body: { code: 'BAD_REQUEST', message } }
  }

  // ------------------------------------------------------------------------------------ shared

  function filterClients(
    query: URLSearchParams,
    names: { exact: string[]; like: string[]; state: string }
  ): { clients: StandinClient[]; filtered: boolean; fuzzy: boolean } {
    // filters make new arrays: the shared listing is never changed
    let list = clientsInOrder()
    let filtered = false
    let fuzzy = false
    for (const key of names.exact) {
      const wanted = query.getAll(key)
      if (wanted.length === 0) continue
      filtered = true
      list = list.filter((c) => wanted.includes(String(key === 'clientid' ? c.clientid : key === 'username' ? c.username : c.node)))
    }
    const [likeClientid, likeUsername] = names.like
    const likeC = likeClientid ? query.get(likeClientid) : null
    if (likeC !== null) {
      filtered = fuzzy = true
      list = list.filter((c) => c.clientid.includes(likeC))
    }
    const likeU = likeUsername ? query.get(likeUsername) : null
    if (likeU !== null) {
      filtered = fuzzy = true
      list = list.filter((c) => (c.username ?? '').includes(likeU))
    }
    const connState = query.get(names.state)
    if (connState !== null) {
      filtered = true
      list = list.filter((c) => (connState === 'connected' ? c.connected : connState === 'disconnected' ? !c.connected : false))
    }
    return { clients: list, filtered, fuzzy }
  }

  function filterSubscriptions(
    query: URLSearchParams,
    names: { clientid: string; topic: string; qos: string; share: string; match: string; node: string }
  ): { subscriptions: StandinSubscription[]; filtered: boolean; fuzzy: boolean } {
    // filters make new arrays: the stand-in's own list is never changed here
    let list = state.subscriptions
    let filtered = false
    let fuzzy = false
    const clientid = query.get(names.clientid)
    if (clientid !== null) {
      filtered = true
      list = list.filter((s) => s.clientid === clientid)
    }
    const topic = query.get(names.topic)
    if (topic !== null) {
      filtered = true
      list = list.filter((s) => s.topic === topic)
    }
    const qos = query.get(names.qos)
    if (qos !== null) {
      filtered = true
      list = list.filter((s) => String(s.qos) === qos)
    }
    const share = query.get(names.share)
    if (share !== null) {
      filtered = true
      list = list.filter((s) => s.topic.startsWith(`$share/${share}/`))
    }
    const nodeName = query.get(names.node)
    if (nodeName !== null) {
      filtered = true
      list = list.filter((s) => (s.node ?? node) === nodeName)
    }
    const match = query.get(names.match)
    if (match !== null) {
      filtered = fuzzy = true
      list = list.filter((s) => topicMatches(match, unshare(s.topic)))
    }
    return { subscriptions: list, filtered, fuzzy }
  }

  function renderClientV4(c: StandinClient, counts?: ReadonlyMap<string, number>): Record<string, unknown> {
    const row: Record<string, unknown> = {
      node: c.node,
      clientid: c.clientid,
      username: c.username,
      proto_name: c.protoName,
      proto_ver: c.protoVer,
      ip_address: c.ipAddress,
      port: c.port,
      is_bridge: false,
      connected_at: v4Time(c.connectedAt),
      connected: c.connected,
      zone: 'external',
      keepalive: c.keepalive,
      clean_start: c.cleanStart,
      expiry_interval: c.expiryInterval,
      created_at: v4Time(c.createdAt),
      subscriptions_cnt: counts ? (counts.get(c.clientid) ?? 0) : subscriptionCount(c.clientid),
      max_subscriptions: 0,
      inflight: 0,
      max_inflight: 32,
      mqueue_len: 0,
      max_mqueue: 1000,
      mqueue_dropped: 0,
      awaiting_rel: 0,
      max_awaiting_rel: 100,
      recv_oct: 0,
      recv_cnt: 0,
      recv_pkt: 0,
      recv_msg: 0,
      send_oct: 0,
      send_cnt: 0,
      send_pkt: 0,
      send_msg: 0,
      mailbox_len: 0,
      heap_size: 0,
      reductions: 0,
      mountpoint: c.mountpoint
    }
    if (!c.connected) row.disconnected_at = v4Time(c.disconnectedAt ?? Date.now())
    return { ...row, ...c.extra }
  }

  function renderClientV5(c: StandinClient, counts?: ReadonlyMap<string, number>): Record<string, unknown> {
    const row: Record<string, unknown> = {
      clientid: c.clientid,
      username: c.username,
      node: c.node,
      connected: c.connected,
      connected_at: v5Time(c.connectedAt),
      created_at: v5Time(c.createdAt),
      ip_address: c.ipAddress,
      port: c.port,
      peerport: c.port,
      proto_name: c.protoName,
      proto_ver: c.protoVer,
      clean_start: c.cleanStart,
      expiry_interval: c.expiryInterval,
      keepalive: c.keepalive,
      mountpoint: c.mountpoint,
      is_bridge: false,
      is_expired: false,
      is_persistent: !c.cleanStart || c.expiryInterval > 0,
      durable: false,
      enable_authn: true,
      listener: 'tcp:default',
      subscriptions_cnt: counts ? (counts.get(c.clientid) ?? 0) : subscriptionCount(c.clientid),
      subscriptions_max: 'infinity',
      inflight_cnt: 0,
      inflight_max: 32,
      mqueue_len: 0,
      mqueue_max: 1000,
      mqueue_dropped: 0,
      awaiting_rel_cnt: 0,
      awaiting_rel_max: 100,
      recv_oct: 0,
      recv_cnt: 0,
      recv_pkt: 0,
      recv_msg: 0,
      send_oct: 0,
      send_cnt: 0,
      send_pkt: 0,
      send_msg: 0,
      mailbox_len: 0,
      heap_size: 0,
      reductions: 0
    }
    if (!c.connected) row.disconnected_at = v5Time(c.disconnectedAt ?? Date.now())
    return { ...row, ...c.extra }
  }

  function renderSubscriptionV4(s: StandinSubscription): Record<string, unknown> {
    return { node: s.node ?? node, clientid: s.clientid, topic: s.topic, qos: s.qos }
  }

  function renderSubscriptionV5(s: StandinSubscription): Record<string, unknown> {
    return { topic: s.topic, clientid: s.clientid, node: s.node ?? node, durable: false, qos: s.qos, nl: s.nl ?? 0, rap: s.rap ?? 0, rh: s.rh ?? 0 }
  }

  function subscriptionCount(clientid: string): number {
    return state.subscriptions.filter((s) => s.clientid === clientid).length
  }

  /**
   * PERFORMANCE: every client's subscriptions_cnt from one pass over the subscriptions, for a
   * listing (subscriptionCount per row made a page of 1,000 out of 100,000 clients take 31 s).
   * Taken per request, so it counts what subscriptionCount would.
   */
  function subscriptionCounts(): ReadonlyMap<string, number> {
    const list = state.subscriptions
    if (countsOf?.list === list && countsOf.length === list.length) return countsOf.counts
    const counts = new Map<string, number>()
    for (const s of list) counts.set(s.clientid, (counts.get(s.clientid) ?? 0) + 1)
    countsOf = { list, length: list.length, counts }
    return counts
  }

  /**
   * PERFORMANCE (bench/scale.ts lists 1,000,000 clients): the clients in insertion order (the
   * listing's order), made once per change of the clients rather than copied for every page, so
   * an unfiltered page costs O(page), not O(all clients). A change (addClient, removeClient, or a
   * test's own `clients.set`/`delete`) bumps the map's version and the next page makes it again.
   */
  function clientsInOrder(): StandinClient[] {
    if (ordered?.version !== clients.version) ordered = { version: clients.version, list: [...clients.values()] }
    return ordered.list
  }

  function addClient(input: StandinClientInput): StandinClient {
    const now = Date.now()
    const client: StandinClient = {
      clientid: input.clientid,
      username: input.username ?? null,
      node: input.node ?? node,
      connected: input.connected ?? true,
      connectedAt: input.connectedAt ?? now,
      createdAt: input.createdAt ?? input.connectedAt ?? now,
      disconnectedAt: input.disconnectedAt,
      ipAddress: input.ipAddress ?? '127.0.0.1',
      port: input.port ?? 50000 + (clients.size % 10000),
      protoName: input.protoName ?? 'MQTT',
      protoVer: input.protoVer ?? 4,
      cleanStart: input.cleanStart ?? true,
      expiryInterval: input.expiryInterval ?? 0,
      keepalive: input.keepalive ?? 60,
      mountpoint: input.mountpoint ?? '',
      extra: input.extra
    }
    if (!client.connected && client.disconnectedAt === undefined) client.disconnectedAt = now
    clients.set(client.clientid, client)
    return client
  }

  function removeClient(clientid: string): boolean {
    state.subscriptions = state.subscriptions.filter((s) => s.clientid !== clientid)
    return clients.delete(clientid)
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`

  return {
    version,
    url,
    clients,
    get subscriptions() {
      return state.subscriptions
    },
    set subscriptions(list: StandinSubscription[]) {
      state.subscriptions = list
    },
    published,
    requests,
    addClient,
    removeClient,
    subscribe(clientid, topic, qos = 0, opts = {}) {
      state.subscriptions = state.subscriptions.filter((s) => !(s.clientid === clientid && s.topic === topic))
      const sub: StandinSubscription = { clientid, topic, qos, ...opts }
      state.subscriptions.push(sub)
      return sub
    },
    unsubscribe(clientid, topic) {
      const before = state.subscriptions.length
      state.subscriptions = state.subscriptions.filter((s) => !(s.clientid === clientid && s.topic === topic))
      return state.subscriptions.length !== before
    },
    setDown(isDown, how = '503') {
      down = isDown ? how : false
    },
    setAuthFailure(failing) {
      authFailure = failing
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
    }
  }
}

// ------------------------------------------------------------------------------------ helpers

/** A Map that counts its changes, so a listing made of it knows when to be made again. */
class VersionedMap<K, V> extends Map<K, V> {
  version = 0

  override set(key: K, value: V): this {
    this.version++
    return super.set(key, value)
  }

  override delete(key: K): boolean {
    this.version++
    return super.delete(key)
  }

  override clear(): void {
    this.version++
    super.clear()
  }
}

interface Paged {
  data: Record<string, unknown>[]
  hasnext: boolean
  /** Rows of the whole (filtered) listing. */
  total: number
}

/**
 * PERFORMANCE: paginate, then render only the page's rows — rendering is per row and pure, so the
 * page is what rendering every row and then paginating gave (which cost O(all rows) per page).
 */
function pageOf<T>(items: T[], page: number, limit: number, hasnextOnExactEnd: boolean, render: (item: T) => Record<string, unknown>): Paged {
  const { data, hasnext } = paginate(items, page, limit, hasnextOnExactEnd)
  return { data: data.map((item) => render(item)), hasnext, total: items.length }
}

function paginate<T>(rows: T[], page: number, limit: number, hasnextOnExactEnd: boolean): { data: T[]; hasnext: boolean } {
  const start = (page - 1) * limit
  const data = rows.slice(start, start + limit)
  const end = start + limit
  const hasnext = rows.length > end || (hasnextOnExactEnd && rows.length === end && data.length > 0)
  return { data, hasnext }
}

function positiveInt(value: string | null, fallback: number): number | undefined {
  if (value === null) return fallback
  if (!/^\d+$/.test(value)) return undefined
  const n = Number(value)
  return n >= 1 && Number.isSafeInteger(n) ? n : undefined
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

function parseJson(raw: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(raw)
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

function topicList(topic: unknown, topics: unknown): string[] {
  const list: string[] = []
  if (typeof topic === 'string' && topic !== '') list.push(topic)
  if (typeof topics === 'string') list.push(...topics.split(',').map((t) => t.trim()).filter(Boolean))
  return list
}

function decodePayload(payload: unknown, encoding: unknown): Buffer | undefined {
  if (typeof payload !== 'string') return undefined
  if (encoding === 'plain') return Buffer.from(payload, 'utf8')
  if (encoding === 'base64') {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(payload) || payload.length % 4 !== 0) return undefined
    return Buffer.from(payload, 'base64')
  }
  return undefined
}

/** '$share/group/filter' -> 'filter' (what the filter matches). */
function unshare(topic: string): string {
  const m = /^\$share\/[^/]+\/(.*)$/.exec(topic)
  return m?.[1] ?? topic
}

/** MQTT topic filter matching ('+' one level, '#' the rest; '$' topics need a literal first level). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const t = topic.split('/')
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}

/** 32 upper-case hex characters, as emqx_guid:to_hexstr. */
function guid(): string {
  return randomBytes(16).toString('hex').toUpperCase()
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0')
}

/** EMQX 4: "YYYY-MM-DD HH:mm:ss" (here in UTC). */
function v4Time(ms: number): string {
  const d = new Date(ms)
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`
}

/** EMQX 5: RFC 3339 with milliseconds and the node's offset (here +00:00). */
function v5Time(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '+00:00')
}
