/** Device registration: `POST /v1/devices` (one or many), `GET /v1/devices/{id}`. */
import type { FastifyPluginAsync } from 'fastify'
import { jsonBytes } from '../../domain/bounded-json.js'
import type { NewDevice } from '../../domain/device.js'
import { MAX_PROPERTY_BYTES } from '../../domain/device-properties.js'
import { DuplicateDeviceError } from '../../registry/device-directory.js'
import { badRequest } from '../bad-request.js'
import type { ApiContext } from '../context.js'
import { renderDevice } from '../render.js'
import { DEVICE_ID_PATTERN, deviceSchema, errorSchema, newDeviceSchema } from '../schemas.js'

/** Most devices one request may create; larger fleets are created in several requests. */
export const MAX_DEVICES_PER_REQUEST = 10_000

/**
 * What the schema cannot say about devices to create: an id twice in one request is the
 * caller's mistake (400), not a conflict with what exists (409); and `ext`, which the schema
 * leaves free-form, is kept no larger than a property may be.
 */
function checkNewDevices(inputs: readonly NewDevice[], many: boolean): void {
  const seen = new Set<string>()
  const repeated = new Set<string>()
  for (const { id } of inputs) {
    if (id === undefined) continue
    if (seen.has(id)) repeated.add(id)
    seen.add(id)
  }
  if (repeated.size > 0) throw badRequest(`the request names device id ${[...repeated].join(', ')} more than once`)
  inputs.forEach((input, i) => {
    if (input.ext === undefined) return
    const bytes = jsonBytes(input.ext)
    if (bytes > MAX_PROPERTY_BYTES) throw badRequest(`${many ? `body/${i}/ext` : 'body/ext'} is ${bytes} bytes of JSON, more than the ${MAX_PROPERTY_BYTES} a device keeps`)
  })
}

export const deviceRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  app.post<{ Body: NewDevice | NewDevice[] }>(
    '/v1/devices',
    {
      schema: {
        body: { oneOf: [newDeviceSchema, { type: 'array', minItems: 1, maxItems: MAX_DEVICES_PER_REQUEST, items: newDeviceSchema }] },
        response: { 201: { oneOf: [deviceSchema, { type: 'array', items: deviceSchema }] }, 400: errorSchema, 409: errorSchema }
      }
    },
    async (request, reply) => {
      const many = Array.isArray(request.body)
      const inputs = many ? (request.body as NewDevice[]) : [request.body as NewDevice]
      checkNewDevices(inputs, many)
      try {
        const created = await ctx.devices.create(inputs)
        const rendered = created.map((d) => renderDevice(d))
        return reply.code(201).send(many ? rendered : rendered[0])
      } catch (error) {
        if (error instanceof DuplicateDeviceError) {
          return reply.code(409).send({ statusCode: 409, error: 'Conflict', message: error.message })
        }
        throw error
      }
    }
  )

  app.get<{ Params: { id: string } }>(
    '/v1/devices/:id',
    {
      schema: {
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string', pattern: DEVICE_ID_PATTERN } } },
        response: { 200: deviceSchema, 404: errorSchema }
      }
    },
    async (request, reply) => {
      const device = await ctx.devices.find(request.params.id)
      if (!device) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no device ${request.params.id}` })
      return renderDevice(device, (await ctx.properties.find(device.id)).values)
    }
  )
}
