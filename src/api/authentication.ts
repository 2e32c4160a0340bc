/**
 * Who may call the API: Basic auth (the API user and password) or, when one is configured, the
 * Bearer token — on every route but the probes, the metrics and routes with credentials of
 * their own. Wrong credentials count against the caller's address in the login throttle; an
 * address throttled is answered 429 with Retry-After before its credentials are looked at,
 * right ones included, so guessing gains nothing from the answers while it waits.
 */
import basicAuth from '@fastify/basic-auth'
import type { FastifyInstance } from 'fastify'
import { addressKey } from '../admission/login-throttle.js'
import { secretMatcher } from '../domain/secret.js'
import type { ApiContext } from './context.js'

export async function registerAuthentication(app: FastifyInstance, ctx: ApiContext, isOpen: (route: string) => boolean): Promise<void> {
  // checked on every request: the expected secrets are encoded once
  const userMatches = secretMatcher(ctx.config.apiUser)
  const passwordMatches = secretMatcher(ctx.config.apiPassword)
  const tokenMatches = ctx.config.apiToken === '' ? () => false : secretMatcher(ctx.config.apiToken)
  await app.register(basicAuth, {
    authenticate: { realm: 'iothub' },
    // answered through `done`, not a promise: the check is synchronous, and a promise would
    // cost every request a turn of the microtask queue
    validate: (username, password, _request, _reply, done) => {
      // both compared, always, so timing does not tell which one was wrong
      const userOk = userMatches(username)
      const passwordOk = passwordMatches(password)
      done(userOk && passwordOk ? undefined : new Error('wrong API credentials'))
    }
  })

  app.addHook('onRequest', (request, reply, done) => {
    if (isOpen(request.routeOptions.url ?? '')) return done()
    const key = addressKey(request.ip)
    const wait = ctx.loginThrottle.waitOf(key)
    if (wait > 0) {
      const seconds = Math.ceil(wait / 1000)
      ctx.metrics.reject('login_throttled')
      void reply
        .code(429)
        .header('retry-after', String(seconds))
        .send({ statusCode: 429, error: 'Too Many Requests', message: `too many wrong logins from this address: try again in ${seconds} s` })
      return
    }
    // tKeel clients send a Bearer token; it counts when one is configured
    const bearer = /^bearer +(.+)$/i.exec(request.headers.authorization ?? '')?.[1]
    if (bearer !== undefined && tokenMatches(bearer)) {
      ctx.loginThrottle.succeeded(key)
      return done()
    }
    app.basicAuth(request, reply, (error?: Error) => {
      if (error) {
        ctx.metrics.reject('api_unauthorized')
        // no credentials at all is how an HTTP client learns it needs some, not a guess
        if (request.headers.authorization !== undefined) ctx.loginThrottle.failed(key)
      } else {
        ctx.loginThrottle.succeeded(key)
      }
      done(error)
    })
  })
}
