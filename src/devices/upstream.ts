/**
 * Upstream: what a device publishes on its own property topics changes its device entity.
 *
 * - `v1/devices/me/attributes`: a JSON object, merged into `attributes`;
 * - `v1/devices/me/telemetry`: a JSON object, each key's latest value kept with its time;
 * - `v1/devices/me/raw`: any bytes, kept as `rawData` `{ data, timestamp, topic }`;
 * - `v1/devices/me/command/response`: `{ id, result }`, recorded on the command it answers.
 *
 * A payload that is not what its topic expects throws PayloadError and stores nothing. Each change
 * is decided against the device as stored: a publish taken as its device is deleted (before the
 * device's connection is closed) finds it gone and changes nothing, so no property outlives its
 * device.
 */
import { CHANGE_TOPICS, COMMAND_RESPONSE_TOPIC } from '../domain/change-topics.js'
import { answerCommand, mergeAttributes, mergeTelemetry, parseObject, rawDataOf, type JsonObject, type Measured, type PropertyName } from '../domain/device-properties.js'
import type { StoredView } from '../store/decision.js'
import { UNCHANGED, type DeviceProperties } from './device-properties.js'

const UPSTREAM_TOPICS = new Set<string>([CHANGE_TOPICS.attributes, CHANGE_TOPICS.telemetry, CHANGE_TOPICS.raw, COMMAND_RESPONSE_TOPIC])

export class Upstream {
  constructor(
    private readonly properties: DeviceProperties,
    /** Deepest JSON a payload may nest: what the hub does with a value recurses once per level. */
    private readonly maxJsonDepth: number
  ) {}

  /** Whether a device's publish on `deviceTopic` (as the device names it) changes its entity. */
  handles(deviceTopic: string): boolean {
    return UPSTREAM_TOPICS.has(deviceTopic)
  }

  /**
   * Applies one upstream publish; resolves once the change is durable and `afterwards` (the
   * routing of the message) has run, before the device's next change: with true, or with false
   * when the device is not registered (or no longer is): then nothing was stored and `afterwards`
   * did not run.
   */
  async receive(deviceId: string, deviceTopic: string, brokerTopic: string, payload: Buffer, afterwards?: () => Promise<void>, at = Date.now()): Promise<boolean> {
    switch (deviceTopic) {
      case CHANGE_TOPICS.attributes: {
        const patch = parseObject(payload, 'an attributes update', this.maxJsonDepth)
        return this.change(deviceId, 'attributes', (current) => mergeAttributes(current as JsonObject | undefined, patch), afterwards)
      }
      case CHANGE_TOPICS.telemetry: {
        const values = parseObject(payload, 'telemetry', this.maxJsonDepth)
        return this.change(deviceId, 'telemetry', (current) => mergeTelemetry(current as JsonObject | undefined, values, at), afterwards)
      }
      case CHANGE_TOPICS.raw: {
        const raw = rawDataOf(payload, brokerTopic, at, this.maxJsonDepth)
        return this.change(deviceId, 'rawData', () => raw, afterwards)
      }
      case COMMAND_RESPONSE_TOPIC: {
        const response = parseObject(payload, 'a command response', this.maxJsonDepth)
        return this.change(deviceId, 'commands', (current) => answerCommand(current as JsonObject | undefined, response, at), afterwards)
      }
    }
    return false
  }

  /** `name` of the device as `change` makes it, decided with the device as stored: nothing when it is gone (false). */
  private change<T>(deviceId: string, name: PropertyName, change: (current: unknown) => Measured<T> | typeof UNCHANGED, afterwards?: () => Promise<void>): Promise<boolean> {
    let registered = false
    // a store may decide more than once (on what it reads then): the last run is the one stored
    const decide = (current: unknown, view: StoredView) => {
      registered = view.device(deviceId) !== undefined
      return registered ? change(current) : UNCHANGED
    }
    // a promise chain, not an async function, as DeviceProperties.update
    return this.properties.update(deviceId, name, decide, { afterwards, reads: { devices: [deviceId] } }).then(() => registered)
  }
}
