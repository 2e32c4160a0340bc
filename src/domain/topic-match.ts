/**
 * MQTT topic matching (MQTT 3.1.1 §4.7), for the places that test one filter against one name,
 * and the order qlobber — Aedes' matcher — finds filters in, for the indexes that stand in for
 * its trie (registry/topic-book.ts, embedded/first-level-matcher.ts).
 */

const SLASH = 47 // '/'
const PLUS = 43 // '+'
const HASH = 35 // '#'

/**
 * Whether subscription `filter` would receive a message published on `topic`: `+` is one level,
 * `#` the rest of them, none included (`a/#` matches `a`). `+` matches an empty level too
 * (MQTT-4.7.1-3), unless `plusMatchesEmpty` is false, which is how qlobber matches by default
 * (Aedes' persistence trie). Nothing is allocated: it runs for every filter of a bucket on every
 * publish.
 */
export function topicMatches(filter: string, topic: string, plusMatchesEmpty = true): boolean {
  const fEnd = filter.length
  const tEnd = topic.length
  let f = 0 // where the filter's current level begins
  let t = 0 // where the topic's does; past tEnd once its levels are used up
  for (;;) {
    let fLevelEnd = filter.indexOf('/', f)
    if (fLevelEnd < 0) fLevelEnd = fEnd
    const fLength = fLevelEnd - f
    if (fLength === 1 && filter.charCodeAt(f) === HASH) return true
    if (t > tEnd) return false // the filter has a level the topic has not
    let tLevelEnd = topic.indexOf('/', t)
    if (tLevelEnd < 0) tLevelEnd = tEnd
    if (fLength === 1 && filter.charCodeAt(f) === PLUS) {
      if (tLevelEnd === t && !plusMatchesEmpty) return false
    } else if (fLength !== tLevelEnd - t || !sameChars(filter, f, topic, t, fLength)) {
      return false
    }
    if (fLevelEnd === fEnd) return tLevelEnd === tEnd // the filter's last level: the topic's must be too
    f = fLevelEnd + 1
    t = tLevelEnd + 1
  }
}

function sameChars(a: string, i: number, b: string, j: number, length: number): boolean {
  for (let k = 0; k < length; k++) if (a.charCodeAt(i + k) !== b.charCodeAt(j + k)) return false
  return true
}

/** The first level of a topic or filter: the mountpoint's device id, for a device's. */
export function firstLevelOf(topic: string): string {
  const slash = topic.indexOf('/')
  return slash < 0 ? topic : topic.slice(0, slash)
}

/** Whether `#` appears in `filter` only as its last level, as MQTT allows (and qlobber need not). */
export function hashOnlyLast(filter: string): boolean {
  const hash = filter.indexOf('#')
  return hash < 0 || (hash === filter.length - 1 && (hash === 0 || filter.charCodeAt(hash - 1) === SLASH))
}

/**
 * Two filters matching one topic, in the order qlobber's depth-first walk finds them: at the
 * first level they differ, `#`, then a word or the end, then `+`. Equal filters compare equal,
 * so a stable sort keeps the order they were added in, as qlobber keeps a filter's values.
 */
export function trieOrder(a: string, b: string): number {
  if (a === b) return 0
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; ; i++) {
    if (x[i] !== y[i]) return levelRank(x[i]) - levelRank(y[i])
  }
}

const levelRank = (level: string | undefined): number => (level === '#' ? 0 : level === '+' ? 2 : 1)
