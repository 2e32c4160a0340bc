/**
 * Interoperability of the embedded CoAP gateway (EMQX 5 connection mode) with libcoap's
 * command-line client `coap-client-notls` (Debian package libcoap3-bin, libcoap 4.3.1): a client
 * that is not node-coap connects, heartbeats, publishes, observes, cancels and closes over real
 * UDP, and the hub's registry, its MQTT side and the device entity show each step.
 *
 * coap-client exits 0 even when the server answers an error or never answers, so every run is
 * judged by what it prints: a response payload on stdout, `<code> <diagnostic>` on stderr for
 * 4.xx/5.xx, and, with `-v 7`, a dump of each PDU (`v:1 t:ACK c:2.04 i:…`) on stdout, from
 * which `responseCodes` reads the codes the server answered.
 *
 * Without coap-client-notls the suite is skipped locally and fails on CI (`CI` set): `.ci/run`
 * installs libcoap3-bin.
 */
import assert from 'node:assert/strict'
import { execFile, type ChildProcess } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import type { MqttClient } from 'mqtt'
import { eventually, startTestHub, superuserLogin, type TestHub } from './helpers/hub.js'

const CLIENT = 'coap-client-notls'
const INSTALL = 'install it with `sudo apt-get install -y libcoap3-bin` (Debian/Ubuntu; .ci/run does this on CI)'
/** Every run gives up waiting for an answer after this many seconds (coap-client's -B). */
const WAIT_SECONDS = 5
/** A run that has not ended this long after it started is killed, and the test fails. */
const RUN_TIMEOUT_MS = 10_000

interface Run {
  stdout: string
  stderr: string
}

const running = new Set<ChildProcess>()

/**
 * Runs coap-client-notls with `args` (no shell) and resolves with what it printed once it
 * exits; rejects if it cannot start, exits non-zero or outlives RUN_TIMEOUT_MS. `onStdout`
 * sees stdout as it arrives (coap-client flushes after each response it prints).
 */
function coapClient(args: string[], onStdout?: (text: string) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = execFile(CLIENT, ['-B', String(WAIT_SECONDS), ...args], { timeout: RUN_TIMEOUT_MS, killSignal: 'SIGKILL', encoding: 'utf8' }, (error, stdout, stderr) => {
      running.delete(child)
      if (error) reject(new Error(`${CLIENT} ${args.join(' ')} failed (${error.message}); stdout: ${stdout}; stderr: ${stderr}`))
      else resolve({ stdout, stderr })
    })
    running.add(child)
    if (onStdout) child.stdout?.on('data', (chunk: string) => onStdout(chunk))
  })
}

/** The response codes in a `-v 7` run's PDU dumps (requests show method names, empty ACKs 0.00). */
function responseCodes(verboseStdout: string): string[] {
  return [...verboseStdout.matchAll(/^v:1 t:(?:CON|NON|ACK|RST) c:([2-5]\.\d\d) /gm)].map((m) => m[1]!)
}

/** The version coap-client-notls reports, or undefined when it is not installed. */
function installedVersion(): Promise<string | undefined> {
  return new Promise((resolve) => {
    // without arguments it prints its usage, headed by its version, and exits 1
    execFile(CLIENT, [], { timeout: 5000, encoding: 'utf8' }, (error, stdout, stderr) => {
      if ((error as NodeJS.ErrnoException | null)?.code === 'ENOENT') return resolve(undefined)
      resolve(/v(\d+\.\d+\.\d+)/.exec(stderr + stdout)?.[1] ?? 'unknown')
    })
  })
}

const version = await installedVersion()
const missing = version === undefined ? `${CLIENT} is not installed: ${INSTALL}` : undefined
const onCi = Boolean(process.env.CI) && process.env.CI !== 'false'

if (missing !== undefined && onCi) {
  it(`${CLIENT} is installed (the libcoap interoperability test needs it on CI)`, () => {
    assert.fail(`${missing}. .ci/run must apt-get install libcoap3-bin before the tests run.`)
  })
} else {
  describe(`libcoap${version ? ` ${version}` : ''} ${CLIENT} against the CoAP gateway (EMQX 5 connection mode)`, { skip: missing }, () => {
    let t: TestHub
    let port: number
    let watcher: MqttClient
    /** What the superuser watcher received: topic, payload and QoS of each message. */
    const seen: { topic: string; payload: string; qos: number }[] = []

    /** `coap://127.0.0.1:{port}/{path}?{query}`; values must be URI-unreserved, so nothing needs encoding. */
    const uri = (path: string, query: Record<string, string>): string => {
      for (const value of Object.values(query)) assert.match(value, /^[A-Za-z0-9._~-]+$/, 'a query value needing percent-encoding')
      const q = Object.entries(query).map(([k, v]) => `${k}=${v}`).join('&')
      return `coap://127.0.0.1:${port}/${path}${q ? `?${q}` : ''}`
    }

    /** `POST /mqtt/connection` with coap-client: the token it prints. */
    const connect = async (id: string, password: string): Promise<string> => {
      const run = await coapClient(['-m', 'post', uri('mqtt/connection', { clientid: id, username: id, password })])
      assert.equal(run.stderr, '', 'coap-client reported no error')
      const token = run.stdout.trim()
      assert.match(token, /^\S+$/, `a connection token on stdout, got ${JSON.stringify(run.stdout)}`)
      return token
    }

    before(async () => {
      t = await startTestHub()
      port = t.hub.address.coap!.port
      watcher = await t.connect({ clientId: 'libcoap-watcher', ...superuserLogin() })
      watcher.on('message', (topic, payload, packet) => seen.push({ topic, payload: payload.toString(), qos: packet.qos }))
      await watcher.subscribeAsync('+/#', { qos: 1 })
    })

    after(async () => {
      for (const child of running) child.kill('SIGKILL')
      await t?.stop()
    })

    it('connects: the token is printed, the session is a coap session; a wrong password is refused with 4.01', async () => {
      const d = await t.createDevice({ id: 'libcoap-conn' })
      const refused = await coapClient(['-m', 'post', uri('mqtt/connection', { clientid: d.id, username: d.id, password: 'wrong' })])
      assert.match(refused.stderr, /^4\.01 /, `stderr: ${refused.stderr}`)
      assert.equal(refused.stdout.trim(), '')
      assert.equal((await t.api('GET', `/v1/sessions/${d.id}`)).status, 404, 'a refused connect records no session')

      const token = await connect(d.id, d.token)
      const session = (await t.api<{ protocol: string; connected: boolean; deviceId: string; username: string; peerHost: string }>('GET', `/v1/sessions/${d.id}`)).body
      assert.deepEqual(
        [session.protocol, session.connected, session.deviceId, session.username, session.peerHost],
        ['coap', true, d.id, d.id, '127.0.0.1']
      )
      const listed = (await t.api<{ data: { clientid: string; proto_name: string; connected: boolean }[] }>('GET', `/api/v4/clients?clientid=${d.id}`)).body.data
      assert.deepEqual(listed.map((c) => [c.clientid, c.proto_name, c.connected]), [[d.id, 'CoAP', true]])
      // connectinfo is written just after the answer leaves
      await eventually(async () => {
        const info = (await t.api<{ properties: { connectinfo: { _protocol?: string; _online?: boolean } } }>('GET', `/v1/devices/${d.id}`)).body.properties.connectinfo
        return info._protocol === 'coap' && info._online === true
      }, 2000, 'connectinfo online over coap')

      // heartbeat: PUT with the token answers 2.04; with another token 4.01
      const beat = await coapClient(['-v', '7', '-m', 'put', uri('mqtt/connection', { clientid: d.id, token })])
      assert.deepEqual(responseCodes(beat.stdout), ['2.04'], beat.stdout)
      const wrongBeat = await coapClient(['-m', 'put', uri('mqtt/connection', { clientid: d.id, token: 'not-the-token' })])
      assert.match(wrongBeat.stderr, /^4\.01 /, `stderr: ${wrongBeat.stderr}`)
    })

    it('publishes: POST /ps/{topic} reaches an MQTT subscriber and, on a property topic, the device entity', async () => {
      const d = await t.createDevice({ id: 'libcoap-pub' })
      const token = await connect(d.id, d.token)
      seen.length = 0

      const attributes = await coapClient(['-v', '7', '-m', 'post', '-e', '{"fw":"4.3.1"}', uri('ps/v1/devices/me/attributes', { clientid: d.id, token })])
      assert.deepEqual(responseCodes(attributes.stdout), ['2.04'], attributes.stdout)
      // CON publishes with QoS 1, NON with QoS 0 (EMQX's publish_qos = coap)
      const confirmable = await coapClient(['-v', '7', '-m', 'post', '-e', '21.5', uri('ps/sensors/temp', { clientid: d.id, token })])
      assert.deepEqual(responseCodes(confirmable.stdout), ['2.04'], confirmable.stdout)
      const nonConfirmable = await coapClient(['-v', '7', '-N', '-m', 'post', '-e', '21.6', uri('ps/sensors/temp', { clientid: d.id, token })])
      assert.deepEqual(responseCodes(nonConfirmable.stdout), ['2.04'], nonConfirmable.stdout)

      const put = await coapClient(['-v', '7', '-m', 'put', '-e', '21.7', uri('ps/sensors/temp', { clientid: d.id, token })])
      assert.deepEqual(responseCodes(put.stdout), ['2.04'], put.stdout)

      await eventually(() => seen.length >= 4, 3000, 'the four publishes routed to the MQTT watcher')
      assert.deepEqual(seen, [
        { topic: `${d.id}/v1/devices/me/attributes`, payload: '{"fw":"4.3.1"}', qos: 1 },
        { topic: `${d.id}/sensors/temp`, payload: '21.5', qos: 1 },
        { topic: `${d.id}/sensors/temp`, payload: '21.6', qos: 0 },
        { topic: `${d.id}/sensors/temp`, payload: '21.7', qos: 1 }
      ])
      const entity = (await t.api<{ properties: { attributes: Record<string, unknown> } }>('GET', `/apis/core/v1/entities/${d.id}?type=device`)).body
      assert.deepEqual(entity.properties.attributes, { fw: '4.3.1' })

      // DELETE is no method of /ps (4.05), and an attribute payload that is not JSON is refused (4.00)
      const del = await coapClient(['-m', 'delete', uri('ps/sensors/temp', { clientid: d.id, token })])
      assert.match(del.stderr, /^4\.05 /, `stderr: ${del.stderr}`)
      const notJson = await coapClient(['-m', 'post', '-e', 'not-json', uri('ps/v1/devices/me/attributes', { clientid: d.id, token })])
      assert.match(notJson.stderr, /^4\.00 /, `stderr: ${notJson.stderr}`)
      await new Promise((r) => setTimeout(r, 100))
      assert.equal(seen.length, 4, 'refused publishes are not routed')
    })

    it('observes: notifications of an API push and of an MQTT publish are printed; the observation is a subscription entity until coap-client cancels it', async () => {
      const d = await t.createDevice({ id: 'libcoap-obs' })
      const token = await connect(d.id, d.token)
      let printed = ''
      const lines = () => printed.split('\n').filter((l) => l !== '')
      // -s 4: observe for 4 s, then deregister (GET with Observe 1); -w: a newline after each notification
      const observing = coapClient(['-m', 'get', '-s', '4', '-w', uri('ps/v1/devices/me/attributes', { clientid: d.id, token })], (text) => (printed += text))
      try {
        const entities = await eventually(async () => {
          const data = (await t.api<{ data: { sessionId: string; topic: string; brokerTopic: string; properties: string[] }[] }>('GET', `/v1/subscriptions?deviceId=${d.id}`)).body.data
          return data.length > 0 && data
        }, 3000, 'the subscription entity of the observation')
        assert.deepEqual(entities.map((e) => [e.sessionId, e.topic, e.brokerTopic, e.properties]), [[d.id, 'v1/devices/me/attributes', `${d.id}/v1/devices/me/attributes`, ['attributes']]])
        const session = (await t.api<{ topics: { topic: string; brokerTopic: string }[] }>('GET', `/v1/sessions/${d.id}`)).body
        assert.deepEqual(session.topics.map((s) => [s.topic, s.brokerTopic]), [['v1/devices/me/attributes', `${d.id}/v1/devices/me/attributes`]])

        const pushed = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${d.id}/attributes`, { colour: 'red' })
        assert.deepEqual(pushed.body.pushedTo, [d.id])
        await eventually(() => lines().length === 1, 2000, 'the pushed change printed by coap-client')
        await watcher.publishAsync(`${d.id}/v1/devices/me/attributes`, '{"from":"mqtt"}', { qos: 1 })
        await eventually(() => lines().length === 2, 2000, 'the MQTT publish printed by coap-client')
        assert.deepEqual(lines().map((l) => JSON.parse(l) as unknown), [{ colour: 'red' }, { from: 'mqtt' }])
      } finally {
        await observing.catch(() => undefined) // ends by itself after -s 4; the test waits for it
      }
      assert.equal((await observing).stderr, '', 'coap-client reported no error while observing')
      // coap-client deregistered when its 4 s ended: the subscription entity is gone, pushes reach no one
      await eventually(async () => (await t.api<{ data: unknown[] }>('GET', `/v1/subscriptions?deviceId=${d.id}`)).body.data.length === 0, 3000, 'the subscription entity deleted by the cancel')
      assert.deepEqual((await t.api<{ topics: unknown[] }>('GET', `/v1/sessions/${d.id}`)).body.topics, [])
      assert.deepEqual((await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${d.id}/attributes`, { colour: 'blue' })).body.pushedTo, [])
    })

    it('closes: DELETE /mqtt/connection answers 2.02 and ends the session; the token stops working', async () => {
      const d = await t.createDevice({ id: 'libcoap-close' })
      const token = await connect(d.id, d.token)
      assert.equal((await t.api<{ connected: boolean }>('GET', `/v1/sessions/${d.id}`)).body.connected, true)
      const closed = await coapClient(['-v', '7', '-m', 'delete', uri('mqtt/connection', { clientid: d.id, token })])
      assert.deepEqual(responseCodes(closed.stdout), ['2.02'], closed.stdout)
      assert.equal((await t.api('GET', `/v1/sessions/${d.id}`)).status, 404, 'a closed clean session has no entity')
      assert.deepEqual((await t.api<{ data: unknown[] }>('GET', `/api/v4/clients?clientid=${d.id}`)).body.data, [])
      await eventually(async () => (await t.api<{ properties: { connectinfo: { _online?: boolean } } }>('GET', `/v1/devices/${d.id}`)).body.properties.connectinfo._online === false, 2000, 'connectinfo offline')
      const late = await coapClient(['-m', 'post', '-e', 'x', uri('ps/sensors/temp', { clientid: d.id, token })])
      assert.match(late.stderr, /^4\.01 /, `stderr: ${late.stderr}`)
    })

    it('publishes a payload larger than one datagram: libcoap sends it block-wise (RFC 7959 Block1), a new token per block tied by a Request-Tag (RFC 9175)', async () => {
      const d = await t.createDevice({ id: 'libcoap-block' })
      const token = await connect(d.id, d.token)
      seen.length = 0
      // 2,000 bytes in blocks of the size libcoap picks (512 with this URI): each block but the
      // last is answered 2.31 Continue, the last 2.04, carrying Block1 with M clear (RFC 7959 §2.3)
      const payload = 'b'.repeat(2000)
      const run = await coapClient(['-v', '7', '-m', 'post', '-e', payload, uri('ps/blobs/big', { clientid: d.id, token })])
      assert.equal(run.stderr, '', 'the block-wise publish is accepted')
      const codes = responseCodes(run.stdout)
      assert.ok(codes.length >= 2, run.stdout)
      assert.deepEqual(codes, [...codes.slice(0, -1).map(() => '2.31'), '2.04'], run.stdout)
      assert.match(run.stdout, /^v:1 t:ACK c:2\.04 .*\[ Block1:\d+\/_\/\d+ \]/m)
      await eventually(() => seen.length === 1, 2000, 'the block-wise publish routed')
      assert.equal(seen[0]!.payload, payload)

      // 16-byte blocks (-b 16): 40 bytes in three, each block with its own token
      const small = '0123456789abcdefghijklmnopqrstuvwxyzABCD'
      const three = await coapClient(['-v', '7', '-b', '16', '-m', 'post', '-e', small, uri('ps/blobs/small', { clientid: d.id, token })])
      assert.equal(three.stderr, '')
      assert.deepEqual(responseCodes(three.stdout), ['2.31', '2.31', '2.04'], three.stdout)
      assert.match(three.stdout, /^v:1 t:ACK c:2\.04 .*\[ Block1:2\/_\/16 \]/m)
      assert.equal(new Set([...three.stdout.matchAll(/^v:1 t:CON c:POST i:\w+ \{(\w+)\} .*Block1:/gm)].map((m) => m[1])).size, 3, 'a new token per block')
      await eventually(() => seen.length === 2, 2000, 'the three-block publish routed')
      assert.equal(seen[1]!.payload, small)

      // a refused body is refused once whole: the answer to its last block
      const refused = await coapClient(['-b', '16', '-m', 'post', '-e', small, uri('ps/blobs/small', { clientid: d.id, token: 'not-the-token' })])
      assert.match(refused.stderr, /^4\.01 /, `stderr: ${refused.stderr}`)
      await new Promise((r) => setTimeout(r, 100))
      assert.equal(seen.length, 2, 'the refused publish is not routed')
    })
  })
}
