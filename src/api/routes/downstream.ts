/**
 * Downstream property changes: each updates the device entity, durably, then pushes the change
 * (QoS 1) to the device's sessions holding a subscription entity for it — and to no others.
 *
 * - `PATCH /v1/devices/{id}/attributes`: a JSON object merged into `attributes`; the device
 *   receives the object on `v1/devices/me/attributes`.
 * - `POST /v1/devices/{id}/commands`: `{ name, params?, id? }`, kept under `commands` until the
 *   device answers on `v1/devices/me/command/response`; it receives `{ id, name, params }`
 *   on `v1/devices/me/commands`.
 * - `POST /v1/devices/{id}/raw`: bytes (application/octet-stream), kept as `rawData` (the last
 *   raw message on the device's raw topic, either way, as tKeel core's device entity keeps it)
 *   and passed to the device as they are on `v1/devices/me/raw`.
 *
 * The push runs in the device's queue of changes, right after its change is stored, so pushes
 * and upstream changes of one device reach watchers in the order they were stored.
 */
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { CHANGE_TOPICS, type ChangeProperty } from '../../domain/change-topics.js'
import { newCommand, PayloadError, rawDataOf } from '../../domain/device-properties.js'
import { deviceMountpoint } from '../../domain/namespace.js'
import { ALREADY_SENT, commandPayload, DownstreamChanges, type PushOutcome } from '../../devices/downstream-changes.js'
import { PushBacklogFull } from '../../devices/dispatcher.js'
import { UnknownDeviceError } from '../../registry/device-directory.js'
import type { ApiContext } from '../context.js'
import { badRequest } from '../bad-request.js'
import { retryAfterSeconds } from '../store-unavailable.js'
import { DEVICE_ID_PATTERN, errorSchema } from '../schemas.js'

const params = { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: DEVICE_ID_PATTERN } } } as const
const pushedTo = { type: 'array', items: { type: 'string' } } as const
/** Set when the change was stored but could not be pushed (the broker failed or is stopping). */
const pushError = { type: 'string' } as const
/** What fastify answers JSON with. */
const JSON_TYPE = 'application/json; charset=utf-8'

interface CommandBody {
  name: string
  id?: string
  params?: unknown
}

export const downstreamRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_request, body, done) => done(null, body))

  const changes = new DownstreamChanges(ctx.properties, ctx.dispatcher)

  const logPushError = (id: string, property: ChangeProperty, outcome: PushOutcome): void => {
    if (outcome.pushError !== undefined) app.log.error({ deviceId: id, property, err: outcome.pushError }, 'push failed after the change was stored')
  }

  /**
   * What a change refused: a device not registered, or deleted meanwhile (404, decided with the
   * change); a change the device entity cannot take, too large say (400, the caller's error).
   */
  const refused = (reply: FastifyReply, id: string, error: unknown) => {
    if (error instanceof UnknownDeviceError) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no device ${id}` })
    // the device's waiting commands are tried again every IOTHUB_PUSH_RETRY_INTERVAL (kept-pushes.ts)
    if (error instanceof PushBacklogFull) return reply.code(503).header('retry-after', retryAfterSeconds(ctx.config.pushRetryInterval)).send({ statusCode: 503, error: 'Service Unavailable', message: `nothing was stored: ${error.message}` })
    throw error instanceof PayloadError ? badRequest(error.message) : error
  }

  app.patch<{ Params: { id: string }; Body: Record<string, unknown> }>(
    '/v1/devices/:id/attributes',
    {
      schema: {
        params,
        body: { type: 'object', minProperties: 1, additionalProperties: true },
        response: {
          200: { type: 'object', required: ['attributes', 'pushedTo'], properties: { attributes: { type: 'object', additionalProperties: true }, pushedTo, pushError } },
          400: errorSchema,
          404: errorSchema
        }
      }
    },
    async (request, reply) => {
      const { id } = request.params
      try {
        // the device receives the object as the body's own JSON text: parsed, it is the patch
        const payload = Buffer.from(request.jsonText ?? JSON.stringify(request.body))
        // an unknown device is refused in the change's own decision (UnknownDeviceError: 404)
        const changed = await changes.mergeAttributes(id, request.body, payload)
        logPushError(id, 'attributes', changed)
        // the stored attributes were serialized to measure them: the answer is made around that
        // JSON rather than serializing them again (the schema above still describes it)
        const pushError = changed.pushError === undefined ? '' : `,"pushError":${JSON.stringify(changed.pushError)}`
        return reply.type(JSON_TYPE).send(`{"attributes":${changed.attributesJson},"pushedTo":${JSON.stringify(changed.pushedTo)}${pushError}}`)
      } catch (error) {
        return refused(reply, id, error)
      }
    }
  )

  app.post<{ Params: { id: string }; Body: CommandBody }>(
    '/v1/devices/:id/commands',
    {
      schema: {
        params,
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: { name: { type: 'string', minLength: 1, maxLength: 128 }, id: { type: 'string', pattern: DEVICE_ID_PATTERN }, params: {} }
        },
        response: {
          200: { type: 'object', required: ['command', 'pushedTo'], properties: { command: { type: 'object', additionalProperties: true }, pushedTo, pushError } },
          400: errorSchema,
          404: errorSchema,
          409: errorSchema,
          503: errorSchema
        }
      }
    },
    async (request, reply) => {
      const { id } = request.params
      const command = newCommand(request.body, Date.now())
      let sent: Awaited<ReturnType<DownstreamChanges['sendCommand']>>
      try {
        sent = await changes.sendCommand(id, command, commandPayload(command))
      } catch (error) {
        return refused(reply, id, error)
      }
      if (sent === ALREADY_SENT) return reply.code(409).send({ statusCode: 409, error: 'Conflict', message: `command ${command.id} was already sent to ${id}` })
      logPushError(id, 'commands', sent)
      return sent
    }
  )

  app.post<{ Params: { id: string }; Body: Buffer }>(
    '/v1/devices/:id/raw',
    {
      schema: {
        params,
        response: { 200: { type: 'object', required: ['bytes', 'pushedTo'], properties: { bytes: { type: 'integer' }, pushedTo, pushError } }, 400: errorSchema, 404: errorSchema, 503: errorSchema }
      }
    },
    async (request, reply) => {
      const { id } = request.params
      if (!Buffer.isBuffer(request.body) || request.body.length === 0) throw badRequest('body must be the raw bytes, sent as application/octet-stream')
      if (request.body.length > ctx.config.maxPacketSize - 1024) throw badRequest(`body of ${request.body.length} bytes is larger than an MQTT packet may be`)
      const bytes = request.body
      try {
        const sent = await changes.sendRaw(id, () => rawDataOf(bytes, deviceMountpoint(id) + CHANGE_TOPICS.raw, Date.now(), ctx.config.maxJsonDepth), bytes)
        logPushError(id, 'raw', sent)
        return { bytes: bytes.length, ...sent }
      } catch (error) {
        return refused(reply, id, error)
      }
    }
  )
}
