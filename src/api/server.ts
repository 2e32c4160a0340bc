/**
 * The HTTP API: fastify, a JSON schema on every route, Basic auth on everything but the
 * probes and metrics. Native routes answer errors as fastify does (`statusCode`, `error`,
 * `message`); the EMQX-compatible ones as EMQX does (`code`, `message`).
 */
import basicAuth from '@fastify/basic-auth'
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify'
import type { Logger } from 'pino'
import { timingSafeEqual } from 'node:crypto'
import { emqxV4Routes } from './compat/emqx-v4.js'
import { formatSchemaErrors } from './schema-errors.js'
import type { ApiContext } from './context.js'
import { deviceRoutes } from './routes/devices.js'
import { healthRoutes } from './routes/health.js'
import { sessionRoutes } from './routes/sessions.js'

const PUBLIC_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

export async function buildApi(ctx: ApiContext, log: Logger) {
  // typed as fastify's logger interface, so routes and plugins see the usual FastifyInstance
  const logger: FastifyBaseLogger = log.child({ component: 'api' })
  const app = Fastify({
    loggerInstance: logger,
    // one line per request would drown the lifecycle log; errors are still logged
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 8 * 1024 * 1024,
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, allErrors: false } },
    schemaErrorFormatter: formatSchemaErrors
  })

  await app.register(basicAuth, {
    authenticate: { realm: 'iothub' },
    validate: async (username, password) => {
      // both compared, always, so timing does not tell which one was wrong
      const userOk = sameSecret(username, ctx.config.apiUser)
      const passwordOk = sameSecret(password, ctx.config.apiPassword)
      if (!userOk || !passwordOk) throw new Error('wrong API credentials')
    }
  })
  app.addHook('onRequest', (request, reply, done) => {
    if (PUBLIC_PATHS.has(request.routeOptions.url ?? '')) return done()
    app.basicAuth(request, reply, done)
  })

  app.setErrorHandler((error: Error & { validation?: unknown; statusCode?: number }, request, reply) => {
    const statusCode = error.validation ? 400 : (error.statusCode ?? 500)
    if (statusCode === 400) ctx.metrics.reject('bad_api_request')
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    return reply.code(statusCode).send({
      statusCode,
      error: statusCode === 400 ? 'Bad Request' : statusCode === 401 ? 'Unauthorized' : statusCode >= 500 ? 'Internal Server Error' : 'Error',
      message: statusCode >= 500 ? 'internal error (see the hub log)' : error.message
    })
  })

  await app.register(healthRoutes(ctx))
  await app.register(deviceRoutes(ctx))
  await app.register(sessionRoutes(ctx))
  await app.register(emqxV4Routes(ctx))
  return app
}
