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
    assert.equal(c.pushTimeout, 2500)
    assert.equal(c.pushRetryInterval, 10_000)
    assert.equal(c.commandExpiry, 3600)
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
    assert.throws(() => loadConfig({ IOTHUB_PUSH_TIMEOUT: '50' }, []), /IOTHUB_PUSH_TIMEOUT/)
    assert.equal(loadConfig({}, ['--push-timeout', '4000']).pushTimeout, 4000)
    assert.throws(() => loadConfig({ IOTHUB_PUSH_BACKLOG: '0' }, []), /IOTHUB_PUSH_BACKLOG/)
    assert.equal(loadConfig({ IOTHUB_PUSH_BACKLOG: '5' }, []).pushBacklog, 5)
    assert.throws(() => loadConfig({ IOTHUB_PUSH_RETRY_INTERVAL: '999' }, []), /IOTHUB_PUSH_RETRY_INTERVAL/)
    assert.equal(loadConfig({}, ['--push-retry-interval', '1000']).pushRetryInterval, 1000)
    assert.throws(() => loadConfig({ IOTHUB_COMMAND_EXPIRY: '-1' }, []), /IOTHUB_COMMAND_EXPIRY/)
    assert.throws(() => loadConfig({ IOTHUB_COMMAND_EXPIRY: String(30 * 86_400 + 1) }, []), /IOTHUB_COMMAND_EXPIRY/)
    assert.equal(loadConfig({ IOTHUB_COMMAND_EXPIRY: '0' }, []).commandExpiry, 0, '0: commands never expire')
    assert.equal(loadConfig({}, ['--command-expiry', '86400']).commandExpiry, 86_400)
    assert.throws(() => loadConfig({}, ['--mqtt-prot', '1']), /unknown option --mqtt-prot/)
    assert.throws(() => loadConfig({}, ['--mqtt-port']), /--mqtt-port needs a value/)
  })

  it('takes EMQX mode and the PostgreSQL store, and says what each one still needs', () => {
    const emqx = { IOTHUB_BROKER: 'emqx', IOTHUB_EMQX_API: 'http://emqx:18083/', IOTHUB_EMQX_API_KEY: 'key', IOTHUB_EMQX_API_SECRET: 'secret' }
    const c = loadConfig({ ...emqx, IOTHUB_EMQX_VERSION: '4', IOTHUB_STORE: 'postgres', IOTHUB_DATABASE_URL: 'postgres://iothub@db/iothub' }, [])
    assert.deepEqual([c.broker, c.emqxApi, c.emqxVersion, c.exhookPort, c.reconcileInterval, c.store], ['emqx', 'http://emqx:18083', 4, 9000, 300, 'postgres'])
    const defaults = loadConfig({}, [])
    assert.deepEqual([defaults.broker, defaults.store, defaults.emqxVersion, defaults.webhookSecret], ['embedded', 'sqlite', 5, ''])
    assert.throws(() => loadConfig({ IOTHUB_BROKER: 'emqx' }, []), /IOTHUB_BROKER=emqx needs IOTHUB_EMQX_API/)
    assert.throws(() => loadConfig({ ...emqx, IOTHUB_EMQX_API_SECRET: '' }, []), /needs IOTHUB_EMQX_API_KEY and IOTHUB_EMQX_API_SECRET/)
    assert.throws(() => loadConfig({ ...emqx, IOTHUB_EMQX_API: 'emqx:18083' }, []), /IOTHUB_EMQX_API must be a(n http or https)? URL/)
    assert.throws(() => loadConfig({ ...emqx, IOTHUB_EMQX_VERSION: '3' }, []), /IOTHUB_EMQX_VERSION must be one of 4, 5/)
    assert.throws(() => loadConfig({ IOTHUB_STORE: 'postgres' }, []), /IOTHUB_STORE=postgres needs IOTHUB_DATABASE_URL/)
    assert.throws(() => loadConfig({ IOTHUB_DATABASE_URL: 'mysql://x:secret@db/x' }, []), (e: Error) => /postgres:\/\//.test(e.message) && !e.message.includes('secret'))
    assert.throws(() => loadConfig({ IOTHUB_WEBHOOK_SECRET: 'short' }, []), /IOTHUB_WEBHOOK_SECRET must be at least 16 characters/)
  })
  it('takes the TLS settings: MQTT over TLS on 8883, beside the MQTT host unless told otherwise', () => {
    const defaults = loadConfig({}, [])
    assert.deepEqual([defaults.mqttsPort, defaults.mqttsHost, defaults.tlsCert, defaults.tlsKey, defaults.tlsCa, defaults.apiTls, defaults.tlsHandshakeTimeout], [8883, '0.0.0.0', '', '', '', 'auto', 10_000])
    const c = loadConfig({ IOTHUB_MQTT_HOST: '10.0.0.5', IOTHUB_TLS_CERT: 'certs/hub.pem', IOTHUB_TLS_KEY: '/etc/hub.key' }, ['--mqtts-port', '0', '--api-tls', 'off'])
    assert.deepEqual([c.mqttsHost, c.mqttsPort, c.tlsKey, c.apiTls], ['10.0.0.5', 0, '/etc/hub.key', 'off'])
    assert.match(c.tlsCert, /^\/.*\/certs\/hub\.pem$/, 'a relative path is made absolute')
    assert.equal(loadConfig({ IOTHUB_MQTTS_HOST: '127.0.0.1' }, []).mqttsHost, '127.0.0.1')
    assert.throws(() => loadConfig({ IOTHUB_TLS_CERT: '/x.pem' }, []), /IOTHUB_TLS_CERT needs IOTHUB_TLS_KEY/)
    assert.throws(() => loadConfig({ IOTHUB_TLS_CA: '/ca.pem' }, []), /IOTHUB_TLS_CA needs IOTHUB_TLS_CERT/)
    assert.throws(() => loadConfig({ IOTHUB_API_TLS: 'on' }, []), /IOTHUB_API_TLS must be one of auto, off/)
    assert.throws(() => loadConfig({ IOTHUB_TLS_HANDSHAKE_TIMEOUT: '5' }, []), /IOTHUB_TLS_HANDSHAKE_TIMEOUT must be a whole number from 100/)
  })
})

describe('config: limits against bad input (JSON depth, login throttle, slow HTTP requests)', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({}, [])
    assert.deepEqual(
      [c.maxJsonDepth, c.loginFailuresAllowed, c.loginBackoffFirst, c.loginBackoffMax, c.loginThrottleKeys, c.httpRequestTimeout],
      [32, 10, 1000, 60_000, 10_000, 30_000]
    )
  })

  it('reads each from its variable and its flag', () => {
    const env = { IOTHUB_MAX_JSON_DEPTH: '8', IOTHUB_LOGIN_FAILURES_ALLOWED: '3', IOTHUB_LOGIN_BACKOFF_FIRST: '2000', IOTHUB_LOGIN_BACKOFF_MAX: '5000', IOTHUB_LOGIN_THROTTLE_KEYS: '500', IOTHUB_HTTP_REQUEST_TIMEOUT: '2000' }
    const fromEnv = loadConfig(env, [])
    assert.deepEqual([fromEnv.maxJsonDepth, fromEnv.loginFailuresAllowed, fromEnv.loginBackoffFirst, fromEnv.loginBackoffMax, fromEnv.loginThrottleKeys, fromEnv.httpRequestTimeout], [8, 3, 2000, 5000, 500, 2000])
    const fromFlags = loadConfig(env, ['--max-json-depth', '9', '--login-failures-allowed=4', '--login-backoff-first', '3000', '--login-backoff-max', '6000', '--login-throttle-keys', '600', '--http-request-timeout', '3000'])
    assert.deepEqual([fromFlags.maxJsonDepth, fromFlags.loginFailuresAllowed, fromFlags.loginBackoffFirst, fromFlags.loginBackoffMax, fromFlags.loginThrottleKeys, fromFlags.httpRequestTimeout], [9, 4, 3000, 6000, 600, 3000])
  })

  it('refuses values out of range', () => {
    assert.throws(() => loadConfig({ IOTHUB_MAX_JSON_DEPTH: '0' }, []), /IOTHUB_MAX_JSON_DEPTH must be a whole number from 1 to 1000/)
    assert.throws(() => loadConfig({ IOTHUB_MAX_JSON_DEPTH: '5000' }, []), /IOTHUB_MAX_JSON_DEPTH/)
    assert.throws(() => loadConfig({ IOTHUB_LOGIN_FAILURES_ALLOWED: '0' }, []), /IOTHUB_LOGIN_FAILURES_ALLOWED/)
    assert.throws(() => loadConfig({ IOTHUB_LOGIN_BACKOFF_MAX: '10' }, []), /IOTHUB_LOGIN_BACKOFF_MAX/)
    assert.throws(() => loadConfig({ IOTHUB_LOGIN_BACKOFF_FIRST: '999' }, []), /IOTHUB_LOGIN_BACKOFF_FIRST must be a whole number from 1000/)
    assert.throws(() => loadConfig({ IOTHUB_LOGIN_THROTTLE_KEYS: '1' }, []), /IOTHUB_LOGIN_THROTTLE_KEYS/)
    assert.throws(() => loadConfig({}, ['--http-request-timeout', '0']), /--http-request-timeout/)
  })
})
