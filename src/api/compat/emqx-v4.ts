/**
 * EMQX v4 management API, the part tools written for EMQX call: `GET /api/v4/clients`,
 * `GET /api/v4/subscriptions`, `DELETE /api/v4/clients/{clientid}`, and `POST /api/v4/mqtt/publish`
 * (emqx-v4-publish.ts). Field names, paging
 * (`_page`, `_limit`, `meta{page,limit,hasnext,count}`) and filters follow EMQX 4.x's
 * documentation; fields the hub cannot know (Erlang process figures, per-client traffic
 * counters, inflight windows) are present with neutral values, listed in docs/emqx-compat.md.
 * Errors answer `{ code, message }` with EMQX's codes (107: missing parameter, 108: bad parameter,
 * 109: body is not JSON, 112: client not found).
 */
import type { FastifyPluginAsync } from 'fastify'
import type { SessionRecord } from '../../domain/session.js'
import { topicMatches } from '../../domain/topic-match.js'
import type { ApiContext } from '../context.js'
import { isStoreFailure, retryAfterSeconds } from '../store-unavailable.js'
import { emqxTime } from './emqx-time.js'
import { emqxV4PublishRoute } from './emqx-v4-publish.js'

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

function page<T>(rows: T[], q: Paging) {
  const start = (q._page - 1) * q._limit
  const data = rows.slice(start, start + q._limit)
  return { code: 0, data, meta: { page: q._page, limit: q._limit, hasnext: start + q._limit < rows.length, count: rows.length } }
}

const byClientId = (a: SessionRecord, b: SessionRecord): number => (a.clientId < b.clientId ? -1 : a.clientId > b.clientId ? 1 : 0)

export function renderEmqxClient(s: SessionRecord, subscriptionsCnt: number) {
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
    // not tracked by the hub: neutral values (docs/emqx-compat.md)
    max_subscriptions: 0,
    inflight: 0,
    max_inflight: 0,
    mqueue_len: 0,
    max_mqueue: 0,
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

function clientMatches(s: SessionRecord, q: ClientsQuery): boolean {
  if (q.node !== undefined && s.node !== q.node) return false
  if (q.clientid !== undefined && s.clientId !== q.clientid) return false
  if (q.username !== undefined && s.username !== q.username) return false
  if (q.zone !== undefined && q.zone !== 'external') return false
  if (q.ip_address !== undefined && s.peerHost !== q.ip_address) return false
  if (q.conn_state !== undefined && (q.conn_state === 'connected') !== s.connected) return false
  if (q.clean_start !== undefined && s.cleanStart !== q.clean_start) return false
  if (q.proto_name !== undefined && (PROTO_NAMES[s.protocol] ?? s.protocol).toLowerCase() !== q.proto_name.toLowerCase()) return false
  if (q.proto_ver !== undefined && s.protoVer !== q.proto_ver) return false
  if (q._like_clientid !== undefined && !s.clientId.includes(q._like_clientid)) return false
  if (q._like_username !== undefined && !(s.username ?? '').includes(q._like_username)) return false
  if (q._gte_created_at !== undefined && s.createdAt < q._gte_created_at) return false
  if (q._lte_created_at !== undefined && s.createdAt > q._lte_created_at) return false
  if (q._gte_connected_at !== undefined && s.connectedAt < q._gte_connected_at) return false
  if (q._lte_connected_at !== undefined && s.connectedAt > q._lte_connected_at) return false
  return true
}

export const emqxV4Routes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
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
      const rows = [...ctx.registry.records()].filter((s) => clientMatches(s, q)).sort(byClientId)
      const result = page(rows, q)
      return { ...result, data: result.data.map((s) => renderEmqxClient(s, ctx.registry.topics.countOf(s.id))) }
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
      const rows: { topic: string; qos: number; node: string; clientid: string }[] = []
      const sessions = [...ctx.registry.records()].filter((s) => (q.clientid === undefined || s.clientId === q.clientid) && (q.node === undefined || s.node === q.node))
      for (const s of sessions.sort(byClientId)) {
        for (const t of ctx.registry.topics.topicsOf(s.id)) {
          if (q.topic !== undefined && t.topic !== q.topic) continue
          if (q.qos !== undefined && t.qos !== q.qos) continue
          if (q.share !== undefined && !t.topic.startsWith(`$share/${q.share}/`)) continue
          if (q._match_topic !== undefined && !topicMatches(t.topic, q._match_topic)) continue
          rows.push({ topic: t.topic, qos: t.qos, node: s.node, clientid: s.clientId })
        }
      }
      return page(rows, q)
    }
  )
}
