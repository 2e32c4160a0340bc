/**
 * EMQX mode's reconcile, for operators: `GET /v1/reconcile/last` shows the last run's report
 * (trigger, duration, pages, ghosts ended, sessions added, topics fixed, error), and
 * `POST /v1/reconcile` runs one now and answers its report.
 */
import type { FastifyPluginAsync } from 'fastify'
import type { ReconcileReport, Reconciler } from './reconcile.js'

/** The API's error body (kept here: an adapter does not import the API). */
const errorSchema = {
  type: 'object',
  properties: { statusCode: { type: 'integer' }, error: { type: 'string' }, message: { type: 'string' } }
} as const

const report = {
  type: 'object',
  properties: {
    trigger: { type: 'string' },
    startedAt: { type: 'integer' },
    durationMs: { type: 'integer' },
    pages: { type: 'integer' },
    brokerClients: { type: 'integer' },
    brokerSubscriptions: { type: 'integer' },
    ghostsEnded: { type: 'integer' },
    offlineEnded: { type: 'integer' },
    sessionsAdded: { type: 'integer' },
    sessionsCorrected: { type: 'integer' },
    topicsAdded: { type: 'integer' },
    topicsRemoved: { type: 'integer' },
    skippedChanged: { type: 'integer' },
    skippedBehind: { type: 'integer' },
    error: { type: ['string', 'null'] }
  }
} as const

/** `last`: the newest report of this replica's runs and the lease holder's (with several replicas, one reconciles). */
export const reconcileRoutes = (reconciler: Reconciler, last: () => ReconcileReport | undefined): FastifyPluginAsync => async (app) => {
  app.get('/v1/reconcile/last', { schema: { response: { 200: report, 404: errorSchema } } }, async (_request, reply) => {
    const shown = last()
    if (!shown) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'no reconcile has run yet' })
    return shown
  })

  app.post('/v1/reconcile', { schema: { response: { 200: report } } }, async () => reconciler.run('api'))
}
