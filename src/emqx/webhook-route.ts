/**
 * `POST /v1/hooks/emqx`: EMQX's WebHook, for users who prefer HTTP to ExHook's gRPC. Takes EMQX
 * 4 `web_hook` bodies and EMQX 5 rule-event bodies (see webhook-payloads.ts), applies them as
 * ExHook calls are applied, and answers once the effect is durable: 200 `{ applied, why? }`.
 *
 * Not behind the API's Basic auth: EMQX sends a shared secret instead, in the
 * `x-iothub-webhook-secret` header (EMQX 4: `web.hook.headers.x-iothub-webhook-secret`; EMQX 5:
 * the WebHook connector's headers). The receiver is off until IOTHUB_WEBHOOK_SECRET is set.
 * A wrong secret answers 401, a body the hub cannot read 400, a store failure 503 (EMQX 5's
 * WebHook retries it) — each counted, none changing anything stored.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { secretMatches } from '../domain/secret.js'
import { HookInputError, type EmqxSource } from './emqx-source.js'
import { applyHookCall } from './hook-call.js'
import { hookCallOfWebhook, WebhookPayloadError } from './webhook-payloads.js'
import type { HubConfig } from '../config.js'
import type { HubMetrics } from '../observability/metrics.js'

export const WEBHOOK_PATH = '/v1/hooks/emqx'
export const WEBHOOK_SECRET_HEADER = 'x-iothub-webhook-secret'

export const emqxWebhookRoutes = (source: EmqxSource, ctx: { config: HubConfig; metrics: HubMetrics }): FastifyPluginAsync => async (app) => {
  const answer = (reply: FastifyReply, statusCode: number, message: string) =>
    reply.code(statusCode).send({ statusCode, error: STATUS_TEXT[statusCode] ?? 'Error', message })
  /** Refuses (401, counted) a call without the shared secret; true when it may go on. */
  const authorized = (request: FastifyRequest, reply: FastifyReply): boolean => {
    const presented = request.headers[WEBHOOK_SECRET_HEADER]
    if (typeof presented === 'string' && secretMatches(ctx.config.webhookSecret, presented)) return true
    ctx.metrics.reject('hook_unauthorized')
    void answer(reply, 401, `missing or wrong ${WEBHOOK_SECRET_HEADER} header`)
    return false
  }

  app.post(WEBHOOK_PATH, {
    // a body fastify cannot parse (not JSON, wrong content type, too large) is still a bad
    // hook call — or an unauthorized one: the secret is checked first, as for any other body
    errorHandler: (error: Error & { statusCode?: number }, request, reply) => {
      const statusCode = error.statusCode ?? 500
      if (statusCode >= 500) {
        request.log.error({ err: error }, 'WebHook call failed')
        void answer(reply, 503, 'not recorded (see the hub log); send it again')
      } else if (ctx.config.webhookSecret === '') {
        void answer(reply, 503, RECEIVER_OFF)
      } else if (authorized(request, reply)) {
        ctx.metrics.reject('bad_hook')
        void answer(reply, statusCode, error.message)
      }
    },
    handler: async (request, reply) => {
      if (ctx.config.webhookSecret === '') return answer(reply, 503, RECEIVER_OFF)
      if (!authorized(request, reply)) return reply
      let outcome
      try {
        outcome = await applyHookCall(source, hookCallOfWebhook(request.body))
      } catch (e) {
        if (e instanceof WebhookPayloadError) {
          ctx.metrics.reject('bad_hook')
          return answer(reply, 400, e.message)
        }
        if (e instanceof HookInputError) {
          if (!e.counted) ctx.metrics.reject('bad_hook')
          return answer(reply, 400, e.message)
        }
        request.log.error({ err: (e as Error).message }, 'WebHook call not applied')
        return answer(reply, 503, 'not recorded (see the hub log); send it again')
      }
      return outcome
    }
  })
}

const RECEIVER_OFF = 'the WebHook receiver is off: set IOTHUB_WEBHOOK_SECRET'
const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 503: 'Service Unavailable' }
