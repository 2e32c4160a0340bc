/**
 * A device property's value as JSON, made once per change.
 *
 * Every bounded property change (attributes merged, telemetry, a command, rawData) is serialized
 * to measure it against MAX_PROPERTY_BYTES (domain/device-properties.ts, `Measured`). Its row and
 * its change-log entry are that same text: serializing the value again for each — as the stores
 * did — cost two more `JSON.stringify` of a document that may be up to 256 KiB, per change, on
 * the main thread (a device's telemetry holds every key it ever sent); the event stream's JSON of
 * a live entry a third (events/from-log.ts, `eventJson`).
 *
 * So a `device.property` mutation can carry its `Measured` value under `VALUE_JSON`. A symbol,
 * because what serializes a mutation — the log's JSON, `postMessage` to the writer — must not
 * write a second copy of the value: JSON and structured clone skip symbol keys. A spread does
 * copy it, so the text is used only while the mutation's value is the very one measured
 * (`valueJson`): a copy given another value falls back to serializing it. Readers of the log and
 * of the tables see exactly what they saw before: the text is the one `JSON.stringify(value)`
 * makes.
 *
 * What it costs: the text lives as long as the mutation — through its commit, and in the log
 * entries handed to the caches and, while event consumers are behind, their queues — beside the
 * value it spells.
 */
import type { LoggedChange } from './change-log.js'
import type { Mutation } from './store.js'

/** The key of a `device.property` mutation's measured value (see above). */
export const VALUE_JSON: unique symbol = Symbol('device property value, measured')

type PropertyChange = Extract<Mutation, { op: 'device.property' }>

/** The JSON the change's value was measured with, if it still is that value. */
export function valueJson(m: PropertyChange): string | undefined {
  const measured = m[VALUE_JSON]
  return measured !== undefined && measured.value === m.value ? measured.json : undefined
}

/** The text of the property's value as its row keeps it (null: no value). */
export function propertyValueText(m: PropertyChange): string | null {
  return valueJson(m) ?? JSON.stringify(m.value) ?? null
}

/**
 * `JSON.stringify(change)`, made around the value's JSON where the change carries it: the same
 * text, keys in the same order (the order `DeviceProperties.update` builds them in).
 */
export function changeText(change: LoggedChange): string {
  const json = change.op === 'device.property' ? valueJson(change) : undefined
  if (json === undefined || change.op !== 'device.property') return JSON.stringify(change)
  return `{"op":"device.property","deviceId":${JSON.stringify(change.deviceId)},"name":${JSON.stringify(change.name)},"value":${json},"updatedAt":${JSON.stringify(change.updatedAt)}}`
}

/**
 * `JSON.stringify` of a batch's changes (of the one change when there is one alone): in one call,
 * as V8 writes it cheapest, unless a change carries its value's JSON — then each such change
 * around its JSON, and each run of the others between them in one call still.
 */
export function changesText(changes: readonly LoggedChange[]): string {
  if (changes.length === 1) return changeText(changes[0]!)
  if (!changes.some(carriesJson)) return JSON.stringify(changes)
  const parts: string[] = []
  let runStart = 0
  const endRun = (end: number): void => {
    // a run's array text without its brackets
    if (end > runStart) parts.push(JSON.stringify(changes.slice(runStart, end)).slice(1, -1))
  }
  for (let i = 0; i < changes.length; i++) {
    if (!carriesJson(changes[i]!)) continue
    endRun(i)
    parts.push(changeText(changes[i]!))
    runStart = i + 1
  }
  endRun(changes.length)
  return `[${parts.join(',')}]`
}

function carriesJson(change: LoggedChange): boolean {
  return change.op === 'device.property' && valueJson(change) !== undefined
}
