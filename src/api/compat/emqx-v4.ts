/**
 * EMQX v4 management API, the part tools written for EMQX call: `GET /api/v4/clients`,
 * `GET /api/v4/subscriptions`, `DELETE /api/v4/clients/{clientid}`, and `POST /api/v4/mqtt/publish`
 * (emqx-v4-publish.ts). Field names, paging
 * (`_page`, `_limit`, `meta{page,limit,hasnext,count}`) and filters follow EMQX 4.x's
 * documentation; fields the hub cannot know (Erlang process figures, per-client traffic
 * counters, inflight windows) are present with neutral values, listed in docs/emqx-compat.md.
 * Errors answer `{ code, message }` with EMQX's codes (107: missing parameter, 108: bad parameter,
 * 109: body is not JSON, 112: client not found).
 *
 * Paging as EMQX 4.x's emqx_mgmt_api (`node_query`/`cluster_query`): `hasnext` is whether a row
 * follows the page (one more row is read), and `count` is the total where the query has no
 * condition and -1 where it has any (EMQX's "fixed at -1 in multi-condition/fuzzy query" —
 * docs/emqx-compat.md). So no listing counts what it filters: the unfiltered totals are the
 * store's (one row with PostgreSQL), and a page continues from the last row of the page this
 * replica served before it (page-positions.ts) instead of walking every row before it.
 */
import type { FastifyPluginAsync } from 'fastify'
import { PROTOCOLS, type Protocol, type QoS, type SessionRecord } from '../../domain/session.js'
import { topicCursor, type SessionFilter, type TopicFilter } from '../../store/fleet-reads.js'
import type { SessionHolding } from '../../carrier/carrier.js'
import type { ApiContext } from '../context.js'
import { isStoreFailure, retryAfterSeconds } from '../store-unavailable.js'
import { emqxTime } from './emqx-time.js'
import { emqxV4PublishRoute } from './emqx-v4-publish.js'
import { PagePositions, type MarkSource } from './page-positions.js'

const PROTO_NAMES: Record<string, string> = { mqtt: 'MQTT', coap: 'CoAP' }

interface Paging {
  _page: number
  _limit: number
}

interface ClientsQuery extends Paging {
  node?: string
  clientid?: string
  username?: string
  zone?: string
  ip_address?: string
  conn_state?: 'connected' | 'idle' | 'disconnected'
  clean_start?: boolean
  proto_name?: string
  proto_ver?: number
  _like_clientid?: string
  _like_username?: string
  _gte_created_at?: number
  _lte_created_at?: number
  _gte_connected_at?: number
  _lte_connected_at?: number
}

interface SubscriptionsQuery extends Paging {
  node?: string
  clientid?: string
  topic?: string
  qos?: number
  share?: string
  _match_topic?: string
}

const pagingProperties = {
  _page: { type: 'integer', minimum: 1, default: 1 },
  _limit: { type: 'integer', minimum: 1, maximum: 10000, default: 10000 },
  // a cache-buster (`_=1640597122737`, epoch ms), as browser-made calls carry: accepted and ignored
  _: { type: 'string' }
} as const

const metaSchema = {
  type: 'object',
  properties: { page: { type: 'integer' }, limit: { type: 'integer' }, hasnext: { type: 'boolean' }, count: { type: 'integer' } }
} as const

const emqxErrorSchema = { type: 'object', properties: { code: { type: 'integer' }, message: { type: 'string' } } } as const

/** EMQX v4's page answer: `_page` is an offset into the rows ordered by client id. */
function page<T>(found: { data: T[]; more: boolean }, count: number, q: Paging) {
  return { code: 0, data: found.data, meta: { page: q._page, limit: q._limit, hasnext: found.more, count } }
}

const offsetOf = (q: Paging): number => (q._page - 1) * q._limit

/** What EMQX answers as `count` for a query with conditions: it does not count them (emqx_mgmt_api). */
const NOT_COUNTED = -1

/** The query parameters that are no condition: paging, and the cache-buster. */
const PAGING_KEYS = new Set(['_page', '_limit', '_'])

/** Whether the query has a condition (any parameter but paging's), as EMQX tells them apart. */
const hasConditions = (q: object): boolean => Object.entries(q).some(([key, value]) => value !== undefined && !PAGING_KEYS.has(key))

export function renderEmqxClient(s: SessionRecord, subscriptionsCnt: number, holding?: SessionHolding) {
  return {
    clientid: s.clientId,
    username: s.username ?? '',
    node: s.node,
    connected: s.connected,
    ip_address: s.peerHost ?? '',
    port: s.peerPort ?? 0,
    proto_name: PROTO_NAMES[s.protocol] ?? s.protocol.toUpperCase(),
    proto_ver: s.protoVer,
    keepalive: s.keepalive,
    clean_start: s.cleanStart,
    expiry_interval: s.expiryInterval,
    connected_at: emqxTime(s.connectedAt),
    ...(s.connected || s.disconnectedAt === null ? {} : { disconnected_at: emqxTime(s.disconnectedAt) }),
    created_at: emqxTime(s.createdAt),
    subscriptions_cnt: subscriptionsCnt,
    mountpoint: s.mountpoint,
    zone: 'external',
    is_bridge: false,
    // where the hub's own broker holds the session: its limits and its queue (docs/emqx-compat.md);
    // in EMQX mode EMQX holds them, and they are neutral values here
    max_subscriptions: holding?.maxSubscriptions ?? 0,
    // a CoAP session has no queue: its notifications go out as they come, or not at all
    mqueue_len: s.protocol === 'mqtt' ? (holding?.queued(s.clientId) ?? 0) : 0,
    max_mqueue: s.protocol === 'mqtt' ? (holding?.maxQueued ?? 0) : 0,
    // not tracked by the hub: neutral values (docs/emqx-compat.md)
    inflight: 0,
    max_inflight: 0,
    mqueue_dropped: 0,
    awaiting_rel: 0,
    max_awaiting_rel: 0,
    recv_cnt: 0,
    recv_msg: 0,
    recv_oct: 0,
    recv_pkt: 0,
    send_cnt: 0,
    send_msg: 0,
    send_oct: 0,
    send_pkt: 0,
    heap_size: 0,
    mailbox_len: 0,
    reductions: 0
  }
}

/**
 * EMQX's client filters as a session filter; null when nothing can match (a zone other than the
 * one every client is in, a protocol the hub does not speak).
 */
function sessionFilterOf(q: ClientsQuery): SessionFilter | null {
  if (q.zone !== undefined && q.zone !== 'external') return null
  let protocol: Protocol | undefined
  if (q.proto_name !== undefined) {
    protocol = PROTOCOLS.find((p) => (PROTO_NAMES[p] ?? p).toLowerCase() === q.proto_name!.toLowerCase())
    if (protocol === undefined) return null
  }
  return {
    node: q.node,
    clientId: q.clientid,
    username: q.username,
    peerHost: q.ip_address,
    connected: q.conn_state === undefined ? undefined : q.conn_state === 'connected',
    cleanStart: q.clean_start,
    protocol,
    protoVer: q.proto_ver,
    clientIdLike: q._like_clientid,
    usernameLike: q._like_username,
    createdAtFrom: q._gte_created_at,
    createdAtTo: q._lte_created_at,
    connectedAtFrom: q._gte_connected_at,
    connectedAtTo: q._lte_connected_at
  }
}

function topicFilterOf(q: SubscriptionsQuery): TopicFilter {
  return { clientId: q.clientid, node: q.node, topic: q.topic, qos: q.qos as QoS | undefined, share: q.share, matchTopic: q._match_topic }
}

export const emqxV4Routes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  const positions = new PagePositions({
    onMarksFailed: (error) => app.log.warn({ err: (error as Error).message }, 'EMQX-compatible paging: could not learn where the pages of a listing start')
  })
  // where a whole listing's marks are learned (PagePositions): stores whose offsets are walks
  const marksOf = (listing: 'sessions' | 'topics'): MarkSource | undefined => {
    const fleet = ctx.fleet
    return fleet.marks ? (every) => fleet.marks!(listing, every) : undefined
  }
  app.setErrorHandler((error: Error & { validation?: unknown; statusCode?: number }, _request, reply) => {
    if (error.validation) {
      ctx.metrics.reject('bad_api_request')
      return reply.code(400).send({ code: 108, message: error.message })
    }
    if (isStoreFailure(error)) {
      ctx.metrics.reject('store_unavailable')
      app.log.warn({ err: error.message }, 'EMQX-compatible request refused: the store is unavailable')
      return reply.code(503).header('retry-after', retryAfterSeconds(ctx.config.storeTimeout)).send({ code: 102, message: `store unavailable: ${error.message}` })
    }
    const statusCode = error.statusCode ?? 500
    if (statusCode >= 500) app.log.error({ err: error }, 'EMQX-compatible API failed')
    if (statusCode === 400) ctx.metrics.reject('bad_api_request')
    // 109: EMQX's "request parameter is not a json" (fastify's body parser errors are FST_ERR_CTP_*)
    const notJson = String((error as { code?: string }).code ?? '').startsWith('FST_ERR_CTP')
    const code = (error as { emqxCode?: number }).emqxCode ?? (notJson ? 109 : 102)
    return reply.code(statusCode).send({ code, message: statusCode >= 500 ? 'internal error' : error.message })
  })
  await app.register(emqxV4PublishRoute(ctx))

  app.get<{ Querystring: ClientsQuery }>(
    '/api/v4/clients',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...pagingProperties,
            node: { type: 'string' },
            clientid: { type: 'string' },
            username: { type: 'string' },
            zone: { type: 'string' },
            ip_address: { type: 'string' },
            conn_state: { type: 'string', enum: ['connected', 'idle', 'disconnected'] },
            clean_start: { type: 'boolean' },
            proto_name: { type: 'string' },
            proto_ver: { type: 'integer' },
            _like_clientid: { type: 'string' },
            _like_username: { type: 'string' },
            _gte_created_at: { type: 'integer' },
            _lte_created_at: { type: 'integer' },
            _gte_connected_at: { type: 'integer' },
            _lte_connected_at: { type: 'integer' }
          }
        },
        response: {
          200: {
            type: 'object',
            properties: { code: { type: 'integer' }, meta: metaSchema, data: { type: 'array', items: { type: 'object', additionalProperties: true } } }
          },
          400: emqxErrorSchema
        }
      }
    },
    async (request) => {
      const q = request.query
      const filter = sessionFilterOf(q)
      if (filter === null) return page({ data: [], more: false }, NOT_COUNTED, q)
      const listing = `clients ${JSON.stringify(filter)}`
      // the total first: it also says whether the page is nearer the end than a page served
      const count = hasConditions(q) ? NOT_COUNTED : await ctx.fleet.countSessions({})
      const whole = count !== NOT_COUNTED
      const found = await ctx.fleet.sessions(filter, await positions.request(listing, offsetOf(q), q._limit, whole ? count : undefined, whole ? marksOf('sessions') : undefined))
      positions.served(listing, offsetOf(q), found.sessions.length, found.sessions.at(-1)?.id)
      return page({ data: found.sessions.map((s) => renderEmqxClient(s, s.topics.length, ctx.holding)), more: found.more }, count, q)
    }
  )

  app.delete<{ Params: { clientid: string } }>(
    '/api/v4/clients/:clientid',
    { schema: { params: { type: 'object', properties: { clientid: { type: 'string', minLength: 1 } } }, response: { 200: emqxErrorSchema, 404: emqxErrorSchema } } },
    async (request, reply) => {
      const { clientid } = request.params
      if (await ctx.kick(clientid)) return { code: 0 }
      // not connected: an offline persistent session is discarded, as EMQX's kick does
      if (await ctx.registry.discard(clientid)) return { code: 0 }
      return reply.code(404).send({ code: 112, message: `client ${clientid} not found` })
    }
  )

  app.get<{ Querystring: SubscriptionsQuery }>(
    '/api/v4/subscriptions',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...pagingProperties,
            node: { type: 'string' },
            clientid: { type: 'string' },
            topic: { type: 'string' },
            qos: { type: 'integer', enum: [0, 1, 2] },
            share: { type: 'string' },
            _match_topic: { type: 'string' }
          }
        },
        response: {
          200: {
            type: 'object',
            properties: {
              code: { type: 'integer' },
              meta: metaSchema,
              data: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { topic: { type: 'string' }, qos: { type: 'integer' }, node: { type: 'string' }, clientid: { type: 'string' } }
                }
              }
            }
          },
          400: emqxErrorSchema
        }
      }
    },
    async (request) => {
      const q = request.query
      const filter = topicFilterOf(q)
      const listing = `subscriptions ${JSON.stringify(filter)}`
      const count = hasConditions(q) ? NOT_COUNTED : await ctx.fleet.countTopics({})
      const whole = count !== NOT_COUNTED
      const found = await ctx.fleet.topics(filter, await positions.request(listing, offsetOf(q), q._limit, whole ? count : undefined, whole ? marksOf('topics') : undefined))
      const last = found.topics.at(-1)
      positions.served(listing, offsetOf(q), found.topics.length, last && topicCursor(last))
      return page({ data: found.topics.map((t) => ({ topic: t.topic, qos: t.qos, node: t.node, clientid: t.clientId })), more: found.more }, count, q)
    }
  )
}
