/**
 * The TopicBook's own index of persistent subscriptions (by first level, see topic-book.ts)
 * must answer the broker as the qlobber trie Aedes matches with would: the same subscriptions,
 * in the same order, for every topic — and keep its counts and per-session views through adds,
 * replacements and removals, whatever form (one, a few, many) a session's topics are held in.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import QlobberSub from 'qlobber/aedes/qlobber-sub.js'
import type { QoS, TopicSubscription } from '../../src/domain/session.js'
import { TopicBook } from '../../src/registry/topic-book.js'

const FILTERS = ['#', '+', '+/b', '+/+/c', 'a', 'a/#', 'a/+', 'a/b', 'a/b/#', 'a/+/c', 'a/b/c', 'a//c', 'a/+/+', '$SYS/#', '$SYS/x', 'd1/v1/#', 'd1/v1/devices/me/attributes', 'd1/+/devices/#']
const TOPICS = ['a', 'a/', 'a/b', 'a/b/c', 'a//c', 'a/x/c', 'b', 'x/b', 'x/y/c', '$SYS/x', '$SYS/y/z', 'd1/v1/devices/me/attributes', 'd1/v2/devices/me', 'd2/v1', '']

/** A reference: what Aedes' trie holds after the same adds and removes. */
function reference(): { add(clientId: string, s: TopicSubscription): void; remove(clientId: string, topic: string): void; match(topic: string): unknown[] } {
  const trie = new QlobberSub({ wildcard_one: '+', wildcard_some: '#', separator: '/' })
  return {
    add: (clientId, { topic, qos, rh, rap, nl }) => trie.add(topic, { clientId, topic, qos, rh, rap, nl }),
    remove: (clientId, topic) => trie.remove(topic, { clientId, topic }),
    match: (topic) => trie.match(topic)
  }
}

test('matches what Aedes’ trie matches, in its order, through adds and removes', () => {
  const book = new TopicBook()
  const trie = reference()
  let seed = 7
  const random = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n
  const held = new Map<string, Set<string>>()
  for (let step = 0; step < 3000; step++) {
    const clientId = `c${random(6)}`
    const topic = FILTERS[random(FILTERS.length)]!
    const topics = held.get(clientId) ?? new Set<string>()
    held.set(clientId, topics)
    if (topics.has(topic) && random(2) === 0) {
      book.applyChange({ op: 'topic.delete', sessionId: clientId, topic })
      trie.remove(clientId, topic)
      topics.delete(topic)
    } else if (!topics.has(topic)) {
      // QoS 1 and 2 are queued for offline; QoS 0 is not, and so is in neither
      const qos = (1 + random(2)) as QoS
      book.applyChange({ op: 'topic.put', sessionId: clientId, subscription: { topic, qos, rh: 0, rap: true, nl: false }, persistent: true })
      trie.add(clientId, { topic, qos, rh: 0, rap: true, nl: false })
      topics.add(topic)
    }
    for (const published of TOPICS) assert.deepEqual(book.matchPersistent(published), trie.match(published), `step ${step}: ${published}`)
  }
})

test('counts, views and removal hold across one, a few and many topics of a session', () => {
  const book = new TopicBook()
  const many = Array.from({ length: 40 }, (_, i) => `dev/t${i}`)
  for (const topic of many) book.applyChange({ op: 'topic.put', sessionId: 'dev', subscription: { topic, qos: 1 }, persistent: true })
  book.applyChange({ op: 'topic.put', sessionId: 'clean', subscription: { topic: 'dev/t1', qos: 1 }, persistent: false })
  book.applyChange({ op: 'topic.put', sessionId: 'zero', subscription: { topic: 'dev/t2', qos: 0 }, persistent: true })
  assert.deepEqual(book.countPersistent(), { subsCount: 40, clientsCount: 2 })
  assert.equal(book.countOf('dev'), 40)
  assert.deepEqual(book.topicsOf('dev').map((s) => s.topic), many)
  assert.equal(book.entriesOf('dev').get('dev/t7')?.persistent, true)
  assert.deepEqual(book.matchPersistent('dev/t1').map((m) => m.clientId), ['dev'])
  assert.deepEqual([...book.sessionsWithPersistentTopic('dev/t2')], ['dev', 'zero'])

  // replaced: a persistent topic taken to QoS 0 leaves the broker's index, not the session
  book.applyChange({ op: 'topic.put', sessionId: 'dev', subscription: { topic: 'dev/t1', qos: 0 }, persistent: true })
  assert.deepEqual(book.matchPersistent('dev/t1'), [])
  assert.deepEqual(book.countPersistent(), { subsCount: 39, clientsCount: 2 })
  assert.equal(book.topicsOf('dev')[1]?.qos, 0, 'kept in its place')

  for (const topic of many.slice(0, 39)) book.applyChange({ op: 'topic.delete', sessionId: 'dev', topic })
  assert.deepEqual(book.topicsOf('dev').map((s) => s.topic), ['dev/t39'])
  assert.deepEqual(book.countPersistent(), { subsCount: 1, clientsCount: 2 })
  book.applyChange({ op: 'topic.clear', sessionId: 'dev' })
  book.applyChange({ op: 'topic.clear', sessionId: 'zero' })
  assert.equal(book.countOf('dev'), 0)
  assert.equal(book.entriesOf('dev').size, 0)
  assert.deepEqual(book.countPersistent(), { subsCount: 0, clientsCount: 0 })
  assert.deepEqual(book.matchPersistent('dev/t39'), [])
  assert.equal(book.holds('clean', 'dev/t1'), true)
})

test('knows whether any session holds a filter under a $ first level, clean or persistent, any QoS', () => {
  const book = new TopicBook()
  const put = (sessionId: string, topic: string, persistent: boolean, qos: QoS = 0) => book.applyChange({ op: 'topic.put', sessionId, subscription: { topic, qos }, persistent })
  assert.equal(book.holdsFirstLevel('$iothub'), false)
  put('watcher', '#', false, 1) // a wildcard first level cannot match a $ topic
  put('dev', 'dev/$iothub/x', true, 1)
  assert.equal(book.holdsFirstLevel('$iothub'), false)
  put('watcher', '$iothub/events/#', false)
  put('other', '$iothub/events/session.connected/+', true, 1)
  put('other', '$iothub/events/session.connected/+', true, 2) // the same filter again: still one
  put('sys', '$SYS/#', false)
  assert.equal(book.holdsFirstLevel('$iothub'), true)
  book.applyChange({ op: 'topic.delete', sessionId: 'watcher', topic: '$iothub/events/#' })
  assert.equal(book.holdsFirstLevel('$iothub'), true, 'another session still holds one')
  book.applyChange({ op: 'topic.clear', sessionId: 'other' })
  assert.equal(book.holdsFirstLevel('$iothub'), false)
  assert.equal(book.holdsFirstLevel('$SYS'), true)
})
