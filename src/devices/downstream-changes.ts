/**
 * The downstream changes of one device — attributes merged, a command sent, raw bytes passed — made the one way
 * every API route makes them: the device's own routes (`/v1/devices/{id}/…`) and the fleet's
 * (`/v1/devices/attributes`, `/v1/devices/commands`), so a device changed by a fleet push gets
 * exactly what its own route would give it: the same stored merge, the same push payload, the
 * same change-log entry.
 *
 * Each change is decided against the device and the property as stored — where replicas share
 * the store, in the transaction that writes it, under the device's lock — so a device deleted
 * meanwhile gets no property row (UnknownDeviceError, nothing stored). The push is recorded
 * with the change (push-journal.ts). Then, in the device's queue of changes, it is pushed; a
 * push that fails does not undo the stored change: the outcome says so, and its record stays,
 * to be tried again (kept-pushes.ts) or published by another run. A command (raw bytes) to a
 * device that has as many waiting for the broker as it may is refused before anything is stored
 * (PushBacklogFull).
 */
import { addCommand, hasCommand, isJsonObject, mergeAttributes, type Command, type JsonObject, type Measured } from '../domain/device-properties.js'
import { UnknownDeviceError } from '../registry/device-directory.js'
import { UNCHANGED, type DeviceProperties } from './device-properties.js'
import { PushBacklogFull, type Dispatcher, type PreparedPush } from './dispatcher.js'

export interface PushOutcome {
  /** The sessions the change was published to (those holding a subscription entity for it). */
  pushedTo: string[]
  /** Set when the change was stored but could not be pushed (the broker failed or is stopping). */
  pushError?: string
}

/** What a command already sent to the device (its id is kept under `commands`) is answered. */
export const ALREADY_SENT = Symbol('already sent')

/** What the device receives of a command: `{ id, name, params }`. */
export function commandPayload(command: Pick<Command, 'id' | 'name' | 'params'>): Buffer {
  return Buffer.from(JSON.stringify({ id: command.id, name: command.name, params: command.params }))
}

export class DownstreamChanges {
  constructor(
    private readonly properties: DeviceProperties,
    private readonly dispatcher: Pick<Dispatcher, 'prepare' | 'push' | 'refuseOverBacklog' | 'countRefusal'>
  ) {}

  /**
   * Merges `patch` into the device's attributes and pushes `payload` (the patch as JSON; made
   * once by a caller changing many devices). Throws UnknownDeviceError, or PayloadError when
   * the merged attributes would be too large; either way nothing is stored. Answers the stored
   * attributes with their JSON (`attributesJson`), made to measure them, for a caller to send on.
   */
  mergeAttributes(id: string, patch: JsonObject, payload: Buffer): Promise<{ attributes: JsonObject; attributesJson: string } & PushOutcome> {
    const outcome: PushOutcome = { pushedTo: [] }
    // the decision's last run is the one stored (a store may run it again, on what it reads then)
    let merged: Measured<JsonObject> | undefined
    const push = this.dispatcher.prepare(id, 'attributes', payload)
    // a promise chain, not an async function, as DeviceProperties.update
    return this.properties
      .update(
        id,
        'attributes',
        (current, view) => {
          if (!view.device(id)) throw new UnknownDeviceError(id)
          merged = mergeAttributes(isJsonObject(current) ? current : undefined, patch)
          return merged
        },
        { afterwards: () => this.push(push, outcome), reads: { devices: [id] }, storeWith: push.storeWith }
      )
      // the change always writes (a merge is never UNCHANGED)
      .then(() => ({ attributes: merged!.value, attributesJson: merged!.json, ...outcome }))
  }

  /**
   * Keeps `command` under the device's commands and pushes `payload` (`commandPayload`), unless
   * a command of that id was sent to it already: then nothing is stored or pushed.
   */
  async sendCommand(id: string, command: Command, payload: Buffer): Promise<({ command: Command } & PushOutcome) | typeof ALREADY_SENT> {
    const outcome: PushOutcome = { pushedTo: [] }
    const push = this.dispatcher.prepare(id, 'commands', payload)
    const stored = await this.overBacklogCounted(this.properties.update(
      id,
      'commands',
      (current, view) => {
        if (!view.device(id)) throw new UnknownDeviceError(id)
        const commands = isJsonObject(current) ? current : undefined
        if (hasCommand(commands, command.id)) return UNCHANGED
        this.dispatcher.refuseOverBacklog(id, 'commands')
        return addCommand(commands, command)
      },
      { afterwards: () => this.push(push, outcome), reads: { devices: [id] }, storeWith: push.storeWith }
    ))
    if (stored === UNCHANGED) return ALREADY_SENT
    return { command, ...outcome }
  }

  /**
   * Keeps `raw` as the device's rawData (what `bytes` became, `rawDataOf`) and passes the bytes to
   * it as they are. Throws UnknownDeviceError, or PayloadError when rawData would be too large.
   */
  async sendRaw(id: string, raw: () => unknown, bytes: Buffer): Promise<PushOutcome> {
    const outcome: PushOutcome = { pushedTo: [] }
    const push = this.dispatcher.prepare(id, 'raw', bytes)
    await this.overBacklogCounted(this.properties.update(
      id,
      'rawData',
      (_current, view) => {
        if (!view.device(id)) throw new UnknownDeviceError(id)
        this.dispatcher.refuseOverBacklog(id, 'raw')
        return raw()
      },
      { afterwards: () => this.push(push, outcome), reads: { devices: [id] }, storeWith: push.storeWith }
    ))
    return outcome
  }

  /** `change`, a refusal over the device's backlog counted once it is over (its decision may have run more than once). */
  private async overBacklogCounted<T>(change: Promise<T>): Promise<T> {
    try {
      return await change
    } catch (error) {
      if (error instanceof PushBacklogFull) this.dispatcher.countRefusal(error)
      throw error
    }
  }

  private async push(push: PreparedPush, outcome: PushOutcome): Promise<void> {
    try {
      outcome.pushedTo = await this.dispatcher.push(push)
    } catch (error) {
      outcome.pushError = `stored, not pushed: ${(error as Error).message}`
    }
  }
}
