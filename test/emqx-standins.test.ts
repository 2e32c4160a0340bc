/**
 * The EMQX stand-ins against themselves: the REST stand-in pages, authenticates and records publishes
 * as EMQX's v4 and v5 APIs do, and the ExHook client talks to a HookProvider built from
 * src/emqx/exhook/protos.ts in all three protocol versions, with the wire bytes checked against
 * the field numbers EMQX publishes.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import {
  EXHOOK_HOOK_RPCS,
  EXHOOK_RPCS,
  EXHOOK_VERSIONS,
  exhookProtocol,
  uint64ToNumber,
  type ExhookVersion
} from '../src/emqx/exhook/protos.js'
import { EmqxExhookClient } from './helpers/emqx-exhook-client.js'
import { startEmqxRestStandin, type EmqxRestStandin } from './helpers/emqx-rest-standin.js'

const KEY = 'standin-key'
const SECRET = 'standin-secret'
const basic = (key: string, secret: string): string => `Basic ${Buffer.from(`${key}:${secret}`).toString('base64')}`

async function call(
  standin: EmqxRestStandin,
  method: string,
  path: string,
  body?: unknown,
  authorization: string | null = basic(KEY, SECRET)
): Promise<{ status: number; body: unknown; headers: Headers }> {
  const response = await fetch(`${standin.url}${path}`, {
    method,
    headers: {
      ...(authorization ? { authorization } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {})
    },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await response.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // plain text (v4's 401 body, /status)
  }
  return { status: response.status, body: parsed, headers: response.headers }
}

interface PageBody {
  code?: number
  data: { clientid: string; topic?: string; connected_at?: string }[]
  meta: { page: number; limit: number; hasnext: boolean; count?: number }
}

describe('EMQX REST stand-in', () => {
  for (const version of [4, 5] as const) {
    describe(`v${version}`, () => {
      let standin: EmqxRestStandin
      const N = 23
      const prefix = version === 4 ? '/api/v4' : '/api/v5'
      const pageParam = version === 4 ? '_page' : 'page'
      const limitParam = version === 4 ? '_limit' : 'limit'

      before(async () => {
        standin = await startEmqxRestStandin({ version, apiKey: KEY, apiSecret: SECRET })
        for (let i = 0; i < N; i++) {
          standin.addClient({ clientid: `dev-${String(i).padStart(2, '0')}`, username: `user-${i}`, connected: i % 5 !== 0 })
          standin.subscribe(`dev-${String(i).padStart(2, '0')}`, `devices/${i}/cmd`, 1)
        }
      })
      after(() => standin.close())

      it('binds a port of its own', () => {
        assert.match(standin.url, /^http:\/\/127\.0\.0\.1:\d+$/)
        assert.notEqual(new URL(standin.url).port, '0')
      })

      for (const what of ['clients', 'subscriptions'] as const) {
        it(`pages through all ${N} ${what} exactly once`, async () => {
          const seen: string[] = []
          const limit = 5
          for (let page = 1; ; page++) {
            const { status, body } = await call(standin, 'GET', `${prefix}/${what}?${pageParam}=${page}&${limitParam}=${limit}`)
            assert.equal(status, 200)
            const answer = body as PageBody
            if (version === 4) assert.equal(answer.code, 0)
            else assert.equal('code' in answer, false)
            assert.deepEqual(
              { page: answer.meta.page, limit: answer.meta.limit, count: answer.meta.count },
              { page, limit, count: N }
            )
            seen.push(...answer.data.map((row) => row.clientid))
            if (!answer.meta.hasnext) break
            assert.ok(page < 100)
          }
          assert.equal(seen.length, N)
          assert.equal(new Set(seen).size, N)
        })
      }

      it('filters by clientid', async () => {
        const { body } = await call(standin, 'GET', `${prefix}/clients?clientid=dev-07`)
        const answer = body as PageBody
        assert.deepEqual(answer.data.map((row) => row.clientid), ['dev-07'])
        // v4: count is -1 for any query condition; v5: the matching count
        assert.equal(answer.meta.count, version === 4 ? -1 : 1)
        assert.equal(answer.meta.hasnext, false)
      })

      it('renders times as that EMQX version does', async () => {
        const { body } = await call(standin, 'GET', `${prefix}/clients?${limitParam}=1`)
        const connectedAt = (body as PageBody).data[0]?.connected_at ?? ''
        if (version === 4) assert.match(connectedAt, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/)
        else assert.match(connectedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$/)
      })

      it('uses the default page size', async () => {
        const { body } = await call(standin, 'GET', `${prefix}/clients`)
        assert.equal((body as PageBody).meta.limit, version === 4 ? 10000 : 100)
      })

      if (version === 5) {
        it('refuses a limit above 10000', async () => {
          const { status, body } = await call(standin, 'GET', `${prefix}/clients?limit=10001`)
          assert.equal(status, 400)
          assert.equal((body as { code: string }).code, 'BAD_REQUEST')
        })
      }

      it('answers 401 as EMQX does for wrong credentials', async () => {
        const wrong = await call(standin, 'GET', `${prefix}/clients`, undefined, basic(KEY, 'nope'))
        assert.equal(wrong.status, 401)
        if (version === 4) {
          assert.equal(wrong.body, 'UNAUTHORIZED')
          assert.equal(wrong.headers.get('www-authenticate'), 'Basic Realm="minirest-server"')
        } else {
          assert.deepEqual(wrong.body, { code: 'BAD_API_KEY_OR_SECRET', message: 'Check api_key/api_secret' })
        }
        const none = await call(standin, 'GET', `${prefix}/clients`, undefined, null)
        assert.equal(none.status, 401)
      })

      it('answers 401 for every request while setAuthFailure is on', async () => {
        standin.setAuthFailure(true)
        try {
          assert.equal((await call(standin, 'GET', `${prefix}/clients`)).status, 401)
        } finally {
          standin.setAuthFailure(false)
        }
        assert.equal((await call(standin, 'GET', `${prefix}/clients`)).status, 200)
      })

      it('answers 503, or resets connections, while down', async () => {
        standin.setDown(true)
        assert.equal((await call(standin, 'GET', `${prefix}/clients`)).status, 503)
        standin.setDown(true, 'reset')
        await assert.rejects(call(standin, 'GET', `${prefix}/clients`))
        standin.setDown(false)
        assert.equal((await call(standin, 'GET', `${prefix}/clients`)).status, 200)
      })

      it('records a publish and answers as EMQX does', async () => {
        const before = standin.published.length
        if (version === 4) {
          const body = { topic: 'devices/3/cmd', payload: Buffer.from('hi').toString('base64'), encoding: 'base64', qos: 1, retain: false, clientid: 'hub' }
          const { status, body: answer } = await call(standin, 'POST', '/api/v4/mqtt/publish', body)
          assert.equal(status, 200)
          assert.deepEqual(answer, { code: 0 })
          const noTopic = await call(standin, 'POST', '/api/v4/mqtt/publish', { payload: 'x', clientid: 'hub' })
          assert.deepEqual(noTopic.body, { code: 115, message: 'bad_topic' })
        } else {
          const matched = await call(standin, 'POST', '/api/v5/publish', { topic: 'devices/3/cmd', payload: 'aGk=', payload_encoding: 'base64', qos: 1 })
          assert.equal(matched.status, 200)
          assert.match((matched.body as { id: string }).id, /^[0-9A-F]{32}$/)
          const unmatched = await call(standin, 'POST', '/api/v5/publish', { topic: 'nobody/listens', payload: 'x' })
          assert.equal(unmatched.status, 202)
          assert.deepEqual(unmatched.body, { reason_code: 16, message: 'no_matching_subscribers' })
        }
        const record = standin.published[before]
        assert.ok(record)
        assert.deepEqual(record.topics, ['devices/3/cmd'])
        assert.equal(record.payload.toString(), 'hi')
        assert.equal(record.qos, 1)
        assert.ok(standin.requests.some((r) => r.method === 'POST' && r.path.startsWith(prefix)))
      })

      it('reflects clients the test removes', async () => {
        standin.removeClient('dev-22')
        const { body } = await call(standin, 'GET', `${prefix}/clients?${limitParam}=1000`)
        assert.equal((body as PageBody).data.length, N - 1)
        assert.equal(standin.subscriptions.some((s) => s.clientid === 'dev-22'), false)
      })
    })
  }

  it('v5 can report hasnext on a page that ends exactly at the last row, as EMQX may', async () => {
    const standin = await startEmqxRestStandin({ version: 5, apiKey: KEY, apiSecret: SECRET, hasnextOnExactPageEnd: true })
    try {
      for (let i = 0; i < 4; i++) standin.addClient({ clientid: `c${i}` })
      const first = (await call(standin, 'GET', '/api/v5/clients?page=2&limit=2')).body as PageBody
      assert.equal(first.meta.hasnext, true)
      const empty = (await call(standin, 'GET', '/api/v5/clients?page=3&limit=2')).body as PageBody
      assert.deepEqual({ rows: empty.data.length, hasnext: empty.meta.hasnext }, { rows: 0, hasnext: false })
    } finally {
      await standin.close()
    }
  })
})

/** Expected protobuf bytes, written out from EMQX's field numbers (tag = field << 3 | wire type). */
const VALUED_STOP_TRUE = Buffer.from([0x08, 0x02, 0x18, 0x01]) // type=2 STOP_AND_RETURN, bool_result(3)=true
const VALUED_CONTINUE_FALSE = Buffer.from([0x08, 0x00, 0x18, 0x00]) // type=0 CONTINUE, bool_result(3)=false

describe('EMQX ExHook client against a HookProvider from protos.ts', () => {
  for (const version of EXHOOK_VERSIONS) {
    describe(version, () => {
      let server: grpc.Server
      let client: EmqxExhookClient
      const received = new Map<string, unknown[]>()
      const rawRequests = new Map<string, Buffer[]>()

      before(async () => {
        const { service } = exhookProtocol(version)
        // capture each request's wire bytes before decoding
        const capturing: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
        for (const [rpc, method] of Object.entries(service)) {
          capturing[rpc] = {
            ...method,
            requestDeserialize: (bytes: Buffer) => {
              rawRequests.set(rpc, [...(rawRequests.get(rpc) ?? []), bytes])
              return method.requestDeserialize(bytes) as unknown
            }
          }
        }
        const record = (rpc: string, request: unknown): void => {
          received.set(rpc, [...(received.get(rpc) ?? []), request])
        }
        const implementation: grpc.UntypedServiceImplementation = {}
        for (const rpc of EXHOOK_RPCS[version]) {
          implementation[rpc] = (callObj: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
            record(rpc, callObj.request)
            callback(null, {})
          }
        }
        implementation.OnProviderLoaded = (callObj: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          record('OnProviderLoaded', callObj.request)
          callback(null, { hooks: [{ name: 'client.connected' }] })
        }
        implementation.OnClientAuthenticate = (callObj: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          record('OnClientAuthenticate', callObj.request)
          const { clientinfo } = callObj.request as { clientinfo: { username: string } }
          callback(null, clientinfo.username === 'good' ? { type: 'STOP_AND_RETURN', bool_result: true } : { type: 'CONTINUE', bool_result: false })
        }
        implementation[version === 'v1' ? 'OnClientCheckAcl' : 'OnClientAuthorize'] = (
          callObj: grpc.ServerUnaryCall<unknown, unknown>,
          callback: grpc.sendUnaryData<unknown>
        ) => {
          record('authorize', callObj.request)
          callback(null, { type: 'IGNORE' })
        }
        implementation.OnMessagePublish = (callObj: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          record('OnMessagePublish', callObj.request)
          const { message } = callObj.request as { message: Record<string, unknown> }
          callback(null, { type: 'STOP_AND_RETURN', message: { ...message, topic: 'rewritten/topic', headers: { allow_publish: 'false' } } })
        }
        server = new grpc.Server()
        server.addService(capturing, implementation)
        const port = await new Promise<number>((resolve, reject) => {
          server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, boundPort) => (error ? reject(error) : resolve(boundPort)))
        })
        client = new EmqxExhookClient({ address: `127.0.0.1:${port}`, version, deadlineMs: 3000 })
        await client.waitForReady()
      })

      after(async () => {
        client.close()
        await new Promise<void>((resolve) => server.tryShutdown(() => resolve()))
      })

      it('loads the provider: broker info and meta in, hooks out', async () => {
        const answer = await client.onProviderLoaded()
        assert.deepEqual(answer, { hooks: [{ name: 'client.connected', topics: [] }] })
        const request = received.get('OnProviderLoaded')?.[0] as { broker: { version: string; uptime: string }; meta: { cluster_name: string; node: string } }
        assert.equal(request.meta.cluster_name, 'emqxcl')
        assert.equal(request.meta.node, 'emqx@127.0.0.1')
        if (version === 'v1') assert.match(request.broker.uptime, /seconds$/)
        else assert.equal(typeof uint64ToNumber(request.broker.uptime), 'number') // int64 decoded as a decimal string
      })

      it('authenticates: ValuedResponse with a bool result both ways, on EMQX field numbers', async () => {
        const yes = await client.onClientAuthenticate({ clientid: 'c1', username: 'good', password: 'pw' }, false)
        assert.deepEqual(yes, { type: 'STOP_AND_RETURN', value: 'bool_result', bool_result: true })
        const no = await client.onClientAuthenticate({ clientid: 'c2', username: 'bad' }, true)
        assert.deepEqual(no, { type: 'CONTINUE', value: 'bool_result', bool_result: false })

        const { service } = exhookProtocol(version)
        const method = service.OnClientAuthenticate
        assert.ok(method)
        assert.deepEqual(method.responseSerialize({ type: 'STOP_AND_RETURN', bool_result: true }), VALUED_STOP_TRUE)
        assert.deepEqual(method.responseSerialize({ type: 'CONTINUE', bool_result: false }), VALUED_CONTINUE_FALSE)

        // ClientAuthenticateRequest on the wire: clientinfo = 1 (0x0a), result = 2 (0x10), meta = 3 (0x1a)
        const raw = rawRequests.get('OnClientAuthenticate')?.[0]
        assert.ok(raw)
        assert.equal(raw[0], 0x0a)
        const decoded = received.get('OnClientAuthenticate')?.[0] as { clientinfo: Record<string, unknown>; result: boolean }
        assert.equal(decoded.result, false)
        assert.deepEqual(
          { clientid: decoded.clientinfo.clientid, username: decoded.clientinfo.username, password: decoded.clientinfo.password, protocol: decoded.clientinfo.protocol, sockport: decoded.clientinfo.sockport },
          { clientid: 'c1', username: 'good', password: 'pw', protocol: 'mqtt', sockport: 1883 }
        )
        // v2 has the field since later 5.x releases (proto/exhook/v2); this client, as 5.0-5.8, leaves it 0
        assert.equal('peerport' in decoded.clientinfo, version !== 'v1')
        assert.ok(containsField(raw, 3, 2), 'meta on field 3')
      })

      it(`authorizes through ${version === 'v1' ? 'OnClientCheckAcl' : 'OnClientAuthorize'}`, async () => {
        const answer = await client.onClientAuthorize({ clientid: 'c1' }, 'SUBSCRIBE', 'devices/c1/#', true)
        assert.deepEqual(answer, { type: 'IGNORE' })
        const request = received.get('authorize')?.[0] as { type: string; topic: string; result: boolean }
        assert.deepEqual({ type: request.type, topic: request.topic, result: request.result }, { type: 'SUBSCRIBE', topic: 'devices/c1/#', result: true })
        const raw = rawRequests.get(version === 'v1' ? 'OnClientCheckAcl' : 'OnClientAuthorize')?.[0]
        assert.ok(raw)
        assert.ok(raw.includes(Buffer.from([0x10, 0x01])), 'type = 2 carries SUBSCRIBE = 1')
        assert.ok(containsField(raw, 5, 2), 'meta on field 5')
      })

      it('publishes: the answer carries the rewritten message, uint64 timestamp as a string', async () => {
        const answer = await client.onMessagePublish({ topic: 'devices/c1/up', payload: 'hello', qos: 1, from: 'c1', timestamp: 1_700_000_000_123 })
        assert.equal(answer.type, 'STOP_AND_RETURN')
        assert.equal(answer.value, 'message')
        assert.equal(answer.message?.topic, 'rewritten/topic')
        assert.equal(answer.message?.headers.allow_publish, 'false')
        assert.equal(Buffer.from(answer.message?.payload ?? []).toString(), 'hello')
        const request = received.get('OnMessagePublish')?.[0] as { message: { timestamp: string; qos: number; from: string } }
        assert.equal(request.message.timestamp, '1700000000123')
        assert.equal(uint64ToNumber(request.message.timestamp), 1_700_000_000_123)
      })

      it('sends the lifecycle and session hooks under this version\'s rpc names', async () => {
        const c = { clientid: 'c9', username: 'u9', peerhost: '10.0.0.9', peerport: 40999, sockport: 8883 }
        await client.onClientConnect({ ...c, proto_ver: 5, keepalive: 30 }, { props: { 'Session-Expiry-Interval': 3600 }, userProps: { k: 'v' } })
        await client.onClientConnack({ ...c, proto_ver: 5 }, 'success')
        await client.onClientConnected(c)
        await client.onSessionSubscribed(c, 'devices/c9/cmd', { qos: 1 })
        await client.onSessionUnsubscribed(c, 'devices/c9/cmd')
        await client.onSessionDiscarded(c)
        await client.onSessionTakenover(c)
        await client.onClientDisconnected(c, 'normal')
        await client.onSessionTerminated(c, 'takenover')
        await client.onProviderUnloaded()

        const connect = received.get('OnClientConnect')?.[0] as { conninfo: Record<string, unknown>; props: unknown[]; user_props?: unknown[] }
        assert.equal(connect.conninfo.proto_ver, '5')
        assert.equal(connect.conninfo.peerhost, '10.0.0.9')
        assert.equal(connect.conninfo.peerport, version === 'v3' ? 40999 : version === 'v2' ? 0 : undefined)
        assert.deepEqual(connect.props, [{ name: 'Session-Expiry-Interval', value: '3600' }])
        assert.deepEqual(connect.user_props, version === 'v3' ? [{ name: 'k', value: 'v' }] : undefined)
        const subscribed = received.get('OnSessionSubscribed')?.[0] as { topic: string; subopts: Record<string, unknown> }
        assert.equal(subscribed.subopts.qos, 1)
        assert.equal('share' in subscribed.subopts, version === 'v1')
        const disconnected = received.get('OnClientDisconnected')?.[0] as { reason: string }
        assert.equal(disconnected.reason, 'normal')
        const takenover = version === 'v1' ? 'OnSessionTakeovered' : 'OnSessionTakenover'
        assert.equal(received.get(takenover)?.length, 1)
        const unloaded = received.get('OnProviderUnloaded')?.[0] as { meta: { version: string } }
        assert.equal(unloaded.meta.version, version === 'v1' ? '4.4.19' : version === 'v2' ? '5.8.0' : '5.9.0')
      })

      it('honours the deadline', async () => {
        const slow = new grpc.Server()
        const { service } = exhookProtocol(version)
        slow.addService(service, {
          OnClientConnected: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
            setTimeout(() => callback(null, {}), 500)
          }
        })
        const port = await new Promise<number>((resolve, reject) => {
          slow.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p)))
        })
        const hurried = new EmqxExhookClient({ address: `127.0.0.1:${port}`, version })
        try {
          await assert.rejects(hurried.onClientConnected({ clientid: 'x' }, { deadlineMs: 50 }), (error: grpc.ServiceError) => error.code === grpc.status.DEADLINE_EXCEEDED)
        } finally {
          hurried.close()
          slow.forceShutdown()
        }
      })
    })
  }

  it('names the hooks each version registers', () => {
    const hookRpc = (v: ExhookVersion, hook: string): string | undefined => EXHOOK_HOOK_RPCS[v][hook]
    assert.equal(hookRpc('v1', 'client.check_acl'), 'OnClientCheckAcl')
    assert.equal(hookRpc('v1', 'session.takeovered'), 'OnSessionTakeovered')
    assert.equal(hookRpc('v2', 'client.authorize'), 'OnClientAuthorize')
    assert.equal(hookRpc('v3', 'session.takenover'), 'OnSessionTakenover')
    for (const v of EXHOOK_VERSIONS) {
      assert.deepEqual(exhookProtocol(v).rpcs, EXHOOK_RPCS[v])
      assert.deepEqual(Object.values(EXHOOK_HOOK_RPCS[v]).sort(), EXHOOK_RPCS[v].filter((rpc) => !rpc.startsWith('OnProvider')).sort())
    }
    assert.throws(() => uint64ToNumber('18446744073709551615'), RangeError)
  })
})

/** Whether a top-level field `field` with wire type `wireType` occurs in the message bytes. */
function containsField(bytes: Buffer, field: number, wireType: number): boolean {
  let i = 0
  while (i < bytes.length) {
    const [tag, afterTag] = readVarint(bytes, i)
    const type = tag & 7
    if (tag >>> 3 === field && type === wireType) return true
    i = afterTag
    if (type === 0) i = readVarint(bytes, i)[1]
    else if (type === 2) {
      const [length, afterLength] = readVarint(bytes, i)
      i = afterLength + length
    } else if (type === 1) i += 8
    else if (type === 5) i += 4
    else return false
  }
  return false
}

function readVarint(bytes: Buffer, start: number): [number, number] {
  let value = 0
  let shift = 0
  let i = start
  for (;;) {
    const byte = bytes[i++] ?? 0
    value += (byte & 0x7f) * 2 ** shift
    if (byte < 0x80 || i >= bytes.length) return [value, i]
    shift += 7
  }
}
