/** Configuration: environment, flags, defaults, and errors that name what is wrong. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigError, loadConfig } from '../src/config.js'

describe('config', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({}, [])
    assert.equal(c.mqttPort, 1883)
    assert.equal(c.httpPort, 8081)
    assert.equal(c.auth, 'token')
    assert.equal(c.sessionExpiry, 7200)
    assert.equal(c.apiUser, 'admin')
    assert.equal(c.apiPassword, 'public')
    assert.equal(c.storeSync, 'full')
    assert.match(c.dataDir, /\/data$/)
  })

  it('reads IOTHUB_* variables, and a flag wins over its variable', () => {
    const c = loadConfig({ IOTHUB_MQTT_PORT: '0', IOTHUB_HTTP_PORT: '9000', IOTHUB_AUTH: 'none' }, ['--http-port', '9001', '--session-expiry=60'])
    assert.equal(c.mqttPort, 0)
    assert.equal(c.httpPort, 9001)
    assert.equal(c.auth, 'none')
    assert.equal(c.sessionExpiry, 60)
  })

  it('refuses bad values and unknown flags with a message naming them', () => {
    assert.throws(() => loadConfig({ IOTHUB_MQTT_PORT: '70000' }, []), (e: Error) => e instanceof ConfigError && /IOTHUB_MQTT_PORT/.test(e.message))
    assert.throws(() => loadConfig({ IOTHUB_MQTT_PORT: '1e3' }, []), /IOTHUB_MQTT_PORT must be a whole number/)
    assert.throws(() => loadConfig({ IOTHUB_AUTH: 'maybe' }, []), /IOTHUB_AUTH must be one of token, none/)
    assert.throws(() => loadConfig({}, ['--mqtt-prot', '1']), /unknown option --mqtt-prot/)
    assert.throws(() => loadConfig({}, ['--mqtt-port']), /--mqtt-port needs a value/)
  })
})
