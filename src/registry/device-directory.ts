/**
 * Registered devices, cached in memory for authentication on every CONNECT and written through
 * the store. Creating devices is all-or-nothing and decided against what is stored: a batch with
 * an id that exists — created here or by another replica — stores none. The cache changes only
 * as the change log hands back committed devices; a device another replica has just created and
 * the log has not brought yet is read from the store on a miss, so a device is accepted
 * everywhere as soon as its creation has been answered.
 */
import { LRUCache } from 'lru-cache'
import { createDevice, tokenMatches, type Device, type NewDevice } from '../domain/device.js'
import type { LoggedChange } from '../store/change-log.js'
import type { Decider } from '../store/decision.js'
import type { Store } from '../store/store.js'

export class DuplicateDeviceError extends Error {
  constructor(readonly ids: string[]) {
    super(`device id already exists: ${ids.join(', ')}`)
    this.name = 'DuplicateDeviceError'
  }
}

export class DeviceDirectory {
  /** All devices where this process is the store's only writer; the ones used last where the store is shared. */
  private readonly devices: Map<string, Device> | LRUCache<string, Device>
  /** Ids being created by a commit still in flight, so two requests cannot both take one. */
  private readonly reserved = new Set<string>()
  private decider: Decider | undefined

  constructor(
    private readonly store: Store,
    /** Whether other replicas write the store too, so a miss here may be a device made there. */
    private readonly shared: boolean,
    /** Devices kept where the store is shared. */
    cacheSize = 100_000
  ) {
    this.devices = shared ? new LRUCache<string, Device>({ max: cacheSize }) : new Map<string, Device>()
  }

  /** Where creations are decided (set once the hub has composed its caches). */
  decideWith(decider: Decider): void {
    this.decider = decider
  }

  load(devices: Iterable<Device>): void {
    for (const d of devices) this.devices.set(d.id, d)
  }

  /** A committed device, handed back by the change log. */
  applyChange(m: Extract<LoggedChange, { op: 'device.put' }>): void {
    this.devices.set(m.device.id, m.device)
  }

  get(id: string): Device | undefined {
    return this.devices.get(id)
  }

  /** The device, read from the store when the cache does not have it (yet) and others write the store. */
  async find(id: string): Promise<Device | undefined> {
    const cached = this.devices.get(id)
    if (cached || !this.shared) return cached
    const stored = await this.store.readDevice(id)
    // the log brings the same device soon; caching it now spares the next login the read
    if (stored && !this.devices.has(id)) this.devices.set(id, stored)
    return stored
  }

  get size(): number {
    return this.devices.size
  }

  async create(inputs: readonly NewDevice[], now: number = Date.now()): Promise<Device[]> {
    if (!this.decider) throw new Error('the device directory has no decider yet')
    const devices = inputs.map((input) => createDevice(input, now))
    const ids = devices.map((d) => d.id)
    const taken = ids.filter((id, i) => this.devices.has(id) || this.reserved.has(id) || ids.indexOf(id) !== i)
    if (taken.length > 0) throw new DuplicateDeviceError([...new Set(taken)])
    for (const id of ids) this.reserved.add(id)
    try {
      return await this.decider.decide({
        reads: { devices: ids },
        decide: (view) => {
          const stored = ids.filter((id) => view.device(id) !== undefined)
          if (stored.length > 0) throw new DuplicateDeviceError(stored)
          return { mutations: devices.map((device) => ({ op: 'device.put', device })), result: devices }
        }
      })
    } finally {
      for (const id of ids) this.reserved.delete(id)
    }
  }

  /** True when `deviceId` is registered and `password` is its token. */
  authenticate(deviceId: string, password: Buffer | string | undefined): boolean | Promise<boolean> {
    const device = this.devices.get(deviceId)
    if (device || !this.shared) return device !== undefined && tokenMatches(device, password)
    return this.find(deviceId).then((found) => found !== undefined && tokenMatches(found, password))
  }
}
