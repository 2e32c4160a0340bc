/** The MQTT listener's gate: connections at once and per second, and the open-file limit. */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { describe, it } from 'node:test'
import { ConnectionGate, fitConnectionLimit, openFileLimit, RESERVED_DESCRIPTORS } from '../../src/embedded/connection-gate.js'

describe('ConnectionGate', () => {
  it('admits a burst of one second’s worth, then refills at the rate', () => {
    let now = 0
    const gate = new ConnectionGate(1000, 5, Number.POSITIVE_INFINITY, () => now)
    const burst = Array.from({ length: 7 }, () => gate.admit())
    assert.deepEqual(burst, [null, null, null, null, null, 'connect_rate_limited', 'connect_rate_limited'])
    now += 200 // one token
    assert.equal(gate.admit(), null)
    assert.equal(gate.admit(), 'connect_rate_limited')
    now += 10_000 // never more than one second's worth
    assert.equal(Array.from({ length: 6 }, () => gate.admit()).filter((r) => r === null).length, 5)
  })

  it('holds at most maxConnections at once, and lets one in when one leaves', () => {
    const gate = new ConnectionGate(2, 1000, Number.POSITIVE_INFINITY, () => 0)
    assert.equal(gate.admit(), null)
    assert.equal(gate.admit(), null)
    assert.equal(gate.admit(), 'too_many_connections')
    gate.closed()
    assert.equal(gate.admit(), null)
    assert.equal(gate.connections, 2)
  })

  it('holds per address at most maxPendingPerAddress connections that have not sent CONNECT', () => {
    const gate = new ConnectionGate(1000, 1000, 2, () => 0)
    assert.equal(gate.admit('10.0.0.1'), null)
    assert.equal(gate.admit('10.0.0.1'), null)
    assert.equal(gate.admit('10.0.0.1'), 'too_many_pending_connections')
    assert.equal(gate.admit('10.0.0.2'), null, 'another address is not held back')
    gate.identified('10.0.0.1') // its CONNECT arrived
    assert.equal(gate.admit('10.0.0.1'), null)
  })

  it('fits the connection limit under the open-file limit', () => {
    assert.equal(fitConnectionLimit(100_000, 1024), 1024 - RESERVED_DESCRIPTORS)
    assert.equal(fitConnectionLimit(500, 1_048_576), 500)
    assert.equal(fitConnectionLimit(500, undefined), 500)
    // what the shell says of the same limit (a child inherits it)
    if (process.platform === 'linux') {
      const shell = execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim()
      assert.equal(openFileLimit(), shell === 'unlimited' ? undefined : Number(shell))
    }
  })
})
