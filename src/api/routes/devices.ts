/**
 * Devices: `POST /v1/devices` (one or many; the only answer with their tokens), `GET /v1/devices`
 * (filtered, paged by an opaque cursor), `GET /v1/devices/{id}`, `PATCH /v1/devices/{id}`,
 * `DELETE /v1/devices/{id}` (its sessions, subscription entities and properties with it) and
 * `POST /v1/devices/{id}/token` (a new token, shown once; the old one refused from then on).
 */
import type { FastifyPluginAsync, FastifyReply } from 'fastify'
import { jsonBytes } from '../../domain/bounded-json.js'
import type { DeviceChange, NewDevice } from '../../domain/device.js'
import { MAX_PROPERTY_BYTES } from '../../domain/device-properties.js'
import { DeviceRemoval } from '../../registry/device-removal.js'
import { DuplicateDeviceError, UnknownDeviceError } from '../../registry/device-directory.js'
import { badRequest } from '../bad-request.js'
import type { ApiContext } from '../context.js'
import { afterCursor, page, pagedQuerySchema, pageSchema } from '../paging.js'
import { renderCreatedDevice, renderDevice } from '../render.js'
import { DEVICE_ID_PATTERN, RESERVED_DEVICE_IDS, createdDeviceSchema, deviceChangeSchema, deviceSchema, errorSchema, newDeviceSchema } from '../schemas.js'

/** Most devices one request may create; larger fleets are created in several requests. */
export const MAX_DEVICES_PER_REQUEST = 10_000

/** An `ext` is kept no larger than a property may be. */
function checkExt(ext: Record<string, unknown> | undefined, where: string): void {
  if (ext === undefined) return
  const bytes = jsonBytes(ext)
  if (bytes > MAX_PROPERTY_BYTES) throw badRequest(`${where} is ${bytes} bytes of JSON, more than the ${MAX_PROPERTY_BYTES} a device keeps`)
}

/**
 * What the schema cannot say about devices to create: an id the fleet routes take
 * (RESERVED_DEVICE_IDS) is refused; an id twice in one request is the caller's mistake (400),
 * not a conflict with what exists (409); and `ext`, which the schema leaves free-form, is kept
 * no larger than a property may be.
 */
function checkNewDevices(inputs: readonly NewDevice[], many: boolean): void {
  const seen = new Set<string>()
  const repeated = new Set<string>()
  for (const { id } of inputs) {
    if (id === undefined) continue
    if (RESERVED_DEVICE_IDS.has(id)) throw badRequest(`device id "${id}" is reserved: PATCH /v1/devices/attributes and POST /v1/devices/commands are fleet pushes`)
    if (seen.has(id)) repeated.add(id)
    seen.add(id)
  }
  if (repeated.size > 0) throw badRequest(`the request names device id ${[...repeated].join(', ')} more than once`)
  inputs.forEach((input, i) => checkExt(input.ext, many ? `body/${i}/ext` : 'body/ext'))
}

/**
 * A change's body: at least one field, none it may not change. Owner and id are named in the
 * refusal (they are a device's identity: its tenant, its namespace, its MQTT username).
 */
function checkChange(body: Record<string, unknown>): DeviceChange {
  const fixed = ['id', 'owner', 'token', 'tokenHash'].filter((key) => key in body)
  if (fixed.length > 0) throw badRequest(`body/${fixed[0]} cannot be changed (a device's id, owner and token are fixed; a new token comes from POST /v1/devices/{id}/token)`)
  const change = body as DeviceChange
  if (Object.keys(change).length === 0) throw badRequest('body must name at least one of name, desc, group, ext')
  checkExt(change.ext, 'body/ext')
  return change
}

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: DEVICE_ID_PATTERN } } } as const


interface ListQuery {
  owner?: string
  group?: string
  connected?: boolean
  q?: string
  limit: number
  cursor?: string
}

export const deviceRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  const removal = new DeviceRemoval(ctx.devices, ctx.registry, ctx.fleet, (clientId) => ctx.kick(clientId), ctx.properties.deletions)

  /** A device the request names is not registered: answered, and counted as bad input like a 400. */
  const notFound = (reply: FastifyReply, id: string) => {
    ctx.metrics.reject('bad_api_request')
    return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no device ${id}` })
  }

  /** The device with its properties, as the API shows it. */
  const rendered = async (device: Parameters<typeof renderDevice>[0]) => renderDevice(device, (await ctx.properties.find(device.id)).values)

  app.post<{ Body: NewDevice | NewDevice[] }>(
    '/v1/devices',
    {
      schema: {
        body: { oneOf: [newDeviceSchema, { type: 'array', minItems: 1, maxItems: MAX_DEVICES_PER_REQUEST, items: newDeviceSchema }] },
        response: { 201: { oneOf: [createdDeviceSchema, { type: 'array', items: createdDeviceSchema }] }, 400: errorSchema, 409: errorSchema }
      }
    },
    async (request, reply) => {
      const many = Array.isArray(request.body)
      const inputs = many ? (request.body as NewDevice[]) : [request.body as NewDevice]
      checkNewDevices(inputs, many)
      try {
        const created = await ctx.devices.create(inputs)
        const answered = created.map((c) => renderCreatedDevice(c))
        return reply.code(201).send(many ? answered : answered[0])
      } catch (error) {
        if (error instanceof DuplicateDeviceError) {
          ctx.metrics.reject('bad_api_request')
          return reply.code(409).send({ statusCode: 409, error: 'Conflict', message: error.message })
        }
        throw error
      }
    }
  )

  app.get<{ Querystring: ListQuery }>(
    '/v1/devices',
    {
      schema: {
        querystring: pagedQuerySchema({
          owner: { type: 'string', maxLength: 256 },
          group: { type: 'string', maxLength: 256 },
          connected: { type: 'boolean' },
          q: { type: 'string', minLength: 1, maxLength: 256 }
        }),
        response: { 200: pageSchema(deviceSchema), 400: errorSchema }
      }
    },
    async (request) => {
      const { cursor, limit, ...filter } = request.query
      const found = await ctx.fleet.devices(filter, { after: afterCursor(cursor), limit })
      // a page's properties in one read, not one per device
      const properties = await ctx.properties.findMany(found.devices.map((d) => d.id))
      const items = found.devices.map((d) => renderDevice(d, properties.get(d.id)))
      return page(items, found.more, (d) => d.id, (d) => d)
    }
  )

  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id',
    { schema: { params: idParams, response: { 200: deviceSchema, 404: errorSchema } } },
    async (request, reply) => {
      const device = await ctx.devices.find(request.params.id)
      if (!device) return notFound(reply, request.params.id)
      return rendered(device)
    }
  )

  app.patch<{ Params: { id: string }; Body: Record<string, unknown> }>(
    '/v1/devices/:id',
    { schema: { params: idParams, body: deviceChangeSchema, response: { 200: deviceSchema, 400: errorSchema, 404: errorSchema } } },
    async (request, reply) => {
      const change = checkChange(request.body)
      try {
        return await rendered(await ctx.devices.update(request.params.id, change))
      } catch (error) {
        if (error instanceof UnknownDeviceError) return notFound(reply, request.params.id)
        throw error
      }
    }
  )

  app.delete<{ Params: { id: string } }>(
    '/v1/devices/:id',
    {
      schema: {
        params: idParams,
        response: {
          200: {
            type: 'object',
            required: ['id', 'sessionsEnded', 'subscriptionsDeleted'],
            properties: { id: { type: 'string' }, sessionsEnded: { type: 'integer' }, subscriptionsDeleted: { type: 'integer' } }
          },
          404: errorSchema
        }
      }
    },
    async (request, reply) => {
      try {
        return await removal.remove(request.params.id)
      } catch (error) {
        if (error instanceof UnknownDeviceError) return notFound(reply, request.params.id)
        throw error
      }
    }
  )

  app.post<{ Params: { id: string }; Querystring: { kick: boolean } }>(
    '/v1/devices/:id/token',
    {
      schema: {
        params: idParams,
        querystring: { type: 'object', additionalProperties: false, properties: { kick: { type: 'boolean', default: false } } },
        response: {
          200: {
            type: 'object',
            required: ['id', 'token', 'kicked'],
            properties: { id: { type: 'string' }, token: { type: 'string' }, kicked: { type: 'integer' } }
          },
          400: errorSchema,
          404: errorSchema
        }
      }
    },
    async (request, reply) => {
      const { id } = request.params
      let token: string
      try {
        ;({ token } = await ctx.devices.rotateToken(id))
      } catch (error) {
        if (error instanceof UnknownDeviceError) return notFound(reply, id)
        throw error
      }
      let kicked = 0
      if (request.query.kick) {
        const live = await ctx.fleet.sessions({ deviceId: id, connected: true }, { limit: 1000 })
        for (const kickedOne of await Promise.all(live.sessions.map((s) => ctx.kick(s.id)))) if (kickedOne) kicked++
      }
      return { id, token, kicked }
    }
  )
}
