/** Subscription entities: `GET /v1/subscriptions` (by device or session, paged), `GET /v1/subscriptions/{id}`. */
import type { FastifyPluginAsync } from 'fastify'
import type { ApiContext } from '../context.js'
import { afterCursor, page, pagedQuerySchema, pageSchema } from '../paging.js'
import { renderSubscription } from '../render.js'
import { errorSchema, subscriptionSchema } from '../schemas.js'

interface ListQuery {
  deviceId?: string
  sessionId?: string
  limit: number
  cursor?: string
}

export const subscriptionRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.get<{ Querystring: ListQuery }>(
    '/v1/subscriptions',
    {
      schema: {
        querystring: pagedQuerySchema({ deviceId: { type: 'string', minLength: 1 }, sessionId: { type: 'string', minLength: 1 } }),
        response: { 200: pageSchema(subscriptionSchema), 400: errorSchema }
      }
    },
    async (request) => {
      const { cursor, limit, ...filters } = request.query
      const found = await ctx.fleet.subscriptions({ ...filters, after: afterCursor(cursor), limit })
      return page(found.subscriptions, found.more, (e) => e.id, renderSubscription)
    }
  )

  app.get<{ Params: { id: string } }>(
    '/v1/subscriptions/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1 } } }, response: { 200: subscriptionSchema, 404: errorSchema } } },
    async (request, reply) => {
      const entity = await ctx.fleet.subscription(request.params.id)
      if (!entity) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no subscription ${request.params.id}` })
      return renderSubscription(entity)
    }
  )
}
