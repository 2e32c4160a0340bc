/**
 * The retained-message trie: what each kind of filter finds, what it leaves alone (other
 * devices' subtrees, `$` topics under first-level wildcards), and removal.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { RetainedIndex } from '../../src/embedded/retained-index.js'

function indexOf(topics: string[]): RetainedIndex<string> {
  const index = new RetainedIndex<string>()
  for (const topic of topics) index.set(topic, topic)
  return index
}

const sorted = (values: string[]) => [...values].sort()

/** The trie's root, which only these tests look at. */
const rootOf = (index: RetainedIndex<unknown>) => (index as unknown as { root: { children: Map<string, object> } }).root

const TOPICS = ['d1/a', 'd1/a/b', 'd1/a/c', 'd1/x/c', 'd1//c', 'd2/a/c', 'd2/a', '$SYS/broker/uptime', '$iothub/x', '/lead', 'top']

test('an exact filter finds its topic only', () => {
  const index = indexOf(TOPICS)
  assert.deepEqual(index.match(['d1/a/c']), ['d1/a/c'])
  assert.deepEqual(index.match(['d1/a/zz']), [])
  assert.deepEqual(index.match(['d1']), [], 'a prefix is no topic')
  assert.deepEqual(index.match(['/lead']), ['/lead'])
  assert.deepEqual(index.match(['$SYS/broker/uptime']), ['$SYS/broker/uptime'], 'a $ topic named exactly is found')
})

test('+ matches one level, an empty one too', () => {
  const index = indexOf(TOPICS)
  assert.deepEqual(sorted(index.match(['d1/+/c'])), ['d1//c', 'd1/a/c', 'd1/x/c'])
  assert.deepEqual(sorted(index.match(['+/a'])), ['d1/a', 'd2/a'])
  assert.deepEqual(sorted(index.match(['+/lead'])), ['/lead'])
  assert.deepEqual(sorted(index.match(['+'])), ['top'])
})

test('# matches the parent level and everything below it, within that subtree only', () => {
  const index = indexOf(TOPICS)
  assert.deepEqual(sorted(index.match(['d1/#'])), ['d1//c', 'd1/a', 'd1/a/b', 'd1/a/c', 'd1/x/c'])
  assert.deepEqual(sorted(index.match(['d1/a/#'])), ['d1/a', 'd1/a/b', 'd1/a/c'])
  assert.deepEqual(sorted(index.match(['d2/+/#'])), ['d2/a', 'd2/a/c'])
})

test('wildcards at the first level do not match topics beginning with $ (MQTT-4.7.2-1)', () => {
  const index = indexOf(TOPICS)
  const all = index.match(['#'])
  assert.deepEqual(sorted(all), sorted(TOPICS.filter((t) => !t.startsWith('$'))))
  assert.ok(!index.match(['+/broker/uptime']).includes('$SYS/broker/uptime'))
  assert.deepEqual(index.match(['+/x']), [])
  assert.deepEqual(sorted(index.match(['$SYS/#'])), ['$SYS/broker/uptime'])
  assert.deepEqual(sorted(index.match(['$iothub/+'])), ['$iothub/x'])
})

test('several filters find each topic once', () => {
  const index = indexOf(TOPICS)
  assert.deepEqual(sorted(index.match(['d1/a/c', 'd1/+/c', 'd1/#'])), ['d1//c', 'd1/a', 'd1/a/b', 'd1/a/c', 'd1/x/c'])
})

test('set replaces, delete removes and prunes, size follows', () => {
  const index = indexOf(TOPICS)
  assert.equal(index.size, TOPICS.length)
  index.set('d1/a', 'replaced')
  assert.equal(index.size, TOPICS.length)
  assert.equal(index.get('d1/a'), 'replaced')
  assert.equal(index.delete('d1/a/b'), true)
  assert.equal(index.delete('d1/a/b'), false, 'gone already')
  assert.equal(index.delete('d1'), false, 'a branch is no topic')
  assert.equal(index.get('d1/a/b'), undefined)
  assert.equal(index.size, TOPICS.length - 1)
  assert.deepEqual(sorted(index.match(['d1/a/#'])), ['d1/a/c', 'replaced'])
  // removing the last topic of a branch leaves nothing behind for # to visit
  for (const t of ['d2/a/c', 'd2/a']) index.delete(t)
  assert.deepEqual(index.match(['d2/#']), [])
  assert.equal(rootOf(index).children.has('d2'), false, 'the emptied branch is pruned')
  assert.equal(index.values().length, TOPICS.length - 3)
})

test("a device's filter never visits another device's subtree", () => {
  // a getter on the other device's entries would throw if a lookup reached them
  const index = new RetainedIndex<{ topic: string }>()
  for (let i = 0; i < 1000; i++) index.set(`noisy/t/${i}`, { topic: `noisy/t/${i}` })
  const children = rootOf(index).children
  const noisy = children.get('noisy')!
  children.set(
    'noisy',
    new Proxy(noisy, {
      get() {
        throw new Error("visited another device's subtree")
      }
    })
  )
  index.set('quiet/a/b', { topic: 'quiet/a/b' })
  assert.deepEqual(
    index.match(['quiet/#', 'quiet/+/b', 'quiet/a/b']).map((v) => v.topic),
    ['quiet/a/b']
  )
})
