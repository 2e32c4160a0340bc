/** Session entities: `GET /v1/sessions` (filtered, paged by an opaque cursor), `GET /v1/sessions/{id}`. */
import type { FastifyPluginAsync } from 'fastify'
import { PROTOCOLS, type Protocol } from '../../domain/session.js'
import type { ApiContext } from '../context.js'
import { renderSession } from '../render.js'
import { badRequest } from '../bad-request.js'
import { decodeCursor, encodeCursor } from '../cursor.js'
import { errorSchema, sessionSchema } from '../schemas.js'

interface ListQuery {
  deviceId?: string
  clientId?: string
  protocol?: Protocol
  connected?: boolean
  limit: number
  cursor?: string
}

export const sessionRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.get<{ Querystring: ListQuery }>(
    '/v1/sessions',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            deviceId: { type: 'string', minLength: 1 },
            clientId: { type: 'string', minLength: 1 },
            protocol: { type: 'string', enum: [...PROTOCOLS] },
            connected: { type: 'boolean' },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            cursor: { type: 'string', minLength: 1, maxLength: 4096 }
          }
        },
        response: {
          200: {
            type: 'object',
            required: ['data', 'next'],
            properties: { data: { type: 'array', items: sessionSchema }, next: { type: ['string', 'null'] } }
          },
          400: errorSchema
        }
      }
    },
    async (request) => {
      const { cursor, limit, ...filters } = request.query
      const after = cursor === undefined ? undefined : decodeCursor(cursor)
      if (after === null) throw badRequest('querystring/cursor is not a cursor this API gave out')
      const page = ctx.registry.list({ ...filters, after, limit })
      const last = page.sessions.at(-1)
      return { data: page.sessions.map(renderSession), next: page.more && last ? encodeCursor(last.id) : null }
    }
  )

  app.get<{ Params: { id: string } }>(
    '/v1/sessions/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1 } } }, response: { 200: sessionSchema, 404: errorSchema } } },
    async (request, reply) => {
      const session = ctx.registry.get(request.params.id)
      if (!session) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no session ${request.params.id}` })
      return renderSession(session)
    }
  )
}
