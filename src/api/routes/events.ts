/**
 * `GET /v1/events`: the hub's events as server-sent events (src/events, docs/events.md). Resumes
 * after `Last-Event-ID` (what an EventSource sends when it reconnects: it wins over the URL's
 * `after`, which the reconnect repeats) or `?after=`; without either, from now.
 */
import type { FastifyPluginAsync } from 'fastify'
import { parseFilter } from '../../events/event-filter.js'
import { badRequest } from '../bad-request.js'
import type { ApiContext } from '../context.js'
import { errorSchema } from '../schemas.js'

/** A sequence number as the query or the header gives it: digits only (no sign, no fraction, no blank). */
const SEQ = /^[0-9]{1,15}$/

interface EventsQuery {
  after?: string
  types?: string
  deviceId?: string
  owner?: string
}

export const eventRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  // open streams would hold the server's close: they are ended first, each told where to resume
  app.addHook('preClose', async () => ctx.events.stop())

  app.get<{ Querystring: EventsQuery }>(
    '/v1/events',
    {
      schema: {
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            after: { type: 'string', pattern: SEQ.source },
            types: { type: 'string', minLength: 1, maxLength: 1000 },
            deviceId: { type: 'string', minLength: 1, maxLength: 256 },
            owner: { type: 'string', minLength: 1, maxLength: 256 }
          }
        },
        response: { 400: errorSchema, 410: { ...errorSchema, properties: { ...errorSchema.properties, oldest: { type: 'integer' } } } }
      }
    },
    async (request, reply) => {
      const { after: afterQuery, ...filters } = request.query
      const lastEventId = request.headers['last-event-id']
      if (lastEventId !== undefined && (typeof lastEventId !== 'string' || !SEQ.test(lastEventId))) {
        throw badRequest('the Last-Event-ID header must be the seq of an event (digits)')
      }
      const filter = parseFilter(filters)
      if ('error' in filter) throw badRequest(filter.error)
      const resumeFrom = lastEventId ?? afterQuery
      const after = resumeFrom === undefined ? ctx.events.delivered : Number(resumeFrom)
      const pruned = await ctx.events.prunedAfter(after)
      if (pruned) {
        return reply.code(410).send({
          statusCode: 410,
          error: 'Gone',
          message: `the change log no longer holds the events after ${after}: the oldest it holds is ${pruned.oldest} (resume with after=${pruned.oldest - 1})`,
          oldest: pruned.oldest
        })
      }
      reply.hijack()
      const res = reply.raw
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        connection: 'keep-alive',
        // nginx and its kind would hold events back to fill their buffers
        'x-accel-buffering': 'no'
      })
      // headers and a first line now: the consumer knows it is connected before any event
      res.write(': connected\n\n')
      ctx.events.open(res, after, filter)
    }
  )
}
