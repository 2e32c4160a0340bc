/**
 * Fleet pushes: one call changes a property of many devices — `PATCH /v1/devices/attributes`
 * merges one object into each device's attributes, `POST /v1/devices/commands` sends each one
 * command — each device changed, stored and pushed exactly as its own route
 * (`/v1/devices/{id}/attributes`, `…/commands`) would (devices/downstream-changes.ts), through
 * the change log like any change; the walk itself is devices/fleet-push.ts.
 *
 * The selection is exactly one of: `ids` (at most MAX_FLEET_IDS, each once), a filter (`owner`,
 * `group`, or both), or `all: true` — an empty filter never selects the whole fleet by surprise.
 * A filter walk may start `after` a device id: where a stopped push said to resume.
 *
 * A command has one id for every device: the caller's, or one the hub makes and answers. The
 * device answers with it on its response topic; and a call repeated with that id (after a
 * stop, say) sends it only to the devices that do not have it yet — the others count as
 * `alreadySent`, nothing stored or pushed for them.
 *
 * Routing: `attributes` and `commands` sit where `/v1/devices/{id}` takes an id, and fastify
 * prefers a fixed segment, so neither may be a device id (POST /v1/devices refuses them:
 * RESERVED_DEVICE_IDS). Only `PATCH /v1/devices/{id}` actually meets one of them; GET and DELETE
 * of `/v1/devices/attributes` still name a device of that id, if an older build made one.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { jsonBytes } from '../../domain/bounded-json.js'
import { MAX_PROPERTY_BYTES, newCommand, type JsonObject } from '../../domain/device-properties.js'
import { ALREADY_SENT, commandPayload, DownstreamChanges } from '../../devices/downstream-changes.js'
import { pushToFleet, type DeviceOutcome, type FleetPushReport, type FleetSelection } from '../../devices/fleet-push.js'
import { badRequest } from '../bad-request.js'
import type { ApiContext } from '../context.js'
import { retryAfterSeconds } from '../store-unavailable.js'
import { DEVICE_ID_PATTERN, errorSchema } from '../schemas.js'

/** Most ids one call may name (as many as one POST /v1/devices may create). */
export const MAX_FLEET_IDS = 10_000

/** Fleet pushes running at once on this replica; more answer 429. Each holds FLEET_PUSH_IN_FLIGHT device changes. */
export const MAX_RUNNING_FLEET_PUSHES = 4

/** Largest body: MAX_FLEET_IDS ids of the longest kind, with a change as large as a property may be. */
const BODY_LIMIT = 2 * 1024 * 1024

interface Selector {
  ids?: string[]
  owner?: string
  group?: string
  all?: boolean
  after?: string
}

const selectorProperties = {
  ids: { type: 'array', minItems: 1, maxItems: MAX_FLEET_IDS, items: { type: 'string', pattern: DEVICE_ID_PATTERN } },
  owner: { type: 'string', maxLength: 256 },
  group: { type: 'string', maxLength: 256 },
  all: { type: 'boolean' },
  after: { type: 'string', pattern: DEVICE_ID_PATTERN }
} as const

const countsProperties = {
  attempted: { type: 'integer' },
  matched: { type: 'integer' },
  changed: { type: 'integer' },
  pushed: { type: 'integer' },
  sessions: { type: 'integer' },
  pushFailed: { type: 'integer' },
  failed: { type: 'integer' },
  unknown: { type: 'array', items: { type: 'string' } },
  unknownCount: { type: 'integer' },
  errors: { type: 'array', items: { type: 'object', properties: { id: { type: 'string' }, message: { type: 'string' } } } },
  complete: { type: 'boolean' },
  resumeAfter: { type: 'string' },
  tookMs: { type: 'integer' },
  // set when the push stopped before the end of its selection (503, 500)
  statusCode: { type: 'integer' },
  error: { type: 'string' },
  message: { type: 'string' }
} as const

const answerRequired = ['attempted', 'matched', 'changed', 'pushed', 'sessions', 'pushFailed', 'failed', 'unknown', 'unknownCount', 'errors', 'complete', 'tookMs']

const attributesAnswer = { type: 'object', required: answerRequired, properties: countsProperties } as const
const commandsAnswer = {
  type: 'object',
  required: [...answerRequired, 'command', 'alreadySent'],
  properties: { ...countsProperties, command: { type: 'object', additionalProperties: true }, alreadySent: { type: 'integer' } }
} as const

/** What a selector names: exactly one of ids, a filter, or all. */
function selectionOf(body: Selector): FleetSelection {
  const kinds = [body.ids !== undefined, body.owner !== undefined || body.group !== undefined, body.all !== undefined].filter(Boolean).length
  if (kinds === 0) throw badRequest('name the devices: "ids", a filter ("owner", "group"), or "all": true for every device')
  if (kinds > 1) throw badRequest('name the devices one way only: "ids", a filter ("owner", "group"), or "all": true')
  if (body.all === false) throw badRequest('"all" may only be true (leave it out to name devices by "ids" or a filter)')
  if (body.ids !== undefined) {
    if (body.after !== undefined) throw badRequest('"after" resumes a filter or "all"; with "ids", send the ids not attempted yet')
    const seen = new Set<string>()
    for (const id of body.ids) {
      if (seen.has(id)) throw badRequest(`body/ids names device ${id} more than once`)
      seen.add(id)
    }
    return { ids: body.ids }
  }
  const filter = { ...(body.owner !== undefined ? { owner: body.owner } : {}), ...(body.group !== undefined ? { group: body.group } : {}) }
  return { filter, ...(body.after !== undefined ? { after: body.after } : {}) }
}

/** A change no device could take (larger than a property may be) is refused before any is tried. */
function checkSize(value: unknown, where: string): void {
  const bytes = jsonBytes(value)
  if (bytes > MAX_PROPERTY_BYTES) throw badRequest(`${where} is ${bytes} bytes of JSON, more than the ${MAX_PROPERTY_BYTES} a device keeps`)
}

export const fleetPushRoutes = (ctx: ApiContext): FastifyPluginAsync => async (app) => {
  const changes = new DownstreamChanges(ctx.properties, ctx.dispatcher)
  /** The pushes running here, each stopped (taking no more devices) when the hub stops. */
  const running = new Set<AbortController>()
  app.addHook('preClose', async () => {
    for (const controller of running) controller.abort('the hub is stopping')
  })

  /** Runs one push for a request: at most MAX_RUNNING_FLEET_PUSHES at once; stops if the caller goes away. */
  const run = async (
    request: FastifyRequest,
    reply: FastifyReply,
    selection: FleetSelection,
    change: (id: string) => Promise<DeviceOutcome>,
    what: string
  ): Promise<FleetPushReport | undefined> => {
    if (running.size >= MAX_RUNNING_FLEET_PUSHES) {
      ctx.metrics.reject('too_many_fleet_pushes')
      await reply
        .code(429)
        .header('retry-after', '1')
        .send({ statusCode: 429, error: 'Too Many Requests', message: `${running.size} fleet pushes are running, at most ${MAX_RUNNING_FLEET_PUSHES} at once: try again when one is done` })
      return undefined
    }
    const controller = new AbortController()
    running.add(controller)
    // the answer is the only account of what was done: without a caller to read it, stop
    const callerGone = () => {
      if (!reply.raw.writableEnded) controller.abort('the caller went away')
    }
    reply.raw.once('close', callerGone)
    try {
      const report = await pushToFleet(selection, ctx.fleet, change, { signal: controller.signal })
      request.log.info(
        { what, selection: 'ids' in selection ? `${selection.ids.length} ids` : selection.filter, ...report, unknown: report.unknownCount, errors: report.errors.length },
        report.complete ? 'fleet push done' : 'fleet push stopped'
      )
      return report
    } finally {
      running.delete(controller)
      reply.raw.off('close', callerGone)
    }
  }

  /** 200 when every device was attempted; else 503 (store, stopping) or 500, with how far it got. */
  const answer = (reply: FastifyReply, report: FleetPushReport, extra: Record<string, unknown> = {}) => {
    const { stop, ...counts } = report
    if (!stop) return reply.code(200).send({ ...counts, ...extra })
    const where = counts.resumeAfter !== undefined ? `; carry on with "after": "${counts.resumeAfter}"` : `; the first ${counts.attempted} ids were attempted`
    const message = `stopped after ${counts.attempted} devices (${counts.changed} changed): ${stop.message}${where}`
    if (stop.reason === 'error') return reply.code(500).send({ ...counts, ...extra, statusCode: 500, error: 'Internal Server Error', message })
    if (stop.reason === 'store') ctx.metrics.reject('store_unavailable')
    return reply
      .code(503)
      .header('retry-after', retryAfterSeconds(ctx.config.storeTimeout))
      .send({ ...counts, ...extra, statusCode: 503, error: 'Service Unavailable', message })
  }

  app.patch<{ Body: Selector & { attributes: JsonObject } }>(
    '/v1/devices/attributes',
    {
      bodyLimit: BODY_LIMIT,
      schema: {
        body: {
          type: 'object',
          required: ['attributes'],
          additionalProperties: false,
          properties: { ...selectorProperties, attributes: { type: 'object', minProperties: 1, additionalProperties: true } }
        },
        response: { 200: attributesAnswer, 400: errorSchema, 429: errorSchema, 500: attributesAnswer, 503: attributesAnswer }
      }
    },
    async (request, reply) => {
      const selection = selectionOf(request.body)
      const { attributes } = request.body
      checkSize(attributes, 'body/attributes')
      // one payload for every device: what each device's own route would publish
      const payload = Buffer.from(JSON.stringify(attributes))
      const report = await run(
        request,
        reply,
        selection,
        async (id) => {
          const changed = await changes.mergeAttributes(id, attributes, payload)
          return { changed: true, sessions: changed.pushedTo.length, ...(changed.pushError !== undefined ? { pushError: changed.pushError } : {}) }
        },
        'attributes'
      )
      return report === undefined ? reply : answer(reply, report)
    }
  )

  app.post<{ Body: Selector & { command: { name: string; id?: string; params?: unknown } } }>(
    '/v1/devices/commands',
    {
      bodyLimit: BODY_LIMIT,
      schema: {
        body: {
          type: 'object',
          required: ['command'],
          additionalProperties: false,
          properties: {
            ...selectorProperties,
            command: {
              type: 'object',
              required: ['name'],
              additionalProperties: false,
              properties: { name: { type: 'string', minLength: 1, maxLength: 128 }, id: { type: 'string', pattern: DEVICE_ID_PATTERN }, params: {} }
            }
          }
        },
        response: { 200: commandsAnswer, 400: errorSchema, 429: errorSchema, 500: commandsAnswer, 503: commandsAnswer }
      }
    },
    async (request, reply) => {
      const selection = selectionOf(request.body)
      const { name, params } = request.body.command
      if (params !== undefined) checkSize(params, 'body/command/params')
      // one id for every device, so the devices' answers and a repeated call can be told by it
      const id = request.body.command.id ?? randomUUID()
      const sent = { id, name, ...(params !== undefined ? { params } : {}) }
      const payload = commandPayload(sent)
      const report = await run(
        request,
        reply,
        selection,
        async (deviceId) => {
          // sentAt is when this device's command was stored, as its own route would have it
          const done = await changes.sendCommand(deviceId, newCommand(sent, Date.now()), payload)
          if (done === ALREADY_SENT) return { changed: false }
          return { changed: true, sessions: done.pushedTo.length, ...(done.pushError !== undefined ? { pushError: done.pushError } : {}) }
        },
        'commands'
      )
      return report === undefined ? reply : answer(reply, report, { command: sent })
    }
  )
}
