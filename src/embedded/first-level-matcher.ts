/**
 * The broker's index of subscriptions (what Aedes' router, mqemitter, asks to route each
 * publish), shaped for mounted namespaces.
 *
 * Aedes keeps every filter in one qlobber trie: a Map per topic level. Bare clients share the
 * levels of the topics they have in common, but a device's filters all begin with its own
 * mountpoint `{deviceId}/`, so each device holds a chain of Maps of its own — some 900 bytes
 * for two filters, more than the rest of what the hub keeps for the session. Here a filter whose
 * first level is a word sits in a small array under that word instead (a few dozen bytes), and a
 * publish is tested against the few filters of its own first level. Filters that begin with a
 * wildcard (a superuser's `#`, `+/…`), and the first levels that hold many filters, stay in
 * qlobber tries, where matching costs the topic's depth rather than the number of filters.
 *
 * It answers as qlobber with `match_empty_levels` (mqemitter's) answers: the same values, with
 * duplicates, in the same order — the order decides which of a client's overlapping
 * subscriptions delivers first.
 */
import { Qlobber } from 'qlobber'
import { firstLevelOf, hashOnlyLast, topicMatches, trieOrder } from '../domain/topic-match.js'
import { fewDelete, fewPut, fewSize, fewValues, type Few } from '../registry/few.js'

/** One filter with one of its values; a new object for each add, so duplicates stay apart. */
interface Filtered<V> {
  readonly filter: string
  readonly value: V
}

/** The most filters one first level keeps in its array; one more moves them into the trie. */
export const FILTERS_PER_LEVEL = 16

const itself = <T>(x: T): T => x

export class FirstLevelMatcher<V> {
  /** Filters under a literal first level that has few of them, in the order they were added. */
  private readonly byFirstLevel = new Map<string, Few<Filtered<V>, Filtered<V>>>()
  /** Filters whose first level is `#`: qlobber's walk finds them before any other. */
  private readonly hashFirst = newTrie<V>()
  /** Filters whose first level is `+`, and those of the crowded first levels. */
  private readonly trie = newTrie<V>()
  /** First levels whose filters are in `trie`: too many for an array, or one qlobber alone orders. */
  private readonly crowded = new Set<string>()

  add(filter: string, value: V): void {
    const first = firstLevelOf(filter)
    if (first === '#') {
      this.hashFirst.add(filter, value)
      return
    }
    if (first !== '+' && !this.crowded.has(first)) {
      const held = this.byFirstLevel.get(first)
      if (fewSize(held) < FILTERS_PER_LEVEL && hashOnlyLast(filter)) {
        this.byFirstLevel.set(first, fewPut(held, { filter, value }, itself))
        return
      }
      this.crowd(first)
    }
    this.trie.add(filter, value)
  }

  /** Takes one `value` of `filter` away (the last added, as qlobber does), or all of them without `value`. */
  remove(filter: string, value?: V): void {
    const first = firstLevelOf(filter)
    if (first === '#') {
      this.hashFirst.remove(filter, value)
      return
    }
    if (first === '+' || this.crowded.has(first)) {
      this.trie.remove(filter, value)
      // an emptied level leaves qlobber's trie: its next filters go to an array again
      if (first !== '+' && !this.trie.get_trie().has(first)) this.crowded.delete(first)
      return
    }
    let held = this.byFirstLevel.get(first)
    const taken = [...fewValues(held)].filter((f) => f.filter === filter && (value === undefined || f.value === value))
    for (const f of value === undefined ? taken : taken.slice(-1)) held = fewDelete(held, f, itself)
    if (held === undefined) this.byFirstLevel.delete(first)
    else this.byFirstLevel.set(first, held)
  }

  /** The values of every filter `topic` matches, in qlobber's order. A new array: the caller may keep it. */
  match(topic: string): V[] {
    const matched: V[] = []
    if (this.hashFirst.get_trie().size > 0) for (const v of this.hashFirst.match(topic)) matched.push(v)
    const held = this.byFirstLevel.get(firstLevelOf(topic))
    if (held !== undefined) {
      let found: Filtered<V>[] | undefined
      for (const f of fewValues(held)) if (topicMatches(f.filter, topic)) (found ??= []).push(f)
      if (found !== undefined) {
        if (found.length > 1) found.sort((a, b) => trieOrder(a.filter, b.filter))
        for (const f of found) matched.push(f.value)
      }
    }
    if (this.trie.get_trie().size > 0) for (const v of this.trie.match(topic)) matched.push(v)
    return matched
  }

  /** Moves a first level's filters into the trie, keeping the order they were added in. */
  private crowd(first: string): void {
    this.crowded.add(first)
    const held = this.byFirstLevel.get(first)
    if (held === undefined) return
    this.byFirstLevel.delete(first)
    for (const f of fewValues(held)) this.trie.add(f.filter, f.value)
  }
}

/** A trie configured as mqemitter configures Aedes' (`+` matches an empty level: MQTT-4.7.1-3). */
function newTrie<V>(): Qlobber<V> {
  return new Qlobber({ separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true })
}
