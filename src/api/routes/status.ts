/**
 * `GET /v1/status`: one look at a replica — readiness (as /readyz), the fleet's counts, this
 * replica's rates over the last 10 s, its store, the replicas and the last reconcile.
 * `GET /v1/status/history`: this replica's samples of the last hour, one per 10 s.
 *
 * Counts are the fleet's totals as the gauges read them (fleet-gauges.ts): shared, never a
 * count of the fleet per request — on PostgreSQL the stored totals every batch moves (at most
 * 1 s old), elsewhere a walk of the caches (at most 15 s old). Rates are this replica's own (each
 * replica handles its share of the lifecycle events and pushes); counts are fleet-wide.
 */
import type { FastifyPluginAsync } from 'fastify'
import type { TotalsReader } from '../../registry/fleet-gauges.js'
import type { StatusSampler } from '../../observability/status-sampler.js'
import type { ApiContext } from '../context.js'
import { renderReplica, replicaSchema } from './replicas.js'
import { errorSchema } from '../schemas.js'

/** What the status needs beyond the rest of the API's context. */
export interface StatusSources {
  sampler: Pick<StatusSampler, 'recent' | 'history'>
  totals: TotalsReader
  store(): { kind: string; healthy: boolean }
  /** The newest reconcile's report (GET /v1/reconcile/last); null in embedded mode or before the first. */
  lastReconcile(): object | null
}

const countsByKey = { type: 'object', additionalProperties: { type: 'integer' } } as const
const seconds = { type: ['number', 'null'] } as const

const statusSchema = {
  type: 'object',
  properties: {
    node: { type: 'string' },
    ready: { type: 'boolean' },
    checks: { type: 'object', additionalProperties: { type: 'object', properties: { ok: { type: 'boolean' }, detail: { type: 'string' } } } },
    counts: {
      type: ['object', 'null'],
      properties: {
        devices: { type: 'integer' },
        sessions: { type: 'integer' },
        connected: { type: 'integer' },
        subscriptions: { type: 'integer' },
        connectedByProtocol: countsByKey,
        connectedByNode: countsByKey
      }
    },
    rates: { type: 'object', properties: { lifecycleEventsPerSecond: { type: 'number' }, pushesPerSecond: { type: 'number' } } },
    store: { type: 'object', properties: { kind: { type: 'string' }, healthy: { type: 'boolean' }, commitSecondsP50: seconds, commitSecondsP99: seconds } },
    replicas: { type: 'array', items: replicaSchema },
    reconcile: { type: ['object', 'null'], additionalProperties: true }
  }
} as const

const historySchema = {
  type: 'object',
  properties: {
    intervalSeconds: { type: 'integer' },
    samples: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          at: { type: 'string', format: 'date-time' },
          connected: { type: ['integer', 'null'] },
          lifecycleEventsPerSecond: { type: 'number' },
          pushesPerSecond: { type: 'number' }
        }
      }
    }
  }
} as const

export const statusRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  const sources = ctx.status
  app.get('/v1/status', { schema: { response: { 200: statusSchema, 503: errorSchema } } }, async (request) => {
    const [readiness, totals, recent, replicas] = await Promise.all([
      ctx.readiness(),
      // the store down leaves no counts, not no status: the rest tells what is wrong
      sources.totals().catch((error: Error) => {
        request.log.warn({ err: error.message }, 'status: the fleet could not be counted')
        return null
      }),
      sources.sampler.recent(),
      ctx.replicas().catch(() => [])
    ])
    const store = sources.store()
    return {
      node: ctx.config.node,
      ready: readiness.ready,
      checks: readiness.checks,
      counts: totals && {
        devices: totals.devices,
        sessions: totals.sessions,
        connected: Object.values(totals.connectedByProtocol).reduce((sum, n) => sum + n, 0),
        subscriptions: totals.subscriptions,
        connectedByProtocol: totals.connectedByProtocol,
        connectedByNode: totals.connectedByNode
      },
      rates: { lifecycleEventsPerSecond: recent.lifecycleEventsPerSecond, pushesPerSecond: recent.pushesPerSecond },
      store: { kind: store.kind, healthy: store.healthy, commitSecondsP50: recent.commitSecondsP50, commitSecondsP99: recent.commitSecondsP99 },
      replicas: replicas.map(renderReplica),
      reconcile: sources.lastReconcile()
    }
  })

  app.get('/v1/status/history', { schema: { response: { 200: historySchema } } }, async () => sources.sampler.history())
}
