/**
 * EMQX mode: which connection a hook call belongs to when the calls themselves cannot say —
 * ExHook carries no connect time, EMQX 4 stamps seconds, clocks differ, listings shift. The
 * hub applies such calls in arrival order and then asks EMQX's REST API (the stand-in) which
 * connection it holds (docs/emqx-mode.md, "Which connection an event belongs to").
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { ReconcileReport } from '../src/emqx/reconcile.js'
import { oneHubOnly, startEmqxTestHub, type EmqxTestHub } from './helpers/emqx-hub.js'

interface SessionView {
  clientId: string
  connected: boolean
  node: string
  peerPort: number | null
  cleanStart: boolean
  expiryInterval: number
  mountpoint: string
  topics: { brokerTopic: string; qos: number }[]
}

/** Longer than the hub's wait before it checks an unproven takeover with EMQX (1 s). */
const CHECK_WAIT_MS = 1800

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** In the replicated run a node's session.resumed and its client.connected go to different replicas. */
const RESUMED_MARK_IN_ONE_REPLICA = oneHubOnly('the session.resumed mark that makes the next client.connected persistent is kept by the replica that answered it (ExhookServer.resumed)')
/** In the replicated run the connect that took over and the late disconnect go to different replicas. */
const TAKEOVER_MARK_IN_ONE_REPLICA = oneHubOnly('the takeover a disconnect without a peer port is doubted against is remembered by the replica that answered the connect (EmqxSource.takeovers)')

describe('EMQX mode: connections ordered when the hooks cannot order them', () => {
  let t: EmqxTestHub
  /** A test's hook on the stand-in: run once a request's reply is made, before it is sent. */
  let afterReply: ((path: string) => void) | undefined
  before(async () => {
    t = await startEmqxTestHub({ version: 5, standinOptions: { afterReply: async (_method, path) => afterReply?.(path) } })
  })
  after(() => t.stop())

  const session = async (id: string) => (await t.api<SessionView>('GET', `/v1/sessions/${id}`)).body
  /** Whether the hub asked EMQX about `id` (GET /clients/{id}) since the stand-in's request `mark`. */
  const askedAbout = (id: string, mark: number) => t.standin.requests.slice(mark).some((r) => r.path === `/api/v5/clients/${id}`)

  it("a late ExHook connect of the taken-over connection is corrected from EMQX's API", async () => {
    const id = 'late-connect'
    await t.createDevice(id)
    const nodeA = t.exhook('v3', 'emqx@node-a')
    const nodeB = t.exhook('v3', 'emqx@node-b')
    const onA = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-a', peerport: 50001 }
    const onB = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-b', peerport: 50002 }
    // EMQX holds the connection on node B with one subscription
    t.standin.addClient({ clientid: id, username: id, node: 'emqx@node-b', ipAddress: '127.0.0.1', port: 50002, mountpoint: `${id}/` })
    t.standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
    await nodeB.onClientConnected(onB)
    await nodeB.onSessionSubscribed(onB, `${id}/v1/devices/me/attributes`, { qos: 1 })
    // node A's connect of the older connection arrives last: ExHook gives no time to order it by
    await nodeA.onClientConnected(onA)
    assert.equal((await session(id)).node, 'emqx@node-a', 'applied in arrival order at first')
    await sleep(CHECK_WAIT_MS)
    const now = await session(id)
    assert.deepEqual([now.connected, now.node, now.peerPort], [true, 'emqx@node-b', 50002], "EMQX's answer decides")
    assert.deepEqual(now.topics.map((s) => s.brokerTopic), [`${id}/v1/devices/me/attributes`])
    // and node A's disconnect of the old connection changes nothing
    await nodeA.onClientDisconnected(onA, 'takenover')
    assert.equal((await session(id)).node, 'emqx@node-b')
    t.standin.removeClient(id)
  })

  it('an ExHook takeover EMQX confirms stays; a connection EMQX no longer has is ended by the check', async () => {
    const id = 'confirmed-takeover'
    await t.createDevice(id)
    const emqx = t.exhook('v3', 'emqx@node-a')
    const first = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-a', peerport: 50011 }
    const second = { ...first, peerport: 50012 }
    t.standin.addClient({ clientid: id, username: id, node: 'emqx@node-a', ipAddress: '127.0.0.1', port: 50012, mountpoint: `${id}/` })
    await emqx.onClientConnected(first)
    const mark = t.standin.requests.length
    await emqx.onClientConnected(second)
    await sleep(CHECK_WAIT_MS)
    assert.ok(askedAbout(id, mark), 'the takeover was checked with EMQX')
    assert.deepEqual([(await session(id)).connected, (await session(id)).peerPort], [true, 50012])

    // a takeover whose new connection EMQX does not hold (it went away, the disconnect was lost)
    t.standin.removeClient(id)
    await emqx.onClientConnected({ ...first, peerport: 50013 })
    await sleep(CHECK_WAIT_MS)
    assert.equal((await t.api('GET', `/v1/sessions/${id}`)).status, 404, 'a clean session EMQX does not hold ends')
  })

  it("clocks that differ: a connect is never refused because EMQX's clock runs ahead of the hub's", async () => {
    const id = 'skewed-clock'
    await t.createDevice(id)
    const hourAhead = Date.now() + 3_600_000
    // WebHook stamps the connection with EMQX's clock, an hour ahead of the hub's
    await t.webhook({ event: 'client.connected', node: 'emqx@node-a', clientid: id, username: id, peername: '10.0.0.1:1111', mountpoint: `${id}/`, clean_start: true, connected_at: hourAhead })
    // a newer connection reported over ExHook, which has only the hub's clock
    t.standin.addClient({ clientid: id, username: id, node: 'emqx@node-b', ipAddress: '10.0.0.2', port: 2222, mountpoint: `${id}/`, connectedAt: hourAhead + 1000 })
    await t.exhook('v3', 'emqx@node-b').onClientConnected({ clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-b', peerhost: '10.0.0.2', peerport: 2222 })
    assert.equal((await session(id)).node, 'emqx@node-b')
    // and a late WebHook connect of the first connection, stamped by EMQX, is still recognised
    const mark = t.standin.requests.length
    const late = await t.webhook({ event: 'client.connected', node: 'emqx@node-a', clientid: id, username: id, peername: '10.0.0.1:1111', mountpoint: `${id}/`, clean_start: true, connected_at: hourAhead })
    assert.equal((late.body as { applied: boolean }).applied, true, 'arrival order (one side has no EMQX time), then the check')
    await sleep(CHECK_WAIT_MS)
    assert.ok(askedAbout(id, mark), 'the late connect was checked with EMQX')
    assert.equal((await session(id)).node, 'emqx@node-b')
    t.standin.removeClient(id)
  })

  it("the reconcile catches up with a connection EMQX stamped before the hub's clock", async () => {
    const id = 'behind-clock'
    await t.createDevice(id)
    // the hub heard of one connection over ExHook (hub clock)...
    await t.exhook('v2', 'emqx@node-a').onClientConnected({ clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-a', peerhost: '10.0.1.1' })
    // ...but EMQX holds another, stamped an hour "earlier" by a clock that runs behind
    t.standin.addClient({ clientid: id, username: id, node: 'emqx@node-b', ipAddress: '10.0.1.2', port: 3333, mountpoint: `${id}/`, connectedAt: Date.now() - 3_600_000 })
    t.standin.subscribe(id, `${id}/v1/devices/me/commands`, 1)
    const report = (await t.api<ReconcileReport>('POST', '/v1/reconcile')).body
    assert.equal(report.error, null)
    const now = await session(id)
    assert.deepEqual([now.connected, now.node, now.peerPort], [true, 'emqx@node-b', 3333])
    assert.deepEqual(now.topics.map((s) => s.brokerTopic), [`${id}/v1/devices/me/commands`], 'and its topics are fixed too')
    t.standin.removeClient(id)
    await t.api('POST', '/v1/reconcile')
  })

  it('EMQX 4 seconds: two connects in one second order by arrival, then by what EMQX holds', async () => {
    const id = 'same-second'
    await t.createDevice(id)
    const second = Math.floor(Date.now() / 1000)
    const v4 = (node: string, ip: string) => ({ action: 'client_connected', node, clientid: id, username: id, ipaddress: ip, keepalive: 60, proto_ver: 4, connected_at: second })
    t.standin.addClient({ clientid: id, username: id, node: 'emqx@node-a', ipAddress: '10.0.2.1', port: 4444, mountpoint: `${id}/` })
    // node-b's stamp sorts after node-a's name, but node-a's connection is the newer one
    await t.webhook(v4('emqx@node-b', '10.0.2.2'))
    const mark = t.standin.requests.length
    const answer = await t.webhook(v4('emqx@node-a', '10.0.2.1'))
    assert.equal((answer.body as { applied: boolean }).applied, true, 'the same second orders nothing: arrival decides')
    assert.equal((await session(id)).node, 'emqx@node-a')
    await sleep(CHECK_WAIT_MS)
    assert.ok(askedAbout(id, mark), 'the same-second takeover was checked with EMQX')
    assert.equal((await session(id)).node, 'emqx@node-a', 'and EMQX confirms it')
    t.standin.removeClient(id)
    await t.api('POST', '/v1/reconcile')
  })

  it('without a peer port, a late plain disconnect of the old connection after a takeover is checked with EMQX', { skip: TAKEOVER_MARK_IN_ONE_REPLICA }, async () => {
    const id = 'no-port-disconnect'
    await t.createDevice(id)
    const second = Math.floor(Date.now() / 1000)
    const base = { node: 'emqx@node-a', clientid: id, username: id, ipaddress: '10.0.3.1' }
    t.standin.addClient({ clientid: id, username: id, node: 'emqx@node-a', ipAddress: '10.0.3.1', port: 6666, mountpoint: `${id}/` })
    // EMQX 4 WebHook: the takeover is proven by connected_at (two seconds apart)...
    await t.webhook({ action: 'client_connected', ...base, connected_at: second - 2 })
    await t.webhook({ action: 'client_connected', ...base, connected_at: second })
    // ...but the old connection's plain close carries no port to tell it from the new one's
    await t.webhook({ action: 'client_disconnected', ...base, reason: 'sock_closed' })
    assert.equal((await t.api('GET', `/v1/sessions/${id}`)).status, 404, 'taken for the live connection at first')
    await sleep(CHECK_WAIT_MS)
    const back = await session(id)
    assert.deepEqual([back.connected, back.node], [true, 'emqx@node-a'], 'EMQX still holds it: the session is back')
    t.standin.removeClient(id)
    await t.api('POST', '/v1/reconcile')
  })

  it("session.terminated of an older connection does not end the client's newer offline session", { skip: RESUMED_MARK_IN_ONE_REPLICA }, async () => {
    const id = 'terminated-late'
    await t.createDevice(id)
    const nodeA = t.exhook('v3', 'emqx@node-a')
    const nodeB = t.exhook('v3', 'emqx@node-b')
    const onA = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-a', peerport: 50021 }
    const onB = { clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@node-b', peerport: 50022 }
    // a persistent session, resumed on node B and gone offline there
    await nodeB.onSessionResumed(onB)
    await nodeB.onClientConnected(onB)
    await nodeB.onSessionSubscribed(onB, `${id}/v1/devices/me/attributes`, { qos: 1 })
    await nodeB.onClientDisconnected(onB, 'sock_closed')
    // node A's late word that its (older) session ended
    await nodeA.onSessionTerminated(onA, 'expired')
    const kept = await session(id)
    assert.deepEqual([kept.connected, kept.cleanStart], [false, false])
    assert.equal((await t.api<{ data: unknown[] }>('GET', `/v1/subscriptions?deviceId=${id}`)).body.data.length, 1)
    // node B's own word ends it
    await nodeB.onSessionTerminated(onB, 'expired')
    assert.equal((await t.api('GET', `/v1/sessions/${id}`)).status, 404)
  })

  it("the reconcile corrects a live session's clean start from EMQX's listing, so its end keeps it", async () => {
    const id = 'corrected-clean-start'
    await t.createDevice(id)
    const emqx = t.exhook('v3', 'emqx@127.0.0.1')
    const client = { clientid: id, username: id, mountpoint: `${id}/`, peerport: 50031 }
    // the first connection of a persistent session: ExHook says nothing of clean start
    await emqx.onClientConnected(client)
    await emqx.onSessionSubscribed(client, `${id}/v1/devices/me/attributes`, { qos: 1 })
    assert.equal((await session(id)).cleanStart, true)
    t.standin.addClient({ clientid: id, username: id, ipAddress: '127.0.0.1', port: 50031, mountpoint: `${id}/`, cleanStart: false, expiryInterval: 7200 })
    t.standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
    const report = (await t.api<ReconcileReport>('POST', '/v1/reconcile')).body
    assert.deepEqual([report.sessionsCorrected, report.sessionsAdded], [1, 0])
    const corrected = await session(id)
    assert.deepEqual([corrected.connected, corrected.cleanStart, corrected.expiryInterval], [true, false, 7200])
    // a correction is not a new connection: the subscription entity was not re-made
    await emqx.onClientDisconnected(client, 'sock_closed')
    const offline = await session(id)
    assert.equal(offline.connected, false, 'a persistent session goes offline instead of ending')
    assert.deepEqual(offline.topics.map((s) => s.brokerTopic), [`${id}/v1/devices/me/attributes`])
    t.standin.removeClient(id)
    await emqx.onSessionTerminated(client, 'expired')
  })

  it('a live client a shifting listing skipped is asked about before it is ended', async () => {
    const id = 'skipped-by-paging'
    await t.createDevice(id)
    await t.webhook({ event: 'client.connected', node: 'emqx@127.0.0.1', clientid: id, username: id, peername: '127.0.0.1:5555', mountpoint: `${id}/`, clean_start: true })
    t.standin.addClient({ clientid: id, username: id, ipAddress: '127.0.0.1', port: 5555, mountpoint: `${id}/` })
    t.standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
    await t.webhook({ event: 'session.subscribed', node: 'emqx@127.0.0.1', clientid: id, username: id, peerhost: '127.0.0.1', topic: `${id}/v1/devices/me/attributes`, qos: 1 })
    // the client is missing from the pages of clients listed (others left mid-listing), and back
    // for a lookup: restored as soon as that listing's reply is made, before the hub can read it
    // (the reconcile lists subscriptions first)
    const standin = t.standin
    const held = standin.clients.get(id)!
    const heldSubs = standin.subscriptions.filter((s) => s.clientid === id)
    standin.removeClient(id)
    const mark = standin.requests.length
    afterReply = (path) => {
      if (!path.startsWith('/api/v5/clients?')) return
      afterReply = undefined
      standin.clients.set(id, held)
      standin.subscriptions.push(...heldSubs)
    }
    const report = await t.api<ReconcileReport>('POST', '/v1/reconcile').then((answer) => answer.body).finally(() => (afterReply = undefined))
    assert.equal(report.ghostsEnded, 0)
    const kept = await session(id)
    assert.equal(kept.connected, true)
    assert.deepEqual(kept.topics.map((s) => s.brokerTopic), [`${id}/v1/devices/me/attributes`])
    assert.ok(standin.requests.slice(mark).some((r) => r.path === `/api/v5/clients/${id}`), 'EMQX was asked about the client')
    standin.removeClient(id)
    await t.api('POST', '/v1/reconcile')
  })

  it("a mountpoint that is not the device's own still confines the device to {deviceId}/", async () => {
    const id = 'other-mountpoint'
    const device = await t.createDevice(id)
    const emqx = t.exhook('v3')
    const client = { clientid: id, username: id, password: device.token, mountpoint: 'tenant-7/', peerport: 50041 }
    const may = async (topic: string) => (await emqx.onClientAuthorize(client, 'PUBLISH', topic, true)).bool_result
    assert.equal(await may('v1/devices/me/telemetry'), false, 'a bare device topic would land outside its namespace')
    assert.equal(await may('someone-else/v1/devices/me/telemetry'), false)
    assert.equal(await may(`${id}/v1/devices/me/telemetry`), true)
    await emqx.onClientConnected(client)
    assert.equal((await session(id)).mountpoint, `tenant-7/${id}/`, "the device's topics live under both")
    await emqx.onClientDisconnected(client, 'normal')
  })
})
