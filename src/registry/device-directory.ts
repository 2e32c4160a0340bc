/**
 * Registered devices, cached in memory for authentication on every CONNECT and written through
 * the store. Creating devices is all-or-nothing and decided against what is stored: a batch with
 * an id that exists — created here or by another replica — stores none. Changes of a device
 * (its description, its token) are decided against it as stored too, one at a time per device.
 * The cache changes only as the change log hands back committed changes; a device another
 * replica has just created and the log has not brought yet is read from the store on a miss, so
 * a device is accepted everywhere as soon as its creation has been answered.
 *
 * Tokens are kept only as keyed hashes (domain/secret.ts), under the store's key: a token is
 * known to the hub only in the answer that creates or replaces it.
 */
import { LRUCache } from 'lru-cache'
import { changeDevice, changesDevice, createDevice, newToken, tokenMatches, type CreatedDevice, type Device, type DeviceChange, type NewDevice } from '../domain/device.js'
import type { LoggedChange } from '../store/change-log.js'
import type { Decider, StoredView } from '../store/decision.js'
import { sortIds, sortsAfter } from '../store/fleet-reads.js'
import type { Mutation, Store } from '../store/store.js'
import { KeyedQueue } from './keyed-queue.js'
import { OrderedIds } from './ordered-ids.js'

export class DuplicateDeviceError extends Error {
  constructor(readonly ids: string[]) {
    super(`device id already exists: ${ids.join(', ')}`)
    this.name = 'DuplicateDeviceError'
  }
}

/** The device a change names is not registered (or no longer). */
export class UnknownDeviceError extends Error {
  constructor(readonly id: string) {
    super(`no device ${id}`)
    this.name = 'UnknownDeviceError'
  }
}

export class DeviceDirectory {
  /** All devices where this process holds the fleet; the ones used last where replicas share the store. */
  private readonly devices: Map<string, Device> | LRUCache<string, Device>
  /** The ids in id order, for listings and fleet walks by keyset (built at the first), where all are held. */
  private readonly order: OrderedIds | undefined
  /** Ids being created by a commit still in flight, so two requests cannot both take one. */
  private readonly reserved = new Set<string>()
  /** Changes of one device, one at a time: where decisions are made from the caches, each must see the one before. */
  private readonly queue = new KeyedQueue()
  private decider: Decider | undefined

  constructor(
    private readonly store: Store,
    /** Whether other replicas write the store too, so a miss here may be a device made there. */
    private readonly shared: boolean,
    /**
     * Devices kept where the store is shared; undefined where this process holds the whole fleet
     * (the embedded broker, on either store), whose device listing is read from here.
     */
    cacheSize?: number
  ) {
    this.devices = shared && cacheSize !== undefined ? new LRUCache<string, Device>({ max: cacheSize }) : new Map<string, Device>()
    this.order = this.devices instanceof Map ? new OrderedIds((id) => this.devices.has(id)) : undefined
  }

  /** Where creations are decided (set once the hub has composed its caches). */
  decideWith(decider: Decider): void {
    this.decider = decider
  }

  load(devices: Iterable<Device>): void {
    for (const d of devices) this.cache(d)
  }

  /** A committed change of a device, handed back by the change log. */
  applyChange(m: Extract<LoggedChange, { op: 'device.put' | 'device.delete' }>): void {
    if (m.op === 'device.put') this.cache(m.device)
    else if (this.devices.delete(m.id)) this.order?.noteDeleted()
  }

  private cache(device: Device): void {
    if (!this.devices.has(device.id)) this.order?.noteAdded(device.id)
    this.devices.set(device.id, device)
  }

  get(id: string): Device | undefined {
    return this.devices.get(id)
  }

  /** Every device cached, in no particular order (the whole fleet where this process holds it). */
  values(): IterableIterator<Device> {
    return this.devices.values()
  }

  /**
   * The devices cached with an id after `after` (all when undefined), in id order: a keyset page
   * costs its own length, however many devices there are (ordered-ids.ts). Devices created while
   * the iteration runs are not visited; devices deleted meanwhile are skipped.
   */
  *inIdOrder(after?: string): Generator<Device> {
    // a cache of the devices used last (replicas share the store) lists from the store, not from here
    const ids = this.order ? this.order.after(after, () => this.devices.keys()) : sortIds([...this.devices.keys()]).filter(sortsAfter(after))
    for (const id of ids) {
      const device = this.devices.get(id)
      if (device) yield device
    }
  }

  /** The device, read from the store when the cache does not have it (yet) and others write the store. */
  async find(id: string): Promise<Device | undefined> {
    const cached = this.devices.get(id)
    if (cached || !this.shared) return cached
    return this.readStored(id)
  }

  private async readStored(id: string): Promise<Device | undefined> {
    const stored = await this.store.readDevice(id)
    // the log brings the same device soon; caching it now spares the next login the read
    if (stored && !this.devices.has(id)) this.cache(stored)
    return stored
  }

  get size(): number {
    return this.devices.size
  }

  /** Creates the devices, all or none; answers each with its token, which is shown this once. */
  async create(inputs: readonly NewDevice[], now: number = Date.now()): Promise<CreatedDevice[]> {
    const decider = this.deciderNow()
    const created = inputs.map((input) => createDevice(input, this.store.tokens, now))
    const ids = created.map((c) => c.device.id)
    // where others write the store, the cache may still hold a device deleted there: the decision tells
    const taken = ids.filter((id, i) => (!this.shared && this.devices.has(id)) || this.reserved.has(id) || ids.indexOf(id) !== i)
    if (taken.length > 0) throw new DuplicateDeviceError([...new Set(taken)])
    for (const id of ids) this.reserved.add(id)
    try {
      return await decider.decide({
        reads: { devices: ids },
        decide: (view) => {
          const stored = ids.filter((id) => view.device(id) !== undefined)
          if (stored.length > 0) throw new DuplicateDeviceError(stored)
          return { mutations: created.map(({ device }) => ({ op: 'device.put', device })), result: created }
        }
      })
    } finally {
      for (const id of ids) this.reserved.delete(id)
    }
  }

  /** Changes a device's name, description, group or ext; answers it as stored. */
  update(id: string, change: DeviceChange, now: number = Date.now()): Promise<Device> {
    return this.changeOne(id, (stored) => {
      // the same values again: nothing to store, no `device.changed` to tell
      if (!changesDevice(stored, change)) return { mutations: [], result: stored }
      const device = changeDevice(stored, change, now)
      return { mutations: [{ op: 'device.put', device }], result: device }
    })
  }

  /**
   * Gives the device a new token, answered this once; the old one is refused from the commit
   * on (every replica checks a login against the stored hash where the store is shared).
   */
  rotateToken(id: string, now: number = Date.now()): Promise<CreatedDevice> {
    const token = newToken()
    const tokenHash = this.store.tokens.hash(token)
    return this.changeOne(id, (stored) => {
      const device: Device = { ...stored, tokenHash, updatedAt: Math.max(now, stored.updatedAt) }
      return { mutations: [{ op: 'device.put', device }], result: { device, token } }
    })
  }

  /**
   * One change of one registered device, decided against it as stored (throws UnknownDeviceError
   * when there is none), after the device's earlier changes here. `also` names more to read and
   * lock with it (a deletion reads the device's sessions).
   */
  changeOne<R>(
    id: string,
    decide: (stored: Device, view: StoredView) => { mutations: Mutation[]; result: R },
    also: { sessions?: readonly string[]; deviceSessions?: boolean } = {}
  ): Promise<R> {
    const decider = this.deciderNow()
    return this.queue.run(id, () =>
      decider.decide({
        reads: { devices: [id], ...(also.sessions ? { sessions: also.sessions } : {}), ...(also.deviceSessions ? { deviceSessions: [id] } : {}) },
        decide: (view) => {
          const stored = view.device(id)
          if (!stored) throw new UnknownDeviceError(id)
          return decide(stored, view)
        }
      })
    )
  }

  private deciderNow(): Decider {
    if (!this.decider) throw new Error('the device directory has no decider yet')
    return this.decider
  }

  /**
   * True when `deviceId` is registered and `password` is its token. Where other replicas write
   * the store, the stored hash decides, not the cache: the cache follows the change log, which a
   * token replaced or a device deleted through another replica reaches a moment later, and the
   * old token must be refused from the moment that change was answered. One read by primary
   * key, beside the ones a login already makes there (its session, its device's session count).
   */
  authenticate(deviceId: string, password: Buffer | string | undefined): boolean | Promise<boolean> {
    const matches = (device: Device | undefined) => device !== undefined && tokenMatches(device, this.store.tokens, password)
    if (!this.shared) return matches(this.devices.get(deviceId))
    return this.store.readDevice(deviceId).then((stored) => {
      if (stored && !this.devices.has(deviceId)) this.cache(stored)
      return matches(stored)
    })
  }
}
