/**
 * The properties of every device (attributes, telemetry, commands, rawData, connectinfo), cached
 * and written through the store. A change is decided against the property as stored (locked, in
 * the transaction that writes it, where several replicas share the store), so an API PATCH
 * through one replica and the device's own publish through another never lose each other's keys.
 * Changes asked of this replica for one device also run one at a time, in order. Each property
 * is its own row: writers of different properties cannot overwrite each other's. The cache
 * changes only as the change log hands back committed values.
 */
import { Measured, type PropertyName } from '../domain/device-properties.js'
import { DeletionsInFlight } from '../registry/deletions-in-flight.js'
import { fewGet, fewPut, fewValues, type Few } from '../registry/few.js'
import { KeyedQueue } from '../registry/keyed-queue.js'
import type { LoggedChange } from '../store/change-log.js'
import type { Decider, DecisionReads, StoredProperty, StoredView } from '../store/decision.js'
import { VALUE_JSON } from '../store/property-json.js'
import type { Mutation, Store, StoredDeviceProperty } from '../store/store.js'

/** What a change returns to leave the property as it is (and write nothing). */
export const UNCHANGED = Symbol('unchanged')

interface PropertyValue {
  name: string
  value: unknown
  /** Epoch milliseconds. */
  updatedAt: number
}

const nameOf = (p: PropertyValue): string => p.name

const NOTHING_ELSE: readonly Mutation[] = []

export interface PropertyUpdateOptions<T> {
  /** Run once the change is durable, before the device's next change starts. */
  afterwards?: (value: T) => Promise<void>
  /** What else the change reads of the view (the device, its sessions), as stored with the property. */
  reads?: Omit<DecisionReads, 'properties'>
  /** Written in the change's transaction when it writes (a push's journal record): with it or not at all. */
  storeWith?: readonly Mutation[]
}

export class DeviceProperties {
  /** A device's few properties as a Few (registry/few.ts): a Map per device would cost more than a million devices' values. */
  private readonly byDevice = new Map<string, Few<string, PropertyValue>>()
  private readonly queue = new KeyedQueue()
  /** The devices' deletions under way: a change of one waits for its deletion (deletions-in-flight.ts). */
  readonly deletions = new DeletionsInFlight()

  constructor(
    private readonly decider: Decider,
    /**
     * Where the store is shared (PostgreSQL), nothing is cached: every change is decided on the
     * stored value, and the API reads a device's properties from here. Caching them would cost
     * memory in proportion to the fleet, or (bounded) a read racing the log could keep a stale copy.
     */
    private readonly sharedStore?: Pick<Store, 'readProperties' | 'readPropertiesOf'>
  ) {}

  /** Whether other replicas change the properties too (the store is shared): nothing is cached then. */
  get sharesStore(): boolean {
    return this.sharedStore !== undefined
  }

  /** A committed value, handed back by the change log. */
  applyChange(m: Extract<LoggedChange, { op: 'device.property' | 'device.delete' }>): void {
    if (this.sharedStore) return
    // a deleted device's properties are deleted with it
    if (m.op === 'device.delete') this.byDevice.delete(m.id)
    else this.set(m.deviceId, { name: m.name, value: m.value, updatedAt: m.updatedAt })
  }

  /** Every stored property of a device, by name, and when any of them last changed (epoch ms). */
  async find(deviceId: string): Promise<{ values: Partial<Record<PropertyName, unknown>>; lastChange: number | undefined }> {
    if (!this.sharedStore) return { values: this.of(deviceId), lastChange: this.lastChange(deviceId) }
    const values: Partial<Record<PropertyName, unknown>> = {}
    let lastChange: number | undefined
    for (const p of await this.sharedStore.readProperties(deviceId)) {
      values[p.name as PropertyName] = p.value
      if (lastChange === undefined || p.updatedAt > lastChange) lastChange = p.updatedAt
    }
    return { values, lastChange }
  }

  /** Every stored property of each of `deviceIds`, by name (one read of the store where it is shared). */
  async findMany(deviceIds: readonly string[]): Promise<Map<string, Partial<Record<PropertyName, unknown>>>> {
    const found = new Map<string, Partial<Record<PropertyName, unknown>>>()
    if (!this.sharedStore) {
      for (const id of deviceIds) found.set(id, this.of(id))
      return found
    }
    for (const id of deviceIds) found.set(id, {})
    for (const p of await this.sharedStore.readPropertiesOf(deviceIds)) found.get(p.deviceId)![p.name as PropertyName] = p.value
    return found
  }

  /** The property as cached, as a decision reads it. */
  stored(deviceId: string, name: string): StoredProperty | undefined {
    return fewGet(this.byDevice.get(deviceId), name, nameOf)
  }

  load(rows: Iterable<StoredDeviceProperty>): void {
    if (this.sharedStore) return
    for (const r of rows) this.set(r.deviceId, { name: r.name, value: r.value, updatedAt: r.updatedAt })
  }

  get(deviceId: string, name: PropertyName): unknown {
    return fewGet(this.byDevice.get(deviceId), name, nameOf)?.value
  }

  /** Every stored property of a device, by name. */
  of(deviceId: string): Partial<Record<PropertyName, unknown>> {
    const result: Partial<Record<PropertyName, unknown>> = {}
    for (const p of fewValues(this.byDevice.get(deviceId))) result[p.name as PropertyName] = p.value
    return result
  }

  /** When any property of the device last changed (epoch ms), or undefined if none ever did. */
  lastChange(deviceId: string): number | undefined {
    let last: number | undefined
    for (const p of fewValues(this.byDevice.get(deviceId))) if (last === undefined || p.updatedAt > last) last = p.updatedAt
    return last
  }

  /**
   * Replaces `name` of `deviceId` with what `change` makes of its current value, once that is
   * durable, then runs `afterwards` (a push, say) before the device's next change starts — so
   * what others see of the device's changes comes in the order they were stored. If `change`
   * throws, nothing is stored and the promise rejects with its error; if it returns
   * `UNCHANGED`, nothing is written and `afterwards` does not run. A value `change` measured
   * (`Measured`) is stored as the JSON it was measured with, not serialized again.
   */
  update<T>(
    deviceId: string,
    name: PropertyName,
    change: (current: unknown, view: StoredView) => T | Measured<T> | typeof UNCHANGED,
    options: PropertyUpdateOptions<T> = {}
  ): Promise<T | typeof UNCHANGED> {
    const { afterwards, reads, storeWith = NOTHING_ELSE } = options
    // promise chains, not async functions: a change waits for its batch's commit, and a suspended
    // async frame per change in flight is live memory every scavenge until then copies
    const decideAndFollow = (): Promise<T | typeof UNCHANGED> => {
      const updatedAt = Date.now()
      const decided = this.decider.decide<T | typeof UNCHANGED>({
        reads: { ...reads, properties: [[deviceId, name]] },
        decide: (view) => {
          const next = change(view.property(deviceId, name)?.value, view)
          if (next === UNCHANGED) return { mutations: [], result: UNCHANGED }
          if (!(next instanceof Measured)) return { mutations: [{ op: 'device.property', deviceId, name, value: next, updatedAt }, ...storeWith], result: next }
          // keys in the order property-json.ts writes them
          const property: Mutation = { op: 'device.property', deviceId, name, value: next.value, updatedAt, [VALUE_JSON]: next }
          return { mutations: [property, ...storeWith], result: next.value }
        }
      })
      if (!afterwards) return decided
      return decided.then((value) => (value === UNCHANGED ? UNCHANGED : afterwards(value).then(() => value)))
    }
    return this.queue.run(deviceId, () => {
      // decided while its device's deletion is under way (the caches still show the device), the
      // change would be stored after the deletion: a property of a device that is gone
      const deleting = this.deletions.settled(deviceId)
      return deleting ? deleting.then(decideAndFollow) : decideAndFollow()
    })
  }

  /**
   * Runs `work` in the device's turn: after the changes of it asked for so far (and their
   * `afterwards`), before those asked for later.
   */
  inTurn<T>(deviceId: string, work: () => Promise<T>): Promise<T> {
    return this.queue.run(deviceId, work)
  }

  /** Resolves when every change asked for so far is stored (or failed). */
  async settled(): Promise<void> {
    while (this.queue.pendingKeys > 0) await new Promise((resolve) => setImmediate(resolve))
  }

  private set(deviceId: string, value: PropertyValue): void {
    this.byDevice.set(deviceId, fewPut(this.byDevice.get(deviceId), value, nameOf))
  }
}
