/**
 * The broker's subscription index answers every publish as the qlobber trie it stands in for
 * (mqemitter's, `+` matching empty levels): the same values, duplicates included, in the same
 * order — checked against a real qlobber over long random runs of adds and removes, across the
 * move of a crowded first level into the trie and back.
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Qlobber } from 'qlobber'
import { FILTERS_PER_LEVEL, FirstLevelMatcher } from '../../src/embedded/first-level-matcher.js'
import { topicMatches } from '../../src/domain/topic-match.js'
import { seededRandom } from '../helpers/random.js'

/** A seeded sequence of numbers in [0, 1): a failing run is repeated by its seed. */
const random = (seed: number): (() => number) => {
  const below = seededRandom(seed)
  return () => below(1_000_000) / 1_000_000
}

const pick = <T>(next: () => number, items: readonly T[]): T => items[Math.floor(next() * items.length)]!

const WORDS = ['d1', 'd2', 'a', 'b', '', '$SYS', 'x']

/** A filter of 1–4 levels: words, `+`, and `#` (last, or — as MQTT forbids but qlobber allows — not). */
function randomFilter(next: () => number): string {
  const levels: string[] = []
  const depth = 1 + Math.floor(next() * 4)
  for (let i = 0; i < depth; i++) {
    const r = next()
    levels.push(r < 0.12 ? '+' : r < 0.2 && i === depth - 1 ? '#' : r < 0.22 ? '#' : pick(next, WORDS))
  }
  // a bucket that overflows: many filters under one device's first level
  if (next() < 0.3) return `d1/${levels.join('/')}`
  return levels.join('/')
}

function randomTopic(next: () => number): string {
  const depth = 1 + Math.floor(next() * 5)
  return Array.from({ length: depth }, () => pick(next, WORDS)).join('/')
}

const trie = () => new Qlobber<string>({ separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true })

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  test(`answers as qlobber does, in its order, through random adds and removes (seed ${seed})`, () => {
    const next = random(seed)
    const matcher = new FirstLevelMatcher<string>()
    const reference = trie()
    const held: [string, string][] = []
    const topics = Array.from({ length: 40 }, () => randomTopic(next))
    for (let step = 0; step < 600; step++) {
      const r = next()
      if (r < 0.6 || held.length === 0) {
        const filter = held.length > 0 && next() < 0.2 ? pick(next, held)[0] : randomFilter(next)
        const value = pick(next, ['v1', 'v2', 'v3', 'v4']) // shared values: duplicates across filters
        matcher.add(filter, value)
        reference.add(filter, value)
        held.push([filter, value])
      } else if (r < 0.95) {
        const i = Math.floor(next() * held.length)
        const [filter, value] = held[i]!
        matcher.remove(filter, value)
        reference.remove(filter, value)
        held.splice(held.lastIndexOf(held.find(([f, v]) => f === filter && v === value)!), 1)
      } else {
        const [filter] = pick(next, held)
        matcher.remove(filter)
        reference.remove(filter)
        for (let k = held.length - 1; k >= 0; k--) if (held[k]![0] === filter) held.splice(k, 1)
      }
      for (const topic of [...topics, ...held.slice(-3).map(([f]) => f.replace(/[+#]/g, 'a'))]) {
        assert.deepEqual(matcher.match(topic), [...reference.match(topic)], `step ${step}: ${topic}`)
      }
    }
  })
}

test('a first level with more filters than an array keeps moves into the trie, and back once emptied', () => {
  const matcher = new FirstLevelMatcher<number>()
  const reference = new Qlobber<number>({ separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true })
  const filters = Array.from({ length: FILTERS_PER_LEVEL + 4 }, (_, i) => (i % 3 === 0 ? `dev/+/t${i % 5}` : i % 3 === 1 ? 'dev/#' : `dev/s/t${i % 5}`))
  const crowded = (m: FirstLevelMatcher<number>) => (m as unknown as { crowded: Set<string> }).crowded.has('dev')
  filters.forEach((f, i) => {
    matcher.add(f, i)
    reference.add(f, i)
  })
  assert.ok(crowded(matcher), 'the level is in the trie')
  for (const topic of ['dev/s/t1', 'dev/s/t2', 'dev', 'dev/x/t0']) assert.deepEqual(matcher.match(topic), [...reference.match(topic)], topic)
  filters.forEach((f, i) => {
    matcher.remove(f, i)
    reference.remove(f, i)
  })
  assert.deepEqual(matcher.match('dev/s/t1'), [])
  assert.ok(!crowded(matcher), 'an emptied level leaves the trie')
  matcher.add('dev/s/t1', 1)
  assert.ok(!crowded(matcher), 'its next filter is in an array again')
  assert.deepEqual(matcher.match('dev/s/t1'), [1])
})

test('a match is a new array each time: a caller changing it changes nothing held', () => {
  const matcher = new FirstLevelMatcher<string>()
  matcher.add('#', 'everything') // qlobber answers with its own array when one filter matches
  matcher.add('d/t', 'device')
  const first = matcher.match('d/t')
  first.length = 0
  assert.deepEqual(matcher.match('d/t'), ['everything', 'device'])
  const onlyTrie = new FirstLevelMatcher<string>()
  onlyTrie.add('+/t', 'any')
  onlyTrie.match('d/t').push('added')
  assert.deepEqual(onlyTrie.match('d/t'), ['any'])
})

test('topicMatches agrees with qlobber, with and without + matching an empty level', () => {
  const next = random(42)
  for (const plusMatchesEmpty of [true, false]) {
    for (let i = 0; i < 3000; i++) {
      // # only as the last level, as MQTT allows
      const filter = randomFilter(next)
        .split('/')
        .map((level, k, levels) => (level === '#' && k < levels.length - 1 ? '+' : level))
        .join('/')
      const topic = next() < 0.5 ? randomTopic(next) : filter.replace(/\+/g, pick(next, ['a', ''])).replace(/\/?#$/, pick(next, ['', '/a', '/a/b']))
      const reference = new Qlobber<boolean>({ separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: plusMatchesEmpty })
      reference.add(filter, true)
      assert.equal(topicMatches(filter, topic, plusMatchesEmpty), reference.match(topic).length > 0, `${filter} against ${topic} (empty levels: ${plusMatchesEmpty})`)
    }
  }
})
