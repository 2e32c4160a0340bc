/** Probes and metrics: no credentials, no per-device data. */
import type { FastifyPluginAsync } from 'fastify'
import type { ApiContext } from '../context.js'

const checksSchema = {
  type: 'object',
  additionalProperties: { type: 'object', properties: { ok: { type: 'boolean' }, detail: { type: 'string' } } }
} as const

export const healthRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.get('/healthz', { schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } }, async () => ({
    status: 'ok'
  }))

  app.get(
    '/readyz',
    {
      schema: {
        response: {
          200: { type: 'object', properties: { status: { type: 'string' }, checks: checksSchema } },
          503: { type: 'object', properties: { status: { type: 'string' }, checks: checksSchema } }
        }
      }
    },
    async (_request, reply) => {
      const { ready, checks } = await ctx.readiness()
      return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
    }
  )

  app.get('/metrics', { schema: { response: { 200: { type: 'string' } } } }, async (_request, reply) => {
    const body = await ctx.metrics.registry.metrics()
    return reply.type(ctx.metrics.registry.contentType).send(body)
  })
}
