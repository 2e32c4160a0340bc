/**
 * Session entities: `GET /v1/sessions` (filtered, paged by an opaque cursor), `GET /v1/sessions/{id}`,
 * and `DELETE /v1/sessions/{id}`, the native twin of EMQX's kick (`DELETE /api/v4/clients/{id}`).
 */
import type { FastifyPluginAsync } from 'fastify'
import { PROTOCOLS, type Protocol } from '../../domain/session.js'
import type { ApiContext } from '../context.js'
import { renderSession } from '../render.js'
import { afterCursor, page, pagedQuerySchema, pageSchema } from '../paging.js'
import { errorSchema, sessionSchema } from '../schemas.js'

interface ListQuery {
  deviceId?: string
  clientId?: string
  /** Sessions whose client id holds this text (EMQX's `_like_clientid`). */
  clientIdContains?: string
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
        querystring: pagedQuerySchema({
          deviceId: { type: 'string', minLength: 1 },
          clientId: { type: 'string', minLength: 1 },
          clientIdContains: { type: 'string', minLength: 1 },
          protocol: { type: 'string', enum: [...PROTOCOLS] },
          connected: { type: 'boolean' }
        }),
        response: { 200: pageSchema(sessionSchema), 400: errorSchema }
      }
    },
    async (request) => {
      const { cursor, limit, clientIdContains, ...filters } = request.query
      const found = await ctx.fleet.sessions({ ...filters, clientIdLike: clientIdContains }, { after: afterCursor(cursor), limit })
      return page(found.sessions, found.more, (s) => s.id, renderSession)
    }
  )

  app.get<{ Params: { id: string } }>(
    '/v1/sessions/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1 } } }, response: { 200: sessionSchema, 404: errorSchema } } },
    async (request, reply) => {
      const session = await ctx.fleet.session(request.params.id)
      if (!session) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no session ${request.params.id}` })
      return renderSession(session)
    }
  )

  app.delete<{ Params: { id: string } }>(
    '/v1/sessions/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1 } } }, response: { 404: errorSchema } } },
    async (request, reply) => {
      const { id } = request.params
      // connected: the carrier closes it (embedded: the broker; EMQX mode: EMQX's REST kick);
      // offline: the persistent session is discarded, as EMQX's kick does
      if ((await ctx.kick(id)) || (await ctx.registry.discard(id))) return reply.code(204).send()
      return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no session ${id}` })
    }
  )
}
