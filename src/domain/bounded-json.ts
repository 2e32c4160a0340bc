/**
 * JSON parsing with limits on depth and size, for everything a device or an API caller sends.
 *
 * JSON.parse itself does not recurse, so it takes any depth; but what the hub does next with
 * the value — JSON.stringify to measure or store it, structured cloning to the store's writer
 * thread — recurses once per level, and a document 10,000 levels deep (60 KiB of `[`) blows
 * the stack there. So the depth is measured on the text, without recursion, before anything is
 * parsed: a value that passed here can be walked recursively without risk.
 */

/** Nesting allowed when nothing else is configured: far more than real documents use, far less than a stack holds. */
export const DEFAULT_MAX_JSON_DEPTH = 32

export interface JsonLimits {
  /** Most levels of arrays and objects, one inside the other (`{}` is 1, `{"a":[]}` is 2). */
  maxDepth: number
  /** Most bytes of UTF-8 text; no bound when absent. */
  maxBytes?: number
}

/** A text past a limit: not parsed at all. */
export class JsonLimitError extends Error {
  override name = 'JsonLimitError'
}

const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const QUOTE = 0x22
const BACKSLASH = 0x5c

/**
 * The deepest nesting of arrays and objects in `text`, counted without recursion; counting stops
 * as soon as it passes `stopAbove`, so a hostile text costs no more than the limit needs. Brackets
 * inside strings do not count. For text that is not JSON the answer means nothing, but it is
 * still finite: JSON.parse then refuses the text.
 */
export function jsonDepth(text: string, stopAbove = Number.POSITIVE_INFINITY): number {
  let depth = 0
  let deepest = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === BACKSLASH) i++ // whatever is escaped, it cannot end the string
      else if (c === QUOTE) inString = false
    } else if (c === QUOTE) {
      inString = true
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > deepest) {
        deepest = depth
        if (deepest > stopAbove) return deepest
      }
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--
    }
  }
  return deepest
}

/**
 * Whether `text` nests arrays and objects deeper than `maxDepth`. A text cannot nest deeper than
 * it has `{` and `[` in all, in strings or not, and most texts a device or a caller sends have no
 * more than the limit: those are answered by counting the two characters with `indexOf`, which
 * searches natively. `jsonDepth`'s loop over every character cost as much as half of the text's
 * `JSON.parse` (~10 µs for a 1.3 KB body on a 2-cpu AMD VM, 2026-12-08, against ~0.5 for the
 * count); a text with more goes through it all the same.
 */
export function nestsDeeperThan(text: string, maxDepth: number): boolean {
  // the count reads a text without the openings it looks for to its end, where the scan stops
  // as soon as it is past the limit: a long hostile text (megabytes of `[`) goes to the scan
  if (text.length <= COUNTED_UP_TO && openingsAtMost(text, maxDepth)) return false
  return jsonDepth(text, maxDepth) > maxDepth
}

/** Longest text whose openings are counted first (characters): far above a device's usual payload. */
const COUNTED_UP_TO = 64 * 1024

/** Whether `text` holds at most `limit` of `{` and `[` together. */
function openingsAtMost(text: string, limit: number): boolean {
  let count = 0
  for (let i = text.indexOf('{'); i !== -1; i = text.indexOf('{', i + 1)) if (++count > limit) return false
  for (let i = text.indexOf('['); i !== -1; i = text.indexOf('[', i + 1)) if (++count > limit) return false
  return true
}

/** Refuses text past `limits` with a JsonLimitError naming the limit; returns nothing otherwise. */
export function checkJsonText(text: string, limits: JsonLimits): void {
  if (limits.maxBytes !== undefined) {
    const bytes = Buffer.byteLength(text, 'utf8')
    if (bytes > limits.maxBytes) throw new JsonLimitError(`${bytes} bytes of JSON, more than the ${limits.maxBytes} taken`)
  }
  if (nestsDeeperThan(text, limits.maxDepth)) throw new JsonLimitError(`JSON nested more than ${limits.maxDepth} levels deep`)
}

/**
 * Parses `text` as JSON once it is within `limits`. Throws JsonLimitError past a limit (nothing
 * is parsed then) and SyntaxError for text that is not JSON.
 */
export function parseBoundedJson(text: string, limits: JsonLimits): unknown {
  checkJsonText(text, limits)
  return JSON.parse(text) as unknown
}

/** Bytes of `value` as JSON text; only for values that came through the limits above. */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value) ?? '', 'utf8')
}
