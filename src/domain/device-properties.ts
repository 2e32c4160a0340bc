/**
 * The changeable properties of a device entity, and the pure rules for changing them — from
 * the API (downstream) or from what the device publishes (upstream). A change that breaks a
 * rule throws PayloadError and changes nothing.
 *
 * Timestamps inside properties are nanoseconds since the epoch, as tKeel core writes them
 * (`timestamp: 1640783576857733000`); ours have millisecond precision.
 */
import { randomUUID } from 'node:crypto'
import { JsonLimitError, nestsDeeperThan, parseBoundedJson } from './bounded-json.js'

export type JsonObject = Record<string, unknown>

export interface ConnectInfo {
  _clientid: string
  _online: boolean
  _owner: string
  _peerhost: string
  _protocol: string
  /** The hub's port the device connected to, as a string (as tKeel core's connectinfo has it). */
  _socketport: string
  _username: string
  /** When the device last connected or disconnected (ns). */
  _timestamp: number
}

export interface RawData {
  /** The payload: parsed when it is JSON, else the text, else base64 (then `encoding` says so). */
  data: unknown
  encoding?: 'base64'
  timestamp: number
  /** The broker topic it came on. */
  topic: string
}

export interface Command extends JsonObject {
  id: string
  name: string
  params?: unknown
  /** `expired`: the broker had not taken it within IOTHUB_COMMAND_EXPIRY, and it was not sent after (devices/left-pushes.ts). */
  status: 'sent' | 'answered' | 'expired'
  sentAt: number
  result?: unknown
  respondedAt?: number
  expiredAt?: number
}

/** The property names a device entity has; each is stored and replaced as a whole. */
export const PROPERTY_NAMES = ['attributes', 'telemetry', 'commands', 'rawData', 'connectinfo'] as const
export type PropertyName = (typeof PROPERTY_NAMES)[number]

/** Largest property document kept, in bytes of JSON: a device cannot grow its entity without bound. */
export const MAX_PROPERTY_BYTES = 256 * 1024

/** Commands kept per device; the oldest go first. */
export const MAX_COMMANDS_KEPT = 100

export class PayloadError extends Error {
  override name = 'PayloadError'
}

export const nanos = (ms: number): number => ms * 1_000_000

export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Parses a payload that must be a JSON object, no deeper than `maxDepth` and no larger than a
 * property may be (a larger one could not be kept anyway).
 */
export function parseObject(payload: Buffer | string, what: string, maxDepth: number): JsonObject {
  let value: unknown
  try {
    value = parseBoundedJson(typeof payload === 'string' ? payload : payload.toString('utf8'), { maxDepth, maxBytes: MAX_PROPERTY_BYTES })
  } catch (error) {
    if (error instanceof JsonLimitError) throw new PayloadError(`${what} is refused: ${error.message}`)
    throw new PayloadError(`${what} must be a JSON object; this is not JSON`)
  }
  if (!isJsonObject(value)) throw new PayloadError(`${what} must be a JSON object, not ${Array.isArray(value) ? 'an array' : typeof value}`)
  return value
}

/**
 * A property's new value with its JSON, made once to measure it against MAX_PROPERTY_BYTES and
 * kept for whatever needs the value as JSON next: its row and change-log entry
 * (store/property-json.ts), an API answer.
 */
export class Measured<T> {
  constructor(
    readonly value: T,
    readonly json: string
  ) {}
}

/** `value` with its JSON; throws PayloadError when that is larger than a property may be. */
function measured<T>(value: T, name: string): Measured<T> {
  const json = JSON.stringify(value)
  // a UTF-16 unit is at most 3 bytes of UTF-8: a short enough text needs no count of its bytes
  const size = json.length * 3 <= MAX_PROPERTY_BYTES ? 0 : Buffer.byteLength(json)
  if (size > MAX_PROPERTY_BYTES) throw new PayloadError(`${name} would be ${size} bytes, more than the ${MAX_PROPERTY_BYTES} kept`)
  return new Measured(value, json)
}

/** Attributes: the patch's keys replace the stored ones (a shallow merge, as tKeel's PATCH). */
export function mergeAttributes(current: JsonObject | undefined, patch: JsonObject): Measured<JsonObject> {
  return measured({ ...current, ...patch }, 'attributes')
}

/** Telemetry keeps the latest value of each key with when it came: `{ key: { value, ts } }`. */
export function mergeTelemetry(current: JsonObject | undefined, values: JsonObject, at: number): Measured<JsonObject> {
  const next: JsonObject = { ...current }
  for (const [key, value] of Object.entries(values)) next[key] = { value, ts: nanos(at) }
  return measured(next, 'telemetry')
}

/**
 * The raw topic takes any bytes, so JSON nested deeper than `maxDepth` is not refused: it is
 * kept as the text it is, like any other text that is not (acceptable) JSON.
 */
export function rawDataOf(payload: Buffer, brokerTopic: string, at: number, maxDepth: number): Measured<RawData> {
  const text = payload.toString('utf8')
  const isText = Buffer.from(text, 'utf8').equals(payload)
  let data: unknown = text
  if (isText) {
    try {
      if (!nestsDeeperThan(text, maxDepth)) data = JSON.parse(text)
    } catch {
      // not JSON: kept as text
    }
    return measured({ data, timestamp: nanos(at), topic: brokerTopic }, 'rawData')
  }
  return measured({ data: payload.toString('base64'), encoding: 'base64', timestamp: nanos(at), topic: brokerTopic }, 'rawData')
}

/** A new command: what is stored, and what the device is sent (`{ id, name, params }`). */
export function newCommand(input: { id?: string; name: string; params?: unknown }, at: number): Command {
  return { id: input.id ?? randomUUID(), name: input.name, ...(input.params !== undefined ? { params: input.params } : {}), status: 'sent', sentAt: nanos(at) }
}

/**
 * Whether a command with this id was sent to the device (and is still kept): not one that expired,
 * which was not sent again and may be sent anew under its id.
 */
export function hasCommand(current: JsonObject | undefined, id: string): boolean {
  return current !== undefined && Object.hasOwn(current, id) && (current[id] as Command).status !== 'expired'
}

export function addCommand(current: JsonObject | undefined, command: Command): Measured<JsonObject> {
  const commands = { ...current } as Record<string, Command>
  // defineProperty, not assignment: an id of "__proto__" must be a key like any other
  Object.defineProperty(commands, command.id, { value: command, enumerable: true, writable: true, configurable: true })
  const ids = Object.keys(commands)
  if (ids.length > MAX_COMMANDS_KEPT) {
    ids.sort((a, b) => commands[a]!.sentAt - commands[b]!.sentAt)
    for (const id of ids.slice(0, ids.length - MAX_COMMANDS_KEPT)) delete commands[id]
  }
  return measured(commands, 'commands')
}

/** A command whose push expired (IOTHUB_COMMAND_EXPIRY): its id, and when that push was recorded (epoch ms). */
export interface ExpiredPush {
  id: string
  pushedAt: number
}

/**
 * The commands with those whose push expired marked `expired` at `at`: the broker did not take
 * them in time, and they are not sent again (a try whose outcome was not known may have reached
 * the device all the same). Only a command still waiting for an answer, and sent no later than
 * its push was recorded: a command sent anew under the same id since (the old entry evicted, or
 * the device made again) is another one. Undefined when none is marked.
 *
 * Not held to MAX_PROPERTY_BYTES: a mark adds a few dozen bytes to at most MAX_COMMANDS_KEPT
 * entries, and a mark refused for size would leave the command "sent" for good.
 */
export function expireCommands(current: JsonObject | undefined, expiring: readonly ExpiredPush[], at: number): JsonObject | undefined {
  let expired: JsonObject | undefined
  for (const { id, pushedAt } of expiring) {
    const command = current && Object.hasOwn(current, id) ? (current[id] as Command) : undefined
    if (command?.status !== 'sent' || command.sentAt > nanos(pushedAt)) continue
    expired ??= { ...current }
    Object.defineProperty(expired, id, { value: { ...command, status: 'expired', expiredAt: nanos(at) }, enumerable: true, writable: true, configurable: true })
  }
  return expired
}

/** A device's answer to a command: `{ id, result }` (without `result`, the whole answer is the result). */
export function answerCommand(current: JsonObject | undefined, response: JsonObject, at: number): Measured<JsonObject> {
  const id = response.id
  if (typeof id !== 'string') throw new PayloadError('a command response must carry the command id as "id"')
  // own properties only: ids like "constructor" or "__proto__" are ids, not the prototype's
  const command = current && Object.hasOwn(current, id) ? (current[id] as Command) : undefined
  if (!command) throw new PayloadError(`no command ${id} was sent to this device`)
  const { id: _id, ...rest } = response
  const result = 'result' in response ? response.result : rest
  const answered = { ...current }
  // an answer to one marked expired: the device got it after all (an earlier try reached it)
  const { expiredAt: _expiredAt, ...sent } = command
  Object.defineProperty(answered, id, { value: { ...sent, status: 'answered', result, respondedAt: nanos(at) }, enumerable: true, writable: true, configurable: true })
  return measured(answered, 'commands')
}
