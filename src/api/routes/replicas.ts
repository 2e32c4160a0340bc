/**
 * `GET /v1/replicas`: the replicas of this hub that share its store — each one's node name, API
 * address, when it started and was last heard of, how far it has followed the change log, and
 * whether it is live. With SQLite, the one replica there is.
 */
import type { FastifyPluginAsync } from 'fastify'
import type { ApiContext } from '../context.js'
import type { ReplicaView } from '../../replicas/replica-keeper.js'
import { errorSchema } from '../schemas.js'

export const replicaSchema = {
  type: 'object',
  properties: {
    node: { type: 'string' },
    address: { type: ['string', 'null'] },
    startedAt: { type: 'string' },
    lastSeen: { type: 'string' },
    logPosition: { type: 'integer' },
    live: { type: 'boolean' },
    self: { type: 'boolean' }
  }
} as const

const iso = (ms: number): string => new Date(ms).toISOString()

export const renderReplica = (r: ReplicaView) => ({ ...r, startedAt: iso(r.startedAt), lastSeen: iso(r.lastSeen) })

export const replicaRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.get(
    '/v1/replicas',
    { schema: { response: { 200: { type: 'object', properties: { data: { type: 'array', items: replicaSchema } } }, 503: errorSchema } } },
    async () => {
      const replicas = await ctx.replicas()
      return { data: replicas.map(renderReplica) }
    }
  )
}
