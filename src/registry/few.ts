/**
 * A few values under one key of a big index — a session's topics, a device's subscription
 * entities — held as cheaply as V8 allows. With a million keys a Map per key (some 200 bytes
 * empty) costs more than what it holds, and almost every key holds one value: so one value is
 * held as itself, up to SMALL in an array, and only more in a Map. Iteration keeps insertion
 * order, as a Map's does, whichever form holds them.
 *
 * A Few is a plain value, not a class: the index stores what `fewPut` and `fewDelete` return.
 * Values must be plain objects (never arrays or Maps themselves), which is how the forms are
 * told apart.
 */
export type Few<K, V extends object> = V | V[] | Map<K, V>

/** Most values kept in an array; a linear scan of these is cheaper than hashing. */
const SMALL = 16

/** `few` with `value` added, replacing the value of the same key. Store the result. */
export function fewPut<K, V extends object>(few: Few<K, V> | undefined, value: V, keyOf: (v: V) => K): Few<K, V> {
  if (few === undefined) return value
  const key = keyOf(value)
  if (few instanceof Map) return few.set(key, value)
  if (!Array.isArray(few)) return keyOf(few) === key ? value : [few, value]
  const i = indexOf(few, key, keyOf)
  if (i >= 0) few[i] = value
  else if (few.length < SMALL) few.push(value)
  else return new Map([...few, value].map((v) => [keyOf(v), v]))
  return few
}

/** `few` without the value of `key`; undefined once empty. Store the result. */
export function fewDelete<K, V extends object>(few: Few<K, V> | undefined, key: K, keyOf: (v: V) => K): Few<K, V> | undefined {
  if (few === undefined) return undefined
  if (few instanceof Map) {
    few.delete(key)
    // one left is held as itself again; a Map shrunk to a few stays one (it grew once already)
    return few.size === 0 ? undefined : few.size === 1 ? few.values().next().value : few
  }
  if (!Array.isArray(few)) return keyOf(few) === key ? undefined : few
  const i = indexOf(few, key, keyOf)
  if (i < 0) return few
  few.splice(i, 1)
  return few.length === 1 ? few[0] : few
}

export function fewGet<K, V extends object>(few: Few<K, V> | undefined, key: K, keyOf: (v: V) => K): V | undefined {
  if (few === undefined) return undefined
  if (few instanceof Map) return few.get(key)
  if (!Array.isArray(few)) return keyOf(few) === key ? few : undefined
  const i = indexOf(few, key, keyOf)
  return i < 0 ? undefined : few[i]
}

/** The values, in insertion order. An array of the Few itself may be returned: do not change it. */
export function fewValues<K, V extends object>(few: Few<K, V> | undefined): Iterable<V> {
  if (few === undefined) return NONE
  if (few instanceof Map) return few.values()
  return Array.isArray(few) ? few : [few]
}

export function fewSize<K, V extends object>(few: Few<K, V> | undefined): number {
  if (few === undefined) return 0
  if (few instanceof Map) return few.size
  return Array.isArray(few) ? few.length : 1
}

/** The values as a Map by key: the Few's own Map when it is one (read-only), else a new one. */
export function fewMap<K, V extends object>(few: Few<K, V> | undefined, keyOf: (v: V) => K): ReadonlyMap<K, V> | undefined {
  if (few === undefined) return undefined
  if (few instanceof Map) return few
  return new Map((Array.isArray(few) ? few : [few]).map((v) => [keyOf(v), v]))
}

const NONE: readonly never[] = []

function indexOf<K, V>(values: readonly V[], key: K, keyOf: (v: V) => K): number {
  for (let i = 0; i < values.length; i++) if (keyOf(values[i]!) === key) return i
  return -1
}
