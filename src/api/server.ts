/**
 * The HTTP API: fastify (over HTTPS when given the hub's certificate), a JSON schema on every
 * route, Basic auth on everything but the probes and metrics. Native routes answer errors as
 * fastify does (`statusCode`, `error`, `message`); the EMQX-compatible ones as EMQX does
 * (`code`, `message`).
 */
import { createServer as createHttpServer, type RequestListener, type Server as HttpServer } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import Fastify, { LogController, type FastifyBaseLogger } from 'fastify'
import type { Logger } from 'pino'
import { emqxV4Routes } from './compat/emqx-v4.js'
import { tkeelCoreRoutes } from './compat/tkeel-core.js'
import { registerAuthentication } from './authentication.js'
import { CONSOLE_PATHS, consoleRoutes, quietChallengeForConsole } from './console.js'
import { parseJsonBodiesWithin } from './json-body.js'
import { isOpenApiPath, registerOpenApi } from './openapi/openapi.js'
import { formatSchemaErrors } from './schema-errors.js'
import { isStoreFailure, retryAfterSeconds } from './store-unavailable.js'
import type { ApiContext } from './context.js'
import { deviceRoutes } from './routes/devices.js'
import { downstreamRoutes } from './routes/downstream.js'
import { eventRoutes } from './routes/events.js'
import { fleetPushRoutes } from './routes/fleet-pushes.js'
import { healthRoutes } from './routes/health.js'
import { replicaRoutes } from './routes/replicas.js'
import { sessionRoutes } from './routes/sessions.js'
import { statusRoutes } from './routes/status.js'
import { subscriptionRoutes } from './routes/subscriptions.js'
import type { TlsCredentials } from '../tls/tls-credentials.js'

const PUBLIC_PATHS = new Set(['/healthz', '/readyz', '/metrics'])

/**
 * Node looks for requests past their timeout only every so often (30 s by default): a tenth of
 * the timeout keeps the time a slow request is held within 110 % of it.
 */
function timeoutCheckInterval(timeoutMs: number): number {
  return Math.min(Math.max(Math.floor(timeoutMs / 10), 25), 5000)
}

/** With `tls`, the API serves HTTPS only, and follows the certificate's reloads. */
export async function buildApi(ctx: ApiContext, log: Logger, tls?: TlsCredentials) {
  // typed as fastify's logger interface, so routes and plugins see the usual FastifyInstance
  const logger: FastifyBaseLogger = log.child({ component: 'api' })
  // a request that trickles in holds its socket and its parser: it gets 408 once too slow
  // (set on our own server: fastify passes its timeout options only to a server it makes)
  const timeouts = {
    requestTimeout: ctx.config.httpRequestTimeout,
    headersTimeout: ctx.config.httpRequestTimeout,
    connectionsCheckingInterval: timeoutCheckInterval(ctx.config.httpRequestTimeout)
  }
  const app = Fastify({
    loggerInstance: logger,
    // one line per request would drown the lifecycle log; errors are still logged
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 8 * 1024 * 1024,
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, allErrors: false } },
    schemaErrorFormatter: formatSchemaErrors,
    // our own server rather than fastify's `https` option: the routes keep fastify's plain
    // instance types, and the server is at hand for the certificate reloads
    serverFactory: (handler: RequestListener): HttpServer => {
      if (!tls) return createHttpServer(timeouts, handler)
      const server = createHttpsServer({ ...tls.options, ...timeouts, handshakeTimeout: ctx.config.tlsHandshakeTimeout }, handler)
      tls.serve(server, 'https')
      return server
    }
  })

  // the carrier's routes that check credentials of their own (EMQX's WebHook sends a shared secret)
  const ownAuthPaths = new Set(ctx.carrierRoutes?.ownAuthPaths)
  await registerAuthentication(app, ctx, (route) => PUBLIC_PATHS.has(route) || CONSOLE_PATHS.has(route) || ownAuthPaths.has(route) || isOpenApiPath(route))
  quietChallengeForConsole(app)
  parseJsonBodiesWithin(app, ctx.config.maxJsonDepth)

  app.setErrorHandler((error: Error & { validation?: unknown; statusCode?: number }, request, reply) => {
    if (isStoreFailure(error)) {
      ctx.metrics.reject('store_unavailable')
      request.log.warn({ err: error.message }, 'request refused: the store is unavailable')
      return reply
        .code(503)
        .header('retry-after', retryAfterSeconds(ctx.config.storeTimeout))
        .send({ statusCode: 503, error: 'Service Unavailable', message: `store unavailable, nothing was changed: ${error.message}` })
    }
    const statusCode = error.validation ? 400 : (error.statusCode ?? 500)
    // a body over the route's limit (413) is bad input as much as one that fails its schema
    if (statusCode === 400 || statusCode === 413) ctx.metrics.reject('bad_api_request')
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    return reply.code(statusCode).send({
      statusCode,
      error: statusCode === 400 ? 'Bad Request' : statusCode === 401 ? 'Unauthorized' : statusCode === 413 ? 'Payload Too Large' : statusCode >= 500 ? 'Internal Server Error' : 'Error',
      message: statusCode >= 500 ? 'internal error (see the hub log)' : error.message
    })
  })

  // before the routes: the document is made of the routes registered after it
  await registerOpenApi(app)
  await app.register(healthRoutes(ctx))
  await app.register(deviceRoutes(ctx))
  await app.register(sessionRoutes(ctx))
  await app.register(subscriptionRoutes(ctx))
  await app.register(replicaRoutes(ctx))
  await app.register(downstreamRoutes(ctx))
  await app.register(fleetPushRoutes(ctx))
  await app.register(eventRoutes(ctx))
  await app.register(statusRoutes(ctx))
  await app.register(emqxV4Routes(ctx))
  await app.register(tkeelCoreRoutes(ctx))
  if (ctx.carrierRoutes) await app.register(ctx.carrierRoutes.plugin)
  await app.register(consoleRoutes())
  return app
}
