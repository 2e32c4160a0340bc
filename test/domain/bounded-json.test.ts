/**
 * Bounded JSON: depth counted on the text without recursion (brackets in strings do not count),
 * sizes in UTF-8 bytes, and the property rules refusing what is past a limit with PayloadError
 * instead of overflowing the stack in the walks that come after parsing.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { JsonLimitError, jsonDepth, nestsDeeperThan, parseBoundedJson } from '../../src/domain/bounded-json.js'
import { MAX_PROPERTY_BYTES, PayloadError, mergeAttributes, parseObject, rawDataOf } from '../../src/domain/device-properties.js'

/** `{"a":{"a":…1…}}`, `depth` objects deep: 10,000 of them are about 60 KiB. */
const deepObject = (depth: number): string => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)

describe('jsonDepth', () => {
  it('counts nesting of arrays and objects', () => {
    assert.equal(jsonDepth('1'), 0)
    assert.equal(jsonDepth('"text"'), 0)
    assert.equal(jsonDepth('{}'), 1)
    assert.equal(jsonDepth('[[], {"a": [1, {"b": 2}]}]'), 4)
    assert.equal(jsonDepth(deepObject(10_000)), 10_000)
  })

  it('does not count brackets inside strings, escaped quotes included', () => {
    assert.equal(jsonDepth('{"a": "[[[{{{"}'), 1)
    assert.equal(jsonDepth('["\\"[[[", "\\\\", []]'), 2)
    assert.equal(jsonDepth('{"k\\"{": "\\\\\\"[["}'), 1)
  })

  it('stops counting past the limit it is given', () => {
    assert.equal(jsonDepth('['.repeat(1_000_000), 32), 33)
  })
})

describe('nestsDeeperThan', () => {
  it('answers as jsonDepth does, whether the text has fewer openings than the limit or more', () => {
    const texts = [
      '1',
      '{}',
      deepObject(3),
      deepObject(4),
      '{"a": "[[[[[[{{{{{{"}', // openings past the limit, all in a string: not deep
      `[${'[],'.repeat(40)}[]]`, // many openings, depth 2
      `{"list":[${'{"v":1},'.repeat(40)}{"v":2}]}`,
      '["\\"[[[[[[[", []]',
      '['.repeat(10_000),
      '[{[{}]}]', // deep only counting both kinds together
      `[${' '.repeat(70_000)}[[[[]]]]]` // longer than what is counted first: scanned
    ]
    for (const text of texts) {
      for (const limit of [0, 1, 3, 4, 32]) assert.equal(nestsDeeperThan(text, limit), jsonDepth(text) > limit, `${text.slice(0, 40)} at ${limit}`)
    }
  })
})

describe('parseBoundedJson', () => {
  it('parses JSON within the limits', () => {
    assert.deepEqual(parseBoundedJson('{"a":[1,{"b":2}]}', { maxDepth: 3, maxBytes: 100 }), { a: [1, { b: 2 }] })
  })

  it('refuses text deeper than maxDepth without parsing it', () => {
    assert.throws(() => parseBoundedJson(deepObject(4), { maxDepth: 3 }), (e: Error) => e instanceof JsonLimitError && /3 levels/.test(e.message))
    assert.throws(() => parseBoundedJson(deepObject(10_000), { maxDepth: 32 }), JsonLimitError)
  })

  it('refuses text larger than maxBytes, counting UTF-8 bytes', () => {
    assert.throws(() => parseBoundedJson('"ééé"', { maxDepth: 1, maxBytes: 7 }), (e: Error) => e instanceof JsonLimitError && /8 bytes/.test(e.message))
    assert.equal(parseBoundedJson('"ééé"', { maxDepth: 1, maxBytes: 8 }), 'ééé')
  })

  it('leaves text that is not JSON to JSON.parse', () => {
    assert.throws(() => parseBoundedJson('{"a":', { maxDepth: 32 }), SyntaxError)
  })
})

describe('property payloads', () => {
  it('a payload 10,000 levels deep is a PayloadError, not a stack overflow', () => {
    assert.throws(() => parseObject(Buffer.from(deepObject(10_000)), 'an attributes update', 32), (e: Error) => e instanceof PayloadError && /32 levels/.test(e.message))
  })

  it('takes a payload exactly as deep as the limit, and merges it', () => {
    const patch = parseObject(Buffer.from(deepObject(32)), 'an attributes update', 32)
    const merged = mergeAttributes(undefined, patch)
    assert.equal(Object.keys(merged.value).length, 1)
    assert.equal(merged.json, JSON.stringify(merged.value), 'measured as the JSON it is stored as')
    assert.throws(() => parseObject(Buffer.from(deepObject(33)), 'an attributes update', 32), PayloadError)
  })

  it('refuses a payload larger than a property may be before parsing it', () => {
    const big = JSON.stringify({ text: 'x'.repeat(MAX_PROPERTY_BYTES) })
    assert.throws(() => parseObject(Buffer.from(big), 'telemetry', 32), (e: Error) => e instanceof PayloadError && /bytes/.test(e.message))
  })

  it('raw data nested too deep is kept as its text, not parsed', () => {
    const text = deepObject(10_000)
    const raw = rawDataOf(Buffer.from(text), 'd/v1/devices/me/raw', 1, 32).value
    assert.equal(raw.data, text)
    assert.deepEqual(rawDataOf(Buffer.from('{"a":[1]}'), 'd/v1/devices/me/raw', 1, 32).value.data, { a: [1] })
  })
})
