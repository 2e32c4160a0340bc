/** The client-id rule, one case per line of it (src/admission/client-id.ts). */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { claimClientId } from '../../src/admission/client-id.js'
import { SessionAdmission } from '../../src/admission/session-admission.js'
import { DeviceSessionCounts } from '../../src/registry/device-sessions.js'

const devices = new Set(['alice', 'bob'])
const isDevice = (id: string) => devices.has(id)

describe('claimClientId', () => {
  it('leaves a free client id to whoever asks', () => {
    assert.deepEqual(claimClientId({ clientId: 'thermostat', deviceId: 'alice', holderDeviceId: undefined, isDevice }), { kind: 'free' })
  })
  it("refuses another device's id as a client id", () => {
    const verdict = claimClientId({ clientId: 'bob', deviceId: 'alice', holderDeviceId: undefined, isDevice })
    assert.equal(verdict.kind === 'refused' && verdict.reason, 'client_id_reserved')
  })
  it("lets a superuser use a device's id", () => {
    assert.deepEqual(claimClientId({ clientId: 'bob', deviceId: undefined, holderDeviceId: undefined, isDevice }), { kind: 'free' })
  })
  it("refuses a client id held by another device's session", () => {
    const verdict = claimClientId({ clientId: 'thermostat', deviceId: 'alice', holderDeviceId: 'bob', isDevice })
    assert.equal(verdict.kind === 'refused' && verdict.reason, 'not_authorized')
  })
  it('refuses a superuser a client id a device holds, and a device one a superuser holds', () => {
    assert.equal(claimClientId({ clientId: 'thermostat', deviceId: undefined, holderDeviceId: 'bob', isDevice }).kind, 'refused')
    assert.equal(claimClientId({ clientId: 'console', deviceId: 'alice', holderDeviceId: '', isDevice }).kind, 'refused')
  })
  it('lets a device take its own id back from any holder', () => {
    assert.deepEqual(claimClientId({ clientId: 'alice', deviceId: 'alice', holderDeviceId: '', isDevice }), { kind: 'reclaim' })
    assert.deepEqual(claimClientId({ clientId: 'alice', deviceId: 'alice', holderDeviceId: 'bob', isDevice }), { kind: 'reclaim' })
  })
  it('lets the holder resume its own session', () => {
    assert.deepEqual(claimClientId({ clientId: 'thermostat', deviceId: 'alice', holderDeviceId: 'alice', isDevice }), { kind: 'free' })
  })
})

describe('SessionAdmission', () => {
  const session = (id: string, deviceId: string) => ({ id, deviceId }) as never

  it('counts held and reserved sessions against the per-device limit; a resume opens none', () => {
    const counts = new DeviceSessionCounts()
    const holders = new Map<string, string>([['a-1', 'alice']])
    counts.load([session('a-1', 'alice')])
    const admission = new SessionAdmission({ holderOf: (id) => holders.get(id), isDevice }, counts, { maxSessionsPerDevice: 2 })
    const second = admission.admit('a-2', 'alice')
    assert.equal(second.ok, true)
    const third = admission.admit('a-3', 'alice') // a-2 is reserved, not yet recorded
    assert.equal(!third.ok && third.reason, 'too_many_sessions')
    assert.equal(admission.admit('a-1', 'alice').ok, true, 'resuming its own session')
    if (second.ok) second.release()
    assert.equal(admission.admit('a-3', 'alice').ok, true)
    assert.equal(admission.admit('b-1', 'bob').ok, true, 'another device is unaffected')
  })

  it('follows the registry: a session ended frees its place', () => {
    const counts = new DeviceSessionCounts()
    counts.observer(undefined, session('a-1', 'alice'))
    counts.observer(undefined, session('a-2', 'alice'))
    assert.equal(counts.of('alice'), 2)
    counts.observer(session('a-1', 'alice'), null)
    assert.equal(counts.of('alice'), 1)
    counts.observer(session('a-2', 'alice'), session('a-2', 'bob'))
    assert.deepEqual([counts.of('alice'), counts.of('bob')], [0, 1])
  })
})
