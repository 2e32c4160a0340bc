/**
 * tKeel core's entity read, `GET /apis/core/v1/entities/{id}?type=&owner=&source=`, answering
 * the JSON shape tKeel core answers, which tKeel's tools already parse: `{ id, source, owner,
 * type, configs, properties }`.
 *
 * - `type=device`: properties are the device's attributes, telemetry, commands, rawData and
 *   connectinfo, its `dev` (name, desc, group, ext) and `sysField` (`_id`, `_enable`,
 *   `_createdAt`, `_updatedAt`, in nanoseconds as tKeel writes them). Not `_token`, which tKeel
 *   shows: the hub keeps only the token's hash, and shows the token once, when it is made.
 * - `type=session` and `type=subscription`: the hub's own entities, the same way.
 *
 * An `owner` or `source` that is not the entity's answers 404, exactly as a missing entity
 * does: a tenant learns nothing of another's devices, not even that they exist.
 */
import type { FastifyPluginAsync } from 'fastify'
import { nanos } from '../../domain/device-properties.js'
import type { ApiContext } from '../context.js'
import { renderSession, renderSubscription } from '../render.js'

const ENTITY_TYPES = ['device', 'session', 'subscription'] as const
type EntityType = (typeof ENTITY_TYPES)[number]

interface EntityQuery {
  type: EntityType
  owner?: string
  source?: string
}

interface CoreEntity {
  id: string
  source: string
  owner: string
  type: EntityType
  configs: Record<string, unknown>
  properties: Record<string, unknown>
}

export const tkeelCoreRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  /** The entity as tKeel core shows it, or undefined when there is none of that type and id. */
  async function entityOf(id: string, type: EntityType): Promise<CoreEntity | undefined> {
    switch (type) {
      case 'device': {
        const device = await ctx.devices.find(id)
        if (!device) return undefined
        const { values: properties, lastChange } = await ctx.properties.find(id)
        const updatedAt = Math.max(device.updatedAt, lastChange ?? 0)
        return {
          id,
          source: 'device',
          owner: device.owner,
          type,
          configs: {},
          properties: {
            attributes: properties.attributes ?? {},
            telemetry: properties.telemetry ?? {},
            commands: properties.commands ?? {},
            connectinfo: properties.connectinfo ?? {},
            dev: { name: device.name, desc: device.desc, group: device.group, ext: device.ext },
            rawData: properties.rawData ?? {},
            sysField: { _id: id, _enable: true, _createdAt: nanos(device.createdAt), _updatedAt: nanos(updatedAt) }
          }
        }
      }
      case 'session': {
        const session = await ctx.fleet.session(id)
        if (!session) return undefined
        const owner = (await ctx.devices.find(session.deviceId))?.owner ?? ''
        return { id, source: 'iothub', owner, type, configs: {}, properties: renderSession(session) }
      }
      case 'subscription': {
        const entity = await ctx.fleet.subscription(id)
        if (!entity) return undefined
        return { id, source: entity.source, owner: entity.owner, type, configs: {}, properties: renderSubscription(entity) }
      }
    }
  }

  app.get<{ Params: { id: string }; Querystring: EntityQuery }>(
    '/apis/core/v1/entities/:id',
    {
      schema: {
        params: { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 256 } } },
        querystring: {
          type: 'object',
          required: ['type'],
          // tKeel clients send more (cache-busters, trace ids): they are ignored, not refused
          additionalProperties: true,
          properties: { type: { type: 'string', enum: [...ENTITY_TYPES] }, owner: { type: 'string' }, source: { type: 'string' } }
        },
        response: {
          200: {
            type: 'object',
            required: ['id', 'source', 'owner', 'type', 'configs', 'properties'],
            properties: {
              id: { type: 'string' },
              source: { type: 'string' },
              owner: { type: 'string' },
              type: { type: 'string' },
              configs: { type: 'object', additionalProperties: true },
              properties: { type: 'object', additionalProperties: true }
            }
          }
        }
      }
    },
    async (request, reply) => {
      const { id } = request.params
      const { type, owner, source } = request.query
      const entity = await entityOf(id, type)
      if (!entity || (owner !== undefined && owner !== entity.owner) || (source !== undefined && source !== entity.source)) {
        return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no ${type} entity ${id}` })
      }
      return entity
    }
  )
}
