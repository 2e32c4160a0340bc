/**
 * A device property's value as JSON, made once per change.
 *
 * Every bounded property change (attributes merged, telemetry, a command, rawData) is serialized
 * to measure it against MAX_PROPERTY_BYTES (domain/device-properties.ts, `Measured`). Its row and
 * its change-log entry are that same text: serializing the value again for each — as the stores
 * did — cost two more `JSON.stringify` of a document that may be up to 256 KiB, per change, on
 * the main thread (a device's telemetry holds every key it ever sent).
 *
 * So a `device.property` mutation can carry the text it was measured with under `VALUE_JSON`: a
 * symbol, because whatever copies or serializes a mutation (the log's JSON, `postMessage`, a
 * spread) must not carry a second copy of the value along — JSON and structured clone skip
 * symbol keys. Readers of the log and of the tables see exactly what they saw before: the text is
 * the one `JSON.stringify(value)` makes.
 */
import type { LoggedChange } from './change-log.js'
import type { Mutation } from './store.js'

/** The key of a `device.property` mutation's value as JSON, when it was measured (see above). */
export const VALUE_JSON: unique symbol = Symbol('device property value as JSON')

type PropertyChange = Extract<Mutation, { op: 'device.property' }>

/** The text of the property's value as its row keeps it (null: no value). */
export function propertyValueText(m: PropertyChange): string | null {
  return m[VALUE_JSON] ?? JSON.stringify(m.value) ?? null
}

/**
 * `JSON.stringify(change)`, made around the value's JSON where the change carries it: the same
 * text, keys in the same order (the order `DeviceProperties.update` builds them in).
 */
export function changeText(change: LoggedChange): string {
  if (change.op !== 'device.property') return JSON.stringify(change)
  const json = change[VALUE_JSON]
  // a number JSON cannot write as itself (never a clock's) goes the long way
  if (json === undefined || !Number.isFinite(change.updatedAt)) return JSON.stringify(change)
  return `{"op":"device.property","deviceId":${JSON.stringify(change.deviceId)},"name":${JSON.stringify(change.name)},"value":${json},"updatedAt":${change.updatedAt}}`
}

/**
 * `JSON.stringify` of a batch's changes (of the one change when there is one alone): in one call,
 * as V8 writes it cheapest, unless a change carries its value's JSON — then entry by entry.
 */
export function changesText(changes: readonly LoggedChange[]): string {
  if (changes.length === 1) return changeText(changes[0]!)
  if (!changes.some(carriesJson)) return JSON.stringify(changes)
  let text = '['
  for (let i = 0; i < changes.length; i++) text += (i === 0 ? '' : ',') + changeText(changes[i]!)
  return text + ']'
}

function carriesJson(change: LoggedChange): boolean {
  return change.op === 'device.property' && change[VALUE_JSON] !== undefined
}
