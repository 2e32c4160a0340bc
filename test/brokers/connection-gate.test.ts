/** The MQTT listener's gate: connections at once and per second, and the open-file limit. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConnectionGate, fitConnectionLimit, openFileLimit, RESERVED_DESCRIPTORS } from '../../src/brokers/embedded/connection-gate.js'

describe('ConnectionGate', () => {
  it('admits a burst of one second’s worth, then refills at the rate', () => {
    let now = 0
    const gate = new ConnectionGate(1000, 5, () => now)
    const burst = Array.from({ length: 7 }, () => gate.admit())
    assert.deepEqual(burst, [null, null, null, null, null, 'connect_rate_limited', 'connect_rate_limited'])
    now += 200 // one token
    assert.equal(gate.admit(), null)
    assert.equal(gate.admit(), 'connect_rate_limited')
    now += 10_000 // never more than one second's worth
    assert.equal(Array.from({ length: 6 }, () => gate.admit()).filter((r) => r === null).length, 5)
  })

  it('holds at most maxConnections at once, and lets one in when one leaves', () => {
    const gate = new ConnectionGate(2, 1000, () => 0)
    assert.equal(gate.admit(), null)
    assert.equal(gate.admit(), null)
    assert.equal(gate.admit(), 'too_many_connections')
    gate.closed()
    assert.equal(gate.admit(), null)
    assert.equal(gate.connections, 2)
  })

  it('fits the connection limit under the open-file limit', () => {
    assert.equal(fitConnectionLimit(100_000, 1024), 1024 - RESERVED_DESCRIPTORS)
    assert.equal(fitConnectionLimit(500, 1_048_576), 500)
    assert.equal(fitConnectionLimit(500, undefined), 500)
    const limit = openFileLimit()
    if (process.platform === 'linux') assert.ok(limit === undefined || limit > 0)
  })
})
