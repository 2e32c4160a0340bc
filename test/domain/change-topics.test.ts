/**
 * Which change topics a device's subscription filter receives: the answer every SUBSCRIBE asks
 * for, taken from the filter's first level when that rules every change topic out.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { changePropertiesOf } from '../../src/domain/change-topics.js'

describe('changePropertiesOf', () => {
  it('names the property of an exact change topic', () => {
    assert.deepEqual(changePropertiesOf('v1/devices/me/attributes'), ['attributes'])
    assert.deepEqual(changePropertiesOf('v1/devices/me/commands'), ['commands'])
  })

  it('follows wildcards in any level, the first one included', () => {
    const all = ['attributes', 'telemetry', 'commands', 'raw']
    assert.deepEqual(changePropertiesOf('#'), all)
    assert.deepEqual(changePropertiesOf('+/#'), all)
    assert.deepEqual(changePropertiesOf('v1/#'), all)
    assert.deepEqual(changePropertiesOf('+/devices/me/+'), all)
    assert.deepEqual(changePropertiesOf('+/devices/me/raw'), ['raw'])
    assert.deepEqual(changePropertiesOf('v1/devices/+/telemetry'), ['telemetry'])
  })

  it('finds none for filters that are no change topic', () => {
    for (const filter of ['bench/c1/t0', 'v1', 'v1/devices/me', 'v2/devices/me/attributes', 'v1x/devices/me/raw', 'v1/devices/me/command/response', 'x/#', '']) {
      assert.deepEqual(changePropertiesOf(filter), [], filter)
    }
  })
})
