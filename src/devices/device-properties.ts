/**
 * The live properties of every device (attributes, telemetry, commands, rawData, connectinfo),
 * written through the store. Changes to one device run one at a time, in the order they were
 * asked for, each read-modify-write on the latest durable value — so an API PATCH and the
 * device's own publish never lose each other's keys. Each property is its own row: writers of
 * different properties cannot overwrite each other's.
 */
import type { PropertyName } from '../domain/device-properties.js'
import { KeyedQueue } from '../registry/keyed-queue.js'
import type { Store, StoredDeviceProperty } from '../store/store.js'

/** What a change returns to leave the property as it is (and write nothing). */
export const UNCHANGED = Symbol('unchanged')

interface PropertyValue {
  value: unknown
  /** Epoch milliseconds. */
  updatedAt: number
}

export class DeviceProperties {
  private readonly byDevice = new Map<string, Map<string, PropertyValue>>()
  private readonly queue = new KeyedQueue()

  constructor(private readonly store: Store) {}

  load(rows: readonly StoredDeviceProperty[]): void {
    for (const r of rows) this.set(r.deviceId, r.name, { value: r.value, updatedAt: r.updatedAt })
  }

  get(deviceId: string, name: PropertyName): unknown {
    return this.byDevice.get(deviceId)?.get(name)?.value
  }

  /** Every stored property of a device, by name. */
  of(deviceId: string): Partial<Record<PropertyName, unknown>> {
    const result: Partial<Record<PropertyName, unknown>> = {}
    for (const [name, p] of this.byDevice.get(deviceId) ?? []) result[name as PropertyName] = p.value
    return result
  }

  /** When any property of the device last changed (epoch ms), or undefined if none ever did. */
  lastChange(deviceId: string): number | undefined {
    let last: number | undefined
    for (const p of this.byDevice.get(deviceId)?.values() ?? []) if (last === undefined || p.updatedAt > last) last = p.updatedAt
    return last
  }

  /**
   * Replaces `name` of `deviceId` with what `change` makes of its current value, once that is
   * durable, then runs `afterwards` (a push, say) before the device's next change starts — so
   * what others see of the device's changes comes in the order they were stored. If `change`
   * throws, nothing is stored and the promise rejects with its error; if it returns
   * `UNCHANGED`, nothing is written and `afterwards` does not run.
   */
  update<T>(deviceId: string, name: PropertyName, change: (current: unknown) => T | typeof UNCHANGED, afterwards?: (value: T) => Promise<void>): Promise<T | typeof UNCHANGED> {
    return this.queue.run(deviceId, async () => {
      const value = change(this.get(deviceId, name))
      if (value === UNCHANGED) return UNCHANGED
      const updatedAt = Date.now()
      await this.store.commit([{ op: 'device.property', deviceId, name, value, updatedAt }])
      this.set(deviceId, name, { value, updatedAt })
      await afterwards?.(value)
      return value
    })
  }

  /** Resolves when every change asked for so far is stored (or failed). */
  async settled(): Promise<void> {
    while (this.queue.pendingKeys > 0) await new Promise((resolve) => setImmediate(resolve))
  }

  private set(deviceId: string, name: string, value: PropertyValue): void {
    let properties = this.byDevice.get(deviceId)
    if (!properties) this.byDevice.set(deviceId, (properties = new Map<string, PropertyValue>()))
    properties.set(name, value)
  }
}
