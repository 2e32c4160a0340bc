/**
 * Retained messages by topic, in a trie of topic levels, so that a SUBSCRIBE visits only the
 * topics its filter can match: an exact filter is one walk down, `a/+/c` follows only the
 * branches `a` and `c` name, and `{deviceId}/#` stays inside that device's subtree — a
 * device's filters always begin with its mountpoint, so its SUBSCRIBE never touches another
 * device's retained messages, however many there are.
 *
 * Wildcards follow MQTT 3.1.1 section 4.7: `#` matches its parent level too (`a/#` matches
 * `a`), `+` matches an empty level, and neither matches a first level that begins with `$`
 * (MQTT-4.7.2-1), so `#` does not deliver `$SYS/…`.
 */

interface TrieNode<T> {
  children: Map<string, TrieNode<T>>
  value: T | undefined
}

export class RetainedIndex<T> {
  private readonly root: TrieNode<T> = newNode()
  private count = 0

  get size(): number {
    return this.count
  }

  get(topic: string): T | undefined {
    let node: TrieNode<T> | undefined = this.root
    for (const level of topic.split('/')) {
      node = node.children.get(level)
      if (!node) return undefined
    }
    return node.value
  }

  set(topic: string, value: T): void {
    let node = this.root
    for (const level of topic.split('/')) {
      let child = node.children.get(level)
      if (!child) node.children.set(level, (child = newNode()))
      node = child
    }
    if (node.value === undefined) this.count++
    node.value = value
  }

  /** Removes the topic's value, and the branch it leaves empty; false when there was none. */
  delete(topic: string): boolean {
    const path: [TrieNode<T>, string][] = []
    let node = this.root
    for (const level of topic.split('/')) {
      const child = node.children.get(level)
      if (!child) return false
      path.push([node, level])
      node = child
    }
    if (node.value === undefined) return false
    node.value = undefined
    this.count--
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, level] = path[i]!
      const child = parent.children.get(level)!
      if (child.value !== undefined || child.children.size > 0) break
      parent.children.delete(level)
    }
    return true
  }

  /** The values of topics matching any of `filters`, each once. */
  match(filters: readonly string[]): T[] {
    const found = new Set<T>()
    for (const filter of filters) collect(this.root, filter.split('/'), 0, found)
    return [...found]
  }

  values(): T[] {
    const found = new Set<T>()
    everything(this.root, found)
    return [...found]
  }
}

function newNode<T>(): TrieNode<T> {
  return { children: new Map(), value: undefined }
}

function collect<T>(node: TrieNode<T>, levels: readonly string[], at: number, found: Set<T>): void {
  if (at === levels.length) {
    if (node.value !== undefined) found.add(node.value)
    return
  }
  const level = levels[at]!
  if (level === '#') {
    // the parent level itself (`a/#` matches `a`); the root is no topic
    if (at > 0 && node.value !== undefined) found.add(node.value)
    for (const [name, child] of node.children) if (at > 0 || !name.startsWith('$')) everything(child, found)
    return
  }
  if (level === '+') {
    for (const [name, child] of node.children) if (at > 0 || !name.startsWith('$')) collect(child, levels, at + 1, found)
    return
  }
  const child = node.children.get(level)
  if (child) collect(child, levels, at + 1, found)
}

function everything<T>(node: TrieNode<T>, found: Set<T>): void {
  if (node.value !== undefined) found.add(node.value)
  for (const child of node.children.values()) everything(child, found)
}
