/** The one admission every transport asks (src/admission/admission-policy.ts): a test per rule. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { AdmissionPolicy, type AdmitOptions, type Login } from '../../src/admission/admission-policy.js'
import { LoginGuard } from '../../src/admission/login-guard.js'
import { LoginThrottle } from '../../src/admission/login-throttle.js'
import { SessionAdmission } from '../../src/admission/session-admission.js'
import { loadConfig, type HubConfig } from '../../src/config.js'
import { DeviceSessionCounts } from '../../src/registry/device-sessions.js'

const TOKENS = new Map([
  ['dev-1', 'token-1'],
  ['dev-2', 'token-2']
])
const MQTT: AdmitOptions = { canWait: true, canReclaim: true }
const EMQX: AdmitOptions = { canWait: false, canReclaim: false }

interface World {
  policy: AdmissionPolicy
  /** Session holders by client id: the device id ('' for a superuser). */
  holders: Map<string, string>
  counts: DeviceSessionCounts
  throttle: LoginThrottle
  refusedDefaults: (string | null | undefined)[]
  checked: string[]
}

function world(overrides: Partial<HubConfig> = {}): World {
  const config = loadConfig({}, [], { auth: 'token', apiUser: 'operator', apiPassword: 'a-long-operator-secret', maxClientIdLength: 32, maxSessionsPerDevice: 2, ...overrides })
  const holders = new Map<string, string>()
  const counts = new DeviceSessionCounts()
  const throttle = new LoginThrottle({ failuresAllowed: 1, backoffMaxMs: 60_000, maxKeys: 100 })
  const refusedDefaults: (string | null | undefined)[] = []
  const checked: string[] = []
  const sessions = new SessionAdmission({ holderOf: (id) => holders.get(id), isDevice: (id) => TOKENS.has(id) }, counts, config)
  const credentials = {
    authenticate(deviceId: string, password: Buffer | string | undefined) {
      checked.push(deviceId)
      return TOKENS.get(deviceId) === password?.toString()
    }
  }
  const policy = new AdmissionPolicy(config, credentials, new LoginGuard(throttle), sessions, (peer) => refusedDefaults.push(peer))
  return { policy, holders, counts, throttle, refusedDefaults, checked }
}

/** The guard's hold timers are unref'd (a hub has sockets keeping it alive): this test holds the loop open itself. */
async function keptAlive<T>(run: () => Promise<T>): Promise<T> {
  const alive = setInterval(() => undefined, 60_000)
  try {
    return await run()
  } finally {
    clearInterval(alive)
  }
}

const mqtt = (login: Partial<Login>): Login => ({ protocol: 'mqtt', clientId: 'c1', username: 'dev-1', password: 'token-1', peer: '10.0.0.1', ...login })
const coap = (login: Partial<Login>): Login => ({ protocol: 'coap', clientId: 'dev-1', username: undefined, password: 'token-1', peer: '10.0.0.1', ...login })

describe('AdmissionPolicy', () => {
  it('admits a device with its token, in its own namespace, and holds its place until released', async () => {
    const w = world({ maxSessionsPerDevice: 1 })
    const admitted = await w.policy.admit(mqtt({}), MQTT)
    assert.deepEqual({ ...admitted, release: undefined }, { ok: true, superuser: false, deviceId: 'dev-1', mountpoint: 'dev-1/', reclaim: false, release: undefined })
    const second = await w.policy.admit(mqtt({ clientId: 'c2' }), MQTT)
    assert.equal(second.ok, false, 'the first admission still holds the one place')
    if (admitted.ok) admitted.release()
    assert.equal((await w.policy.admit(mqtt({ clientId: 'c2' }), MQTT)).ok, true, 'released, the place is free')
  })

  it('rule 1: refuses a client id longer than the limit, and an empty one over CoAP', async () => {
    const w = world()
    assert.deepEqual(await w.policy.admit(mqtt({ clientId: 'x'.repeat(33) }), MQTT), { ok: false, reason: 'bad_client_id', message: 'client id longer than 32 characters' })
    assert.equal(((await w.policy.admit(coap({ clientId: '' }), MQTT)) as { reason: string }).reason, 'bad_client_id')
    assert.equal((await w.policy.admit(mqtt({ clientId: '' }), MQTT)).ok, true, "an empty MQTT client id is the broker's to fill in")
    assert.deepEqual(w.checked, ['dev-1'], 'only the admitted login had its token checked')
  })

  it('rule 2: the API credentials make an MQTT client a superuser, with no namespace; never a CoAP one', async () => {
    const w = world()
    const su = await w.policy.admit(mqtt({ username: 'operator', password: 'a-long-operator-secret', peer: '203.0.113.9' }), MQTT)
    assert.deepEqual({ ...su, release: undefined }, { ok: true, superuser: true, deviceId: '', mountpoint: '', reclaim: false, release: undefined })
    const overCoap = await w.policy.admit(coap({ clientId: 'operator', username: 'operator', password: 'a-long-operator-secret' }), MQTT)
    assert.equal(overCoap.ok, false, 'CoAP names the device by its client id, and operator is no device')
  })

  it('rule 2: the default API credentials count only from loopback, and a refusal is told', async () => {
    const w = world({ apiUser: 'admin', apiPassword: 'public' })
    const remote = await w.policy.admit(mqtt({ username: 'admin', password: 'public', peer: '203.0.113.9' }), MQTT)
    assert.deepEqual(remote, { ok: false, reason: 'not_authorized', message: 'the default API credentials are refused from a remote peer' })
    assert.deepEqual(w.refusedDefaults, ['203.0.113.9'])
    assert.equal((await w.policy.admit(mqtt({ username: 'admin', password: 'public', peer: '127.0.0.1' }), MQTT)).ok, true)
  })

  it('rule 2: the device is named by the username (MQTT), the client id without one (no auth), the client id (CoAP)', async () => {
    const open = world({ auth: 'none' })
    assert.equal(((await open.policy.admit(mqtt({ username: 'dev-2', password: undefined }), MQTT)) as { deviceId: string }).deviceId, 'dev-2')
    assert.equal(((await open.policy.admit(mqtt({ clientId: 'board-7', username: undefined, password: undefined }), MQTT)) as { deviceId: string }).deviceId, 'board-7')
    assert.deepEqual(await open.policy.admit(mqtt({ username: 'a/b' }), MQTT), {
      ok: false,
      reason: 'bad_username',
      message: 'username cannot name a device namespace (letters, digits and . _ : @ - only)'
    })
    assert.equal(((await open.policy.admit(mqtt({ clientId: 'a+b', username: undefined }), MQTT)) as { reason: string }).reason, 'bad_client_id')
    const tokens = world()
    assert.equal(((await tokens.policy.admit(coap({}), MQTT)) as { mountpoint: string }).mountpoint, 'dev-1/')
    assert.equal(((await tokens.policy.admit(coap({ clientId: 'a b' }), MQTT)) as { reason: string }).reason, 'bad_client_id')
    assert.equal(((await tokens.policy.admit(mqtt({ username: undefined }), MQTT)) as { reason: string }).reason, 'not_authorized', 'with tokens, no username is no device')
    assert.deepEqual(open.checked, [], 'without authentication no token is looked at')
  })

  it('rule 3: a wrong token is refused and counted; the guessing address is then refused unseen', async () => {
    const w = world()
    assert.deepEqual(await w.policy.admit(mqtt({ password: 'guess' }), MQTT), { ok: false, reason: 'not_authorized', message: 'not authorized: the password must be the device token' })
    await w.policy.admit(mqtt({ password: 'guess-2' }), MQTT)
    const unseen = await w.policy.admit(mqtt({ password: 'token-1' }), MQTT)
    assert.equal((unseen as { reason: string }).reason, 'login_throttled')
    assert.deepEqual(w.checked, ['dev-1', 'dev-1'], 'the throttled login was refused before its token was looked at')
  })

  it('rule 3: a guessed-at device id is held one wait, then checked; a transport that cannot wait checks at once', async () => {
    const w = world()
    // two wrong logins from two addresses: the device id is throttled, neither address is
    await w.policy.admit(mqtt({ password: 'guess', peer: '10.0.0.7' }), MQTT)
    await w.policy.admit(mqtt({ password: 'guess', peer: '10.0.0.8' }), MQTT)
    const wait = w.throttle.waitOf('device:dev-1')
    assert.ok(wait > 0, 'the device id is throttled')
    const started = performance.now()
    const held = await keptAlive(() => w.policy.admit(mqtt({ peer: '10.0.0.9' }), MQTT))
    assert.equal(held.ok, true, 'the real device gets in, late')
    assert.ok(performance.now() - started >= wait - 50, `held for the wait (${wait} ms)`)

    await w.policy.admit(mqtt({ password: 'guess', peer: '10.0.0.7' }), EMQX)
    await w.policy.admit(mqtt({ password: 'guess', peer: '10.0.0.8' }), EMQX)
    // not held: answered within the microtasks of this turn, before any timer or I/O could run
    const answer = w.policy.admit(mqtt({ peer: '10.0.0.10' }), EMQX)
    const later = new Promise<'held'>((resolve) => setImmediate(() => resolve('held')))
    const first = await Promise.race([answer, later])
    assert.notEqual(first, 'held', 'not held where the transport cannot wait')
    assert.equal((await answer).ok, true)
  })

  it('rule 3: a held login whose client left is not checked', async () => {
    const w = world()
    await w.policy.admit(mqtt({ password: 'guess', peer: '10.0.0.7' }), MQTT)
    await w.policy.admit(mqtt({ password: 'guess', peer: '10.0.0.8' }), MQTT)
    const checkedBefore = w.checked.length
    const left = await keptAlive(() => w.policy.admit(mqtt({ peer: '10.0.0.9' }), { ...MQTT, abandoned: () => true }))
    assert.equal(left.ok, false)
    assert.equal(w.checked.length, checkedBefore, 'no token looked at for a client that is gone')
  })

  it("rule 4: another device's id is refused; a device takes its own back where the transport can", async () => {
    const w = world()
    assert.deepEqual(await w.policy.admit(mqtt({ clientId: 'dev-2' }), MQTT), { ok: false, reason: 'client_id_reserved', message: 'client id is the id of another device' })
    w.holders.set('dev-1', 'dev-2')
    const reclaim = await w.policy.admit(mqtt({ clientId: 'dev-1' }), MQTT)
    assert.equal(reclaim.ok && reclaim.reclaim, true)
    assert.deepEqual(await w.policy.admit(mqtt({ clientId: 'dev-1' }), EMQX), {
      ok: false,
      reason: 'not_authorized',
      message: 'client id is held by another session (kick it to take the id back)'
    })
    w.holders.set('shared', 'dev-2')
    assert.equal(((await w.policy.admit(mqtt({ clientId: 'shared' }), MQTT)) as { reason: string }).reason, 'not_authorized', "a session's id is its device's until it ends")
  })

  it('rule 4: a device over its session limit is refused; resuming its own session opens none', async () => {
    const w = world({ maxSessionsPerDevice: 1 })
    w.counts.observer(undefined, { deviceId: 'dev-1' } as Parameters<typeof w.counts.observer>[1])
    w.holders.set('c1', 'dev-1')
    assert.equal(((await w.policy.admit(mqtt({ clientId: 'c2' }), MQTT)) as { reason: string }).reason, 'too_many_sessions')
    assert.equal((await w.policy.admit(mqtt({ clientId: 'c1' }), MQTT)).ok, true)
  })
})
