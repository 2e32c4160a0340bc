/** Subscription entities: `GET /v1/subscriptions` (by device or session, paged), `GET /v1/subscriptions/{id}`. */
import type { FastifyPluginAsync } from 'fastify'
import type { ApiContext } from '../context.js'
import { badRequest } from '../bad-request.js'
import { decodeCursor, encodeCursor } from '../cursor.js'
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
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            deviceId: { type: 'string', minLength: 1 },
            sessionId: { type: 'string', minLength: 1 },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', minLength: 1, maxLength: 4096 }
          }
        },
        response: {
          200: {
            type: 'object',
            required: ['data', 'next'],
            properties: { data: { type: 'array', items: subscriptionSchema }, next: { type: ['string', 'null'] } }
          },
          400: errorSchema
        }
      }
    },
    async (request) => {
      const { cursor, limit, ...filters } = request.query
      const after = cursor === undefined ? undefined : decodeCursor(cursor)
      if (after === null) throw badRequest('querystring/cursor is not a cursor this API gave out')
      const page = ctx.registry.subscriptions.list({ ...filters, after, limit })
      const last = page.subscriptions.at(-1)
      return { data: page.subscriptions.map(renderSubscription), next: page.more && last ? encodeCursor(last.id) : null }
    }
  )

  app.get<{ Params: { id: string } }>(
    '/v1/subscriptions/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1 } } }, response: { 200: subscriptionSchema, 404: errorSchema } } },
    async (request, reply) => {
      const entity = ctx.registry.subscriptions.get(request.params.id)
      if (!entity) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no subscription ${request.params.id}` })
      return renderSubscription(entity)
    }
  )
}
