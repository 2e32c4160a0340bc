// qlobber ships no types; this declares the part of its Aedes-flavoured trie that we use.
declare module 'qlobber/aedes/qlobber-sub.js' {
  interface QlobberSubValue {
    clientId: string
    topic: string
    qos: number
    rh?: number
    rap?: boolean
    nl?: boolean
  }
  class QlobberSub {
    constructor(options: { wildcard_one: string; wildcard_some: string; separator: string })
    subscriptionsCount: number
    add(topic: string, value: QlobberSubValue): this
    remove(topic: string, value: { clientId: string; topic: string }): this
    match(topic: string): QlobberSubValue[]
    clear(): this
  }
  export default QlobberSub
}

declare module 'qlobber' {
  /** A trie of topic patterns, each with the values added under it (duplicates kept). */
  export class Qlobber<V = unknown> {
    constructor(options: { wildcard_one: string; wildcard_some: string; separator: string; match_empty_levels?: boolean })
    add(pattern: string, value: V): this
    /** Takes the last `value` added under `pattern` away, or every value without one. */
    remove(pattern: string, value?: V): this
    /** The values of every pattern the topic matches; may be the trie's own array: do not change it. */
    match(topic: string): readonly V[]
    /** The trie itself: a Map per level, by word. */
    get_trie(): Map<string, unknown>
  }
  /** A trie of topic patterns that only answers whether a topic matches any of them. */
  export class QlobberTrue {
    constructor(options: { wildcard_one: string; wildcard_some: string; separator: string })
    add(pattern: string): this
    test(topic: string): boolean
  }
}
