/**
 * The web console (console/, built into console/dist at install time): `GET /` is its page and
 * `/assets/*` its scripts and styles, served without credentials — the page has none to show; it
 * asks for the API's credentials in its own login form and sends them with each API call.
 */
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'

/** The routes of the console, open to everyone (the API behind them is not). */
export const CONSOLE_PATHS: ReadonlySet<string> = new Set(['/', '/assets/*'])

/** console/dist, two folders up from this module both as source (src/api) and compiled (dist/api). */
export const CONSOLE_DIST = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'console', 'dist')

/**
 * The page may run scripts and styles from the hub only and talk to the hub only (it works
 * offline and loads nothing from elsewhere), and may not be framed: its buttons kick and delete.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "img-src 'self' data:",
  // uPlot and Preact set element styles from script
  "style-src 'self' 'unsafe-inline'",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'"
].join('; ')

/**
 * The console's fetches say `X-Requested-With: XMLHttpRequest`; their 401s go without the
 * `WWW-Authenticate: Basic` challenge, which would make the browser open its own password
 * prompt over the console's login form (the convention Spring Security follows for the same reason).
 */
export function quietChallengeForConsole(app: FastifyInstance): void {
  app.addHook('onSend', async (request, reply, payload) => {
    if (reply.statusCode === 401 && request.headers['x-requested-with'] === 'XMLHttpRequest') reply.removeHeader('www-authenticate')
    return payload
  })
}

export const consoleRoutes = (distDir = CONSOLE_DIST): FastifyPluginAsync => async (app) => {
  if (!existsSync(join(distDir, 'index.html'))) {
    // the API works without it: say how to get it rather than failing the hub's start
    app.get('/', { schema: { hide: true } }, async (_request, reply) =>
      reply.code(503).type('text/plain; charset=utf-8').send('The web console is not built: run `npm run build:console` (npm install does it), then restart the hub.\n')
    )
    return
  }
  // file names carry their content's hash: a cached file never goes stale
  await app.register(fastifyStatic, { root: join(distDir, 'assets'), prefix: '/assets/', immutable: true, maxAge: '365d', index: false, wildcard: true })
  // the console is no API route: not in the OpenAPI document (the assets' route is hidden by @fastify/static)
  app.get('/', { schema: { hide: true } }, async (_request, reply) =>
    reply
      .header('content-security-policy', CONTENT_SECURITY_POLICY)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      // always asked again, so a new build's asset names are picked up
      .header('cache-control', 'no-cache')
      .sendFile('index.html', distDir)
  )
}
