/** Start-up choices a user relies on: where the API listens, and IOTHUB_AUTH=none. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { startTestHub } from './helpers/hub.js'

describe('hub start-up', () => {
  it('keeps the API on loopback while the default credentials are in use, and not otherwise', async () => {
    const defaults = await startTestHub({ httpHost: '0.0.0.0' })
    try {
      assert.equal(defaults.hub.address.http.address, '127.0.0.1')
    } finally {
      await defaults.stop()
    }
    const custom = await startTestHub({ httpHost: '0.0.0.0', apiUser: 'ops', apiPassword: 's3cret-enough' })
    try {
      assert.equal(custom.hub.address.http.address, '0.0.0.0')
      assert.equal((await custom.api('GET', '/v1/sessions')).status, 200, 'the helper uses the configured credentials')
      assert.equal((await custom.api('GET', '/v1/sessions', undefined, `Basic ${Buffer.from('admin:public').toString('base64')}`)).status, 401)
    } finally {
      await custom.stop()
    }
  })

  it('with IOTHUB_AUTH=none accepts anyone; the device id is the username, else the clientId', async () => {
    const t = await startTestHub({ auth: 'none' })
    try {
      await t.connect({ clientId: 'anon-1' })
      await t.connect({ clientId: 'anon-2', username: 'sensor-7', password: 'anything' })
      const one = await t.api<{ deviceId: string; username: string | null }>('GET', '/v1/sessions/anon-1')
      const two = await t.api<{ deviceId: string; username: string | null }>('GET', '/v1/sessions/anon-2')
      assert.equal(one.body.deviceId, 'anon-1')
      assert.equal(one.body.username, null)
      assert.equal(two.body.deviceId, 'sensor-7')
    } finally {
      await t.stop()
    }
  })
})
