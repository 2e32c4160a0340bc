/**
 * EMQX v4's `POST /api/v4/mqtt/publish`: `{ topic | topics, payload, encoding, qos, retain,
 * clientid }` → `{ "code": 0 }` once the broker has routed the message. Topics are the
 * broker's, so `{deviceId}/v1/devices/me/attributes` reaches that device's
 * subscription to `v1/devices/me/attributes`. Errors answer as EMQX 4 does: code 107 for a
 * missing parameter, 108 for one of the wrong type or value.
 */
import type { FastifyPluginAsync } from 'fastify'
import { checkTopic } from '../../admission/topic-rules.js'
import type { ApiContext } from '../context.js'

interface PublishBody {
  topic?: string
  /** Several topics, separated by commas. */
  topics?: string
  clientid?: string
  payload?: string
  encoding?: 'plain' | 'base64'
  qos?: 0 | 1 | 2
  retain?: boolean
}

const MISSING_PARAMETER = 107
const BAD_PARAMETER = 108

function emqxBadRequest(code: number, message: string): Error {
  return Object.assign(new Error(message), { statusCode: 400, emqxCode: code })
}

export const emqxV4PublishRoute = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.post<{ Body: PublishBody }>(
    '/api/v4/mqtt/publish',
    {
      schema: {
        body: {
          type: 'object',
          properties: {
            topic: { type: 'string' },
            topics: { type: 'string' },
            clientid: { type: 'string' },
            payload: { type: 'string' },
            encoding: { type: 'string', enum: ['plain', 'base64'] },
            qos: { type: 'integer', enum: [0, 1, 2] },
            retain: { type: 'boolean' }
          }
        },
        response: { 200: { type: 'object', properties: { code: { type: 'integer' } } } }
      }
    },
    async (request) => {
      const { topic, topics, payload = '', encoding = 'plain', qos = 0, retain = false } = request.body
      const names = topic !== undefined ? [topic] : (topics?.split(',').map((t) => t.trim()) ?? [])
      if (names.length === 0) throw emqxBadRequest(MISSING_PARAMETER, 'missing request parameter: topic')
      for (const name of names) {
        if (name.includes('+') || name.includes('#')) throw emqxBadRequest(BAD_PARAMETER, `bad topic ${name}: wildcards are not allowed in a publish`)
        const refusal = checkTopic(name, ctx.config)
        if (refusal) throw emqxBadRequest(BAD_PARAMETER, `bad topic: ${refusal.message}`)
      }
      if (encoding === 'base64' && !/^[A-Za-z0-9+/]*={0,2}$/.test(payload)) throw emqxBadRequest(BAD_PARAMETER, 'payload is not base64')
      const bytes = Buffer.from(payload, encoding === 'base64' ? 'base64' : 'utf8')
      if (bytes.length > ctx.config.maxPacketSize - 1024) throw emqxBadRequest(BAD_PARAMETER, `payload of ${bytes.length} bytes is larger than an MQTT packet may be`)
      for (const name of names) await ctx.broker.publish({ topic: name, payload: bytes, qos, retain })
      return { code: 0 }
    }
  )
}
