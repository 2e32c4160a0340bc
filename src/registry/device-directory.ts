/**
 * Registered devices, kept in memory for authentication on every CONNECT and written through
 * the store. Creating devices is all-or-nothing: a batch with a duplicate id stores none.
 */
import { createDevice, tokenMatches, type Device, type NewDevice } from '../domain/device.js'
import type { Store } from '../store/store.js'

export class DuplicateDeviceError extends Error {
  constructor(readonly ids: string[]) {
    super(`device id already exists: ${ids.join(', ')}`)
    this.name = 'DuplicateDeviceError'
  }
}

export class DeviceDirectory {
  private readonly devices = new Map<string, Device>()
  /** Ids being created by a commit still in flight, so two requests cannot both take one. */
  private readonly reserved = new Set<string>()

  constructor(private readonly store: Store) {}

  load(devices: readonly Device[]): void {
    for (const d of devices) this.devices.set(d.id, d)
  }

  get(id: string): Device | undefined {
    return this.devices.get(id)
  }

  get size(): number {
    return this.devices.size
  }

  async create(inputs: readonly NewDevice[], now: number = Date.now()): Promise<Device[]> {
    const devices = inputs.map((input) => createDevice(input, now))
    const ids = devices.map((d) => d.id)
    const taken = ids.filter((id, i) => this.devices.has(id) || this.reserved.has(id) || ids.indexOf(id) !== i)
    if (taken.length > 0) throw new DuplicateDeviceError([...new Set(taken)])
    for (const id of ids) this.reserved.add(id)
    try {
      await this.store.commit(devices.map((device) => ({ op: 'device.put', device })))
      for (const d of devices) this.devices.set(d.id, d)
      return devices
    } finally {
      for (const id of ids) this.reserved.delete(id)
    }
  }

  /** True when `deviceId` is registered and `password` is its token. */
  authenticate(deviceId: string, password: Buffer | string | undefined): boolean {
    const device = this.devices.get(deviceId)
    return device !== undefined && tokenMatches(device, password)
  }
}
