/**
 * Encryption in transit with real certificates made by the openssl CLI: a device on MQTT over
 * TLS, the API over HTTPS, the TLS port refusing plain text, certificates replaced on disk
 * reaching new connections without a restart (and a broken replacement not), and unusable
 * certificate settings stopping the hub at start.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { copyFileSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { ConfigError } from '../src/config.js'
import { Hub } from '../src/hub.js'
import { connectClient, eventually, startTestHub, tempDir, testConfig, type TestHub } from './helpers/hub.js'
import { apiClient } from './helpers/api-client.js'

interface Pki {
  dir: string
  ca: string
  caPem: string
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
}

/** A CA of our own, to sign the server certificates with. */
function makeCa(dir: string): Pki {
  openssl(dir, 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=iothub test CA')
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  return { dir, ca: join(dir, 'ca.pem'), caPem: readFileSync(join(dir, 'ca.pem'), 'utf8') }
}

/** A server certificate for 127.0.0.1 signed by the CA, as `<name>.pem` and `<name>.key`; returns its serial (hex). */
function makeServerCert(pki: Pki, name: string, serial: string): { cert: string; key: string; serial: string } {
  openssl(pki.dir, 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`)
  openssl(pki.dir, 'x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', `0x${serial}`, '-days', '2', '-out', `${name}.pem`, '-extfile', 'san.ext')
  return { cert: join(pki.dir, `${name}.pem`), key: join(pki.dir, `${name}.key`), serial: serial.toUpperCase() }
}

/** The serial number of the certificate a new TLS connection to `port` is shown. */
function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const serial = socket.getPeerCertificate().serialNumber
      socket.end()
      resolve(serial)
    })
    socket.once('error', reject)
  })
}

/** The value of one sample on /metrics (0 when absent). */
async function metric(t: TestHub, sample: string): Promise<number> {
  const text = (await t.api<string>('GET', '/metrics', undefined, null)).body
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  return line === undefined ? 0 : Number(line.slice(sample.length + 1))
}

const portOf = (url: string) => Number(new URL(url).port)

/** `promise`, or a failure naming `what` after `ms`: a hub that never closes a socket must fail the test, not hang it. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

const TLS_MESSAGE_RATE = 50

describe('MQTT over TLS and HTTPS', () => {
  let pki: Pki
  let served: { cert: string; key: string; serial: string }
  let t: TestHub
  const clients: MqttClient[] = []

  before(async () => {
    pki = makeCa(tempDir('iothub-tls-'))
    served = makeServerCert(pki, 'hub-one', '1001')
    // a low rate, so that a test sends a few seconds' worth at once
    t = await startTestHub({ mqttsPort: 0, tlsCert: served.cert, tlsKey: served.key, tlsCa: pki.ca, maxMessageRate: TLS_MESSAGE_RATE })
  })
  after(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)))
    await t.stop()
    rmSync(pki.dir, { recursive: true, force: true })
  })

  it('carries a device over TLS beside plain MQTT, and serves the API over HTTPS only', async () => {
    assert.match(t.httpUrl, /^https:\/\//)
    assert.ok(t.mqttsUrl, 'the hub reports its MQTT over TLS address')
    const d = await t.createDevice()
    const device = await connectClient(t.mqttsUrl, { clientId: 'tls-device', username: d.id, password: d.token, ca: pki.caPem, rejectUnauthorized: true })
    clients.push(device)
    const received: string[] = []
    device.on('message', (_topic, payload) => received.push(payload.toString()))
    await device.subscribeAsync('v1/devices/me/attributes', { qos: 1 })

    const patch = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${d.id}/attributes`, { firmware: '2.1' })
    assert.equal(patch.status, 200)
    assert.deepEqual(patch.body.pushedTo, ['tls-device'])
    await eventually(() => received.length === 1, 5000, 'the push over TLS')
    assert.deepEqual(JSON.parse(received[0]!), { firmware: '2.1' })

    const sessions = await t.api<{ data: { clientId: string; connected: boolean; peerHost: string; peerPort: number; sockPort: number }[] }>('GET', `/v1/sessions?deviceId=${d.id}`)
    assert.equal(sessions.status, 200)
    const [session] = sessions.body.data
    assert.deepEqual([session?.clientId, session?.connected, session?.peerHost, session?.sockPort], ['tls-device', true, '127.0.0.1', portOf(t.mqttsUrl)])
    assert.ok(session!.peerPort > 0, 'the peer port of a TLS connection is reported')

    // plain MQTT keeps working beside it
    const plain = await t.createDevice()
    clients.push(await connectClient(t.mqttUrl, { clientId: 'plain-device', username: plain.id, password: plain.token }))

    // the API port no longer answers plain HTTP
    await assert.rejects(fetch(t.httpUrl.replace('https:', 'http:') + '/healthz'))
  })

  it('refuses a plain-text client on the TLS port, and counts it', async () => {
    const before = await metric(t, 'iothub_rejected_inputs_total{reason="tls_handshake_failed"}')
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const socket = netConnect(portOf(t.mqttsUrl!), '127.0.0.1', () => {
        // an MQTT 3.1.1 CONNECT, clientId "x", as a client that forgot TLS sends it
        socket.write(Buffer.from([0x10, 0x0d, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, 0x78]))
      })
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => chunks.push(chunk))
      socket.once('close', () => resolve(Buffer.concat(chunks)))
      socket.once('error', reject)
    })
    assert.notEqual(answer[0], 0x20, 'no CONNACK comes back over the TLS port')
    await eventually(async () => (await metric(t, 'iothub_rejected_inputs_total{reason="tls_handshake_failed"}')) === before + 1, 5000, 'the refusal counted')
  })

  it('guards TLS connections as plain ones: a packet over the size limit ends the connection, and is counted', async () => {
    const before = await metric(t, 'iothub_rejected_inputs_total{reason="packet_too_large"}')
    const d = await t.createDevice()
    const device = await connectClient(t.mqttsUrl!, { clientId: 'tls-too-large', username: d.id, password: d.token, ca: pki.caPem })
    clients.push(device)
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()))
    device.publish('v1/devices/me/telemetry', Buffer.alloc(t.hub.config.maxPacketSize + 1, 0x20), { qos: 0 })
    await within(closed, 10_000, 'the hub to close the connection')
    await eventually(async () => (await metric(t, 'iothub_rejected_inputs_total{reason="packet_too_large"}')) === before + 1, 5000, 'the refusal counted')
  })

  it('holds TLS connections to their rate as plain ones: the excess waits, nothing is lost or reordered', async () => {
    const before = await metric(t, 'iothub_mqtt_reads_held_total{limit="messages"}')
    const d = await t.createDevice()
    const device = await connectClient(t.mqttsUrl!, { clientId: 'tls-rate', username: d.id, password: d.token, ca: pki.caPem })
    clients.push(device)
    const received: string[] = []
    device.on('message', (_topic, payload) => received.push(payload.toString()))
    await device.subscribeAsync('echo', { qos: 0 })
    const COUNT = 3 * TLS_MESSAGE_RATE
    const sent = performance.now()
    await Promise.all(Array.from({ length: COUNT }, (_, i) => device.publishAsync('echo', String(i), { qos: 0 })))
    await eventually(() => received.length === COUNT, 20_000, 'every message back')
    assert.deepEqual(received, Array.from({ length: COUNT }, (_, i) => String(i)))
    // three seconds' worth sent at once: the last starts in the third second from the one it was sent in
    assert.ok(performance.now() - sent >= 1000, `back after ${(performance.now() - sent).toFixed(0)} ms`)
    assert.ok((await metric(t, 'iothub_mqtt_reads_held_total{limit="messages"}')) > before)
  })

  it('serves a replaced certificate to new connections without a restart, keeping the old ones; a broken one is not taken', async () => {
    const d = await t.createDevice()
    const kept = await connectClient(t.mqttsUrl!, { clientId: 'kept-across-reload', username: d.id, password: d.token, ca: pki.caPem })
    clients.push(kept)
    const port = portOf(t.mqttsUrl!)
    const apiPort = portOf(t.httpUrl)
    assert.equal(await servedSerial(port, pki.caPem), served.serial)

    // as certbot or an editor does it: write beside, then rename over the configured files
    const next = makeServerCert(pki, 'hub-two', '2002')
    copyFileSync(next.key, `${served.key}.new`)
    renameSync(`${served.key}.new`, served.key)
    copyFileSync(next.cert, `${served.cert}.new`)
    renameSync(`${served.cert}.new`, served.cert)
    await eventually(async () => (await servedSerial(port, pki.caPem)) === next.serial, 10_000, 'the MQTT listener to serve the new certificate')
    await eventually(async () => (await servedSerial(apiPort, pki.caPem)) === next.serial, 10_000, 'the API to serve the new certificate')
    assert.ok(kept.connected, 'the connection made with the old certificate stays up')
    await kept.publishAsync('v1/devices/me/telemetry', JSON.stringify({ t: 1 }), { qos: 1 })
    assert.equal(await metric(t, 'iothub_tls_reloads_total{outcome="applied"}'), 1)
    const expiry = await metric(t, 'iothub_tls_certificate_expiry_timestamp_seconds')
    assert.equal(expiry, Math.floor(new Date(new X509Certificate(readFileSync(next.cert)).validTo).getTime() / 1000))

    // a broken certificate: logged, counted, the current one kept
    const failedBefore = await metric(t, 'iothub_tls_reloads_total{outcome="failed"}')
    writeFileSync(served.cert, '-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n')
    await eventually(async () => (await metric(t, 'iothub_tls_reloads_total{outcome="failed"}')) > failedBefore, 10_000, 'the failed reload counted')
    assert.equal(await servedSerial(port, pki.caPem), next.serial)
    assert.equal((await t.api('GET', '/healthz')).status, 200)
    const again = await connectClient(t.mqttsUrl!, { clientId: 'after-broken-reload', username: d.id, password: d.token, ca: pki.caPem })
    clients.push(again)
  })
})

describe('TLS handshakes that never finish', () => {
  let pki: Pki
  let cert: { cert: string; key: string }
  before(() => {
    pki = makeCa(tempDir('iothub-tls-idle-'))
    cert = makeServerCert(pki, 'hub', '4004')
  })
  after(() => rmSync(pki.dir, { recursive: true, force: true }))

  /** A TCP connection to the TLS port that never says a word; resolves when the hub closes it. */
  const silentClient = (port: number) => {
    const socket = netConnect(port, '127.0.0.1')
    socket.on('error', () => undefined)
    return { socket, closed: new Promise<void>((resolve) => socket.once('close', () => resolve())) }
  }

  it('closes a client that does not finish its handshake in IOTHUB_TLS_HANDSHAKE_TIMEOUT, and counts it', async () => {
    const t = await startTestHub({ mqttsPort: 0, tlsCert: cert.cert, tlsKey: cert.key, tlsCa: pki.ca, tlsHandshakeTimeout: 300 })
    try {
      const silent = silentClient(portOf(t.mqttsUrl!))
      await within(silent.closed, 10_000, 'the hub to close the silent client')
      await eventually(async () => (await metric(t, 'iothub_rejected_inputs_total{reason="tls_handshake_failed"}')) === 1, 5000, 'the timeout counted')
    } finally {
      await t.stop()
    }
  })

  it('does not wait for a client stuck in its handshake to stop', async () => {
    const t = await startTestHub({ mqttsPort: 0, tlsCert: cert.cert, tlsKey: cert.key, tlsHandshakeTimeout: 120_000 })
    const silent = silentClient(portOf(t.mqttsUrl!))
    await eventually(() => silent.socket.readyState === 'open', 5000, 'the silent client connected')
    await within(t.stop(), 20_000, 'the hub to stop')
    await within(silent.closed, 5000, 'the silent client to be closed')
  })
})

describe('TLS settings', () => {
  let pki: Pki
  let cert: { cert: string; key: string }
  before(() => {
    pki = makeCa(tempDir('iothub-tls-config-'))
    cert = makeServerCert(pki, 'hub', '3003')
  })
  after(() => rmSync(pki.dir, { recursive: true, force: true }))

  const refused = (overrides: Parameters<typeof testConfig>[1], message: RegExp) => {
    const dataDir = tempDir()
    try {
      assert.throws(() => new Hub(testConfig(dataDir, overrides)), (e: Error) => e instanceof ConfigError && message.test(e.message))
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }

  it('stops the hub at start when the certificate and key do not make a usable pair, naming the variable', () => {
    refused({ tlsCert: cert.cert }, /IOTHUB_TLS_CERT needs IOTHUB_TLS_KEY/)
    refused({ tlsKey: cert.key }, /IOTHUB_TLS_KEY needs IOTHUB_TLS_CERT/)
    refused({ tlsCert: join(pki.dir, 'missing.pem'), tlsKey: cert.key }, /IOTHUB_TLS_CERT: cannot read .*missing\.pem \(ENOENT\)/)
    refused({ tlsCert: cert.key, tlsKey: cert.key }, /IOTHUB_TLS_CERT: .* holds no PEM certificate/)
    refused({ tlsCert: cert.cert, tlsKey: cert.cert }, /IOTHUB_TLS_KEY: .* is not an unencrypted PEM private key/)
    refused({ tlsCert: cert.cert, tlsKey: join(pki.dir, 'ca.key') }, /IOTHUB_TLS_KEY .* is not the private key of the certificate/)
    refused({ tlsCert: cert.cert, tlsKey: cert.key, tlsCa: cert.key }, /IOTHUB_TLS_CA: .* holds no PEM certificate/)
  })

  it('keeps the API on plain HTTP with IOTHUB_API_TLS=off, while MQTT over TLS runs', async () => {
    const t = await startTestHub({ mqttsPort: 0, tlsCert: cert.cert, tlsKey: cert.key, apiTls: 'off' })
    try {
      assert.match(t.httpUrl, /^http:\/\//)
      assert.equal((await t.api('GET', '/healthz')).status, 200)
      assert.equal(await servedSerial(portOf(t.mqttsUrl!), pki.caPem), '3003')
    } finally {
      await t.stop()
    }
  })

  it('opens no TLS listener without a certificate', async () => {
    const t = await startTestHub({ mqttsPort: 0 })
    try {
      assert.equal(t.mqttsUrl, undefined)
      assert.match(t.httpUrl, /^http:\/\//)
      assert.equal((await apiClient(t.httpUrl)('GET', '/healthz')).status, 200)
    } finally {
      await t.stop()
    }
  })
})
