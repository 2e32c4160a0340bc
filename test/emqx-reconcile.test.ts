/**
 * EMQX mode's reconcile against the REST stand-in (EMQX 4 and 5 paging): the hub down while the
 * broker's clients change, a reconcile racing live hook calls, EMQX's API refusing or down at
 * start, and a reconcile run when EMQX loads the provider.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { RECONCILING } from '../src/emqx/emqx-carrier.js'
import type { ReconcileReport } from '../src/emqx/reconcile.js'
import { startEmqxTestHub, EMQX_KEY, EMQX_REPLICAS, EMQX_SECRET } from './helpers/emqx-hub.js'
import { startEmqxRestStandin } from './helpers/emqx-rest-standin.js'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { SseStream } from './helpers/sse.js'

interface SessionView {
  clientId: string
  connected: boolean
  topics: { brokerTopic: string; qos: number }[]
}

const NODE = 'emqx@127.0.0.1'

/** A WebHook connect body naming the same connection the stand-in lists. */
const connectBody = (id: string, port: number) => ({ event: 'client.connected', node: NODE, clientid: id, username: id, peername: `127.0.0.1:${port}`, mountpoint: `${id}/`, clean_start: true })

for (const version of [4, 5] as const) {
  describe(`EMQX ${version}: reconcile`, () => {
    it("after a restart, the hub's view equals the broker's", async () => {
      const first = await startEmqxTestHub({ version })
      const { standin, dataDir } = first
      for (const id of ['gone', 'stays', 'missed']) await first.createDevice(id)
      // before the restart the hub heard of two connections
      for (const [id, port] of [['gone', 1001], ['stays', 1002]] as const) {
        standin.addClient({ clientid: id, username: id, ipAddress: '127.0.0.1', port, mountpoint: `${id}/` })
        await first.webhook(connectBody(id, port))
      }
      await first.webhook({ event: 'session.subscribed', node: NODE, clientid: 'stays', username: 'stays', peerhost: '127.0.0.1', topic: 'stays/v1/devices/me/attributes', qos: 1 })
      standin.subscribe('stays', 'stays/v1/devices/me/attributes', 1)
      await first.stop({ keepData: true, keepStandin: true })

      // while the hub was down: one left, one changed its topics, one came
      standin.removeClient('gone')
      standin.unsubscribe('stays', 'stays/v1/devices/me/attributes')
      standin.subscribe('stays', 'stays/v1/devices/me/commands', 1)
      standin.addClient({ clientid: 'missed', username: 'missed', ipAddress: '127.0.0.1', port: 1003, mountpoint: 'missed/' })
      standin.subscribe('missed', 'missed/v1/devices/me/#', 1)

      const t = await startEmqxTestHub({ version, standin, dataDir })
      try {
        assert.equal((await t.api('GET', '/v1/sessions/gone')).status, 404)
        const stays = (await t.api<SessionView>('GET', '/v1/sessions/stays')).body
        assert.deepEqual(stays.topics.map((s) => s.brokerTopic), ['stays/v1/devices/me/commands'])
        const missed = (await t.api<SessionView>('GET', '/v1/sessions/missed')).body
        assert.equal(missed.connected, true)
        assert.deepEqual(missed.topics.map((s) => s.brokerTopic), ['missed/v1/devices/me/#'])
        const entities = (await t.api<{ data: { properties: string[] }[] }>('GET', '/v1/subscriptions?deviceId=missed')).body.data
        assert.deepEqual(entities.map((e) => e.properties.length), [4], 'v1/devices/me/# receives all four change topics')
        const report = (await t.api<ReconcileReport>('GET', '/v1/reconcile/last')).body
        assert.deepEqual([report.trigger, report.error], ['start', null])
        // each replica reconciles at its start: which run made which fix is a race, so one replica's report need not hold them all
        if (EMQX_REPLICAS === 1) assert.deepEqual([report.ghostsEnded, report.sessionsAdded, report.topicsAdded, report.topicsRemoved], [1, 1, 2, 1])
      } finally {
        await t.stop()
      }
    })

    it("records a connection the hub missed with EMQX's topics in the same change: never seen subscribed to nothing, pushed to at once", async () => {
      // a heartbeat a second: the stream filtered to two types reaches the log's head by it
      const t = await startEmqxTestHub({ version, overrides: { eventsHeartbeat: 1 } })
      try {
        const id = 'missed-with-topics'
        await t.createDevice(id)
        t.standin.addClient({ clientid: id, username: id, ipAddress: '127.0.0.1', port: 1010, mountpoint: `${id}/` })
        t.standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
        const report = (await t.api<ReconcileReport>('POST', '/v1/reconcile')).body
        assert.equal(report.error, null)
        // another replica's start reconcile may have recorded it first
        if (EMQX_REPLICAS === 1) assert.deepEqual([report.sessionsAdded, report.topicsAdded], [1, 1])

        // the change log (as its event stream shows it) never held the new connection without its topic
        const head = t.hub.store.following().applied
        const { status, stream } = await SseStream.open(`${t.httpUrl}/v1/events?after=0&types=session.connected,session.subscribed`, { authorization: BASIC_ADMIN })
        assert.equal(status, 200)
        await stream!.until((s) => Number(s.lastEventId) >= head, 20_000, 'the stream at the head of the log')
        const events = stream!.events<{ type: string; clientId: string; session: SessionView }>().filter((e) => e.clientId === id)
        stream!.close()
        assert.deepEqual(
          events.map((e) => [e.type, e.session.topics.map((s) => s.brokerTopic)]),
          [['session.connected', [`${id}/v1/devices/me/attributes`]]]
        )
        // and the entity is there to push to (after the run: the moment within it is what the log shows above)
        const pushed = await t.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${id}/attributes`, { mode: 'eco' })
        assert.deepEqual(pushed.body.pushedTo, [id], JSON.stringify(pushed.body))
        assert.ok(t.standin.published.some((m) => m.topics.includes(`${id}/v1/devices/me/attributes`)), 'EMQX was asked to publish it')
      } finally {
        await t.stop()
      }
    })

    it('never undoes hook calls that arrive while it lists the broker', async () => {
      let duringListing: (() => Promise<void>) | undefined
      const standin = await startEmqxRestStandin({
        version,
        apiKey: EMQX_KEY,
        apiSecret: EMQX_SECRET,
        beforeReply: async (_method, path) => {
          if (!path.includes('/subscriptions') || !duringListing) return
          const act = duringListing
          duringListing = undefined
          await act()
        }
      })
      const t = await startEmqxTestHub({ version, standin })
      try {
        for (const id of ['leaves', 'arrives']) await t.createDevice(id)
        standin.addClient({ clientid: 'leaves', username: 'leaves', ipAddress: '127.0.0.1', port: 2001, mountpoint: 'leaves/' })
        await t.webhook(connectBody('leaves', 2001))
        // the clients page has been read when this runs: it still lists `leaves`, not `arrives`
        duringListing = async () => {
          standin.removeClient('leaves')
          await t.webhook({ event: 'client.disconnected', node: NODE, clientid: 'leaves', username: 'leaves', peername: '127.0.0.1:2001', reason: 'normal' })
          await t.webhook(connectBody('arrives', 2002))
          standin.addClient({ clientid: 'arrives', username: 'arrives', ipAddress: '127.0.0.1', port: 2002, mountpoint: 'arrives/' })
        }
        const report = (await t.api<ReconcileReport>('POST', '/v1/reconcile')).body
        assert.equal(duringListing, undefined, 'the hook calls ran during the listing')
        assert.equal(report.error, null)
        assert.equal((await t.api('GET', '/v1/sessions/leaves')).status, 404, 'not brought back from the stale listing')
        assert.equal((await t.api<SessionView>('GET', '/v1/sessions/arrives')).body.connected, true, 'not ended as a ghost')
        assert.ok(report.skippedChanged >= 1)
      } finally {
        await t.stop()
      }
    })

    it('is ready while its first reconcile is under way: hook calls are answered, and /readyz says it is still reconciling', async () => {
      // EMQX's listing answers only when released: the start reconcile stays under way
      let release!: () => void
      const listingHeld = new Promise<void>((resolve) => (release = resolve))
      const beforeReply = async (method: string, path: string) => {
        if (method === 'GET' && /\/(subscriptions|clients)(\?|$)/.test(path)) await listingHeld
      }
      const t = await startEmqxTestHub({ version, standinOptions: { beforeReply }, waitReady: false })
      try {
        const serving = await waitForReadyz(t, (status, detail) => status === 200 && detail === RECONCILING)
        assert.equal(serving, RECONCILING)
        await t.createDevice('early')
        t.standin.addClient({ clientid: 'early', username: 'early', ipAddress: '127.0.0.1', port: 4100, mountpoint: 'early/' })
        await t.webhook(connectBody('early', 4100))
        assert.equal((await t.api<SessionView>('GET', '/v1/sessions/early')).body.connected, true, 'a connect during the start reconcile is recorded')
        release()
        await t.ready(15_000)
        const report = (await t.api<ReconcileReport>('GET', '/v1/reconcile/last')).body
        assert.deepEqual([report.trigger, report.error], ['start', null])
        assert.equal((await t.api<SessionView>('GET', '/v1/sessions/early')).body.connected, true)
      } finally {
        release()
        await t.stop()
      }
    })

    it("is not ready while EMQX's API refuses the credentials or is down, and recovers", async () => {
      const standin = await startEmqxRestStandin({ version, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET })
      standin.setAuthFailure(true)
      const t = await startEmqxTestHub({ version, standin, waitReady: false })
      try {
        const refused = await waitFor(t, (detail) => detail.includes('IOTHUB_EMQX_API_KEY'))
        assert.match(refused, /answered 401/)
        standin.setAuthFailure(false)
        standin.setDown(true)
        await waitFor(t, (detail) => /503|cannot be reached/.test(detail))
        standin.setDown(false)
        await t.ready(15_000)
      } finally {
        await t.stop()
      }
    })
  })
}

describe('reconcile triggers', () => {
  it('runs every IOTHUB_RECONCILE_INTERVAL seconds, ending a ghost the hooks never reported', async () => {
    const t = await startEmqxTestHub({ version: 5, overrides: { reconcileInterval: 1 } })
    try {
      await t.webhook(connectBody('ghost', 4001)) // EMQX never lists it: its disconnect was lost
      const connectedAt = Date.now()
      // an interval run that began before the connect was stored (a slow webhook call on a
      // loaded machine) could not have seen it: the first run after it must end it
      const report = await reportOf(t, 'interval', connectedAt)
      // each replica runs the interval reconcile: the run reported may be one that found the ghost already ended by another
      if (EMQX_REPLICAS === 1) assert.equal(report.ghostsEnded, 1)
      assert.equal((await t.api('GET', '/v1/sessions/ghost')).status, 404)
    } finally {
      await t.stop()
    }
  })

  it('runs when EMQX loads the provider, and pages through many clients', async () => {
    const t = await startEmqxTestHub({ version: 5 })
    try {
      for (let i = 0; i < 2500; i++) t.standin.addClient({ clientid: `many-${i}`, username: `many-${i}`, ipAddress: '127.0.0.1', port: 10_000 + i })
      await t.exhook('v2').onProviderLoaded()
      const report = await reportOf(t, 'provider_loaded')
      assert.equal(report.sessionsAdded, 2500)
      assert.ok(report.pages >= 4, `${report.pages} pages of at most 1,000`)
      const listed = (await t.api<{ data: unknown[]; meta: { count: number } }>('GET', '/api/v4/clients?_limit=1')).body
      assert.equal(listed.meta.count, 2500)
    } finally {
      await t.stop()
    }
  })
})

/** Waits for the report of a reconcile run by `trigger` (at most 10 s), begun at or after `since` when given. */
async function reportOf(t: Awaited<ReturnType<typeof startEmqxTestHub>>, trigger: ReconcileReport['trigger'], since = 0): Promise<ReconcileReport> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const { status, body } = await t.api<ReconcileReport>('GET', '/v1/reconcile/last')
    if (status === 200 && body.trigger === trigger && body.startedAt >= since) return body
    if (Date.now() > deadline) throw new Error(`no reconcile run by ${trigger}; last: ${JSON.stringify(body)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Waits until /readyz's status and its EMQX check's detail are what `matches` accepts; returns the detail. */
async function waitForReadyz(t: Awaited<ReturnType<typeof startEmqxTestHub>>, matches: (status: number, detail: string) => boolean): Promise<string> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const { status, body } = await t.api<{ checks: Record<string, { ok: boolean; detail?: string }> }>('GET', '/readyz', undefined, null)
    const detail = body.checks.emqx?.detail ?? ''
    if (matches(status, detail)) return detail
    if (Date.now() > deadline) throw new Error(`readyz never said so: ${status} ${JSON.stringify(body)}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/** Waits until /readyz names the EMQX check failing with a detail `matches` accepts; returns it. */
function waitFor(t: Awaited<ReturnType<typeof startEmqxTestHub>>, matches: (detail: string) => boolean): Promise<string> {
  return waitForReadyz(t, (status, detail) => status === 503 && matches(detail))
}
