/**
 * In EMQX mode a push is stored with its change too (src/devices/push-journal.ts), and the journal
 * is published by another run (src/emqx/push-replay.ts): a push EMQX's REST API did not take (the
 * stand-in down, as EMQX's API can be) stays stored, and once its replica's run is over — killed
 * here, and started again — it is published. Commands wait for the ones before them to their
 * device. The embedded broker's side: push-journal.test.ts.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { startEmqxChildHub, type ChildHub, type EmqxChildHub } from './helpers/child-hub.js'
import { EMQX_KEY, EMQX_SECRET, WEBHOOK_SECRET } from './helpers/emqx-hub.js'
import { startEmqxRestStandin, type EmqxRestStandin, type EmqxRestStandinOptions } from './helpers/emqx-rest-standin.js'
import { eventually, tempDir } from './helpers/hub.js'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { metricValue } from './helpers/metrics.js'
import { createDatabase } from './helpers/postgres.js'
import { PUSH_WITHIN_MS } from '../src/config.js'

/** A database, a data dir and EMQX's REST API (the stand-in) for hubs in EMQX mode; `children` killed, and all of it gone, after the test. */
async function emqxSetting(t: { after: (fn: () => Promise<void>) => void }, children: Pick<ChildHub, 'kill'>[], standinOptions: Pick<EmqxRestStandinOptions, 'beforeReply'> = {}) {
  const database = await createDatabase('iothub_push_journal')
  const dataDir = tempDir('iothub-push-journal-')
  const standin = await startEmqxRestStandin({ version: 5, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET, ...standinOptions })
  t.after(async () => {
    await Promise.all(children.map((c) => c.kill('SIGKILL')))
    await standin.close()
    await database.drop()
    rmSync(dataDir, { recursive: true, force: true })
  })
  return { database, dataDir, standin }
}

/**
 * Between tries of the pushes EMQX refused, and looks for those of runs that are over, ms: the
 * hubs here try every second rather than every 10 s, so the tests wait for a try that long.
 */
const RETRY_INTERVAL_MS = 1000

/** A hub in EMQX mode on PostgreSQL, publishing through the REST stand-in at `emqxApi`. */
function emqxEnv(databaseUrl: string, emqxApi: string, node: string): Record<string, string> {
  return {
    IOTHUB_PUSH_RETRY_INTERVAL: String(RETRY_INTERVAL_MS),
    IOTHUB_NODE: node,
    IOTHUB_STORE: 'postgres',
    IOTHUB_DATABASE_URL: databaseUrl,
    IOTHUB_EMQX_API: emqxApi,
    IOTHUB_EMQX_API_KEY: EMQX_KEY,
    IOTHUB_EMQX_API_SECRET: EMQX_SECRET,
    IOTHUB_EMQX_VERSION: '5',
    IOTHUB_WEBHOOK_SECRET: WEBHOOK_SECRET
  }
}

/**
 * Device `id` made, connected to EMQX (the stand-in) and subscribed to its attributes, and the hub
 * told so by EMQX's WebHook. EMQX's listing and its WebHook describe the same connection (node,
 * peer, connect time), as EMQX's do: a reconcile finds nothing to fix. (Else it records the
 * listing's as a connection the hub missed, whose topics it adds a moment after: a push in that
 * moment would find no one subscribed.)
 */
async function connectedThroughEmqx(hub: EmqxChildHub, standin: EmqxRestStandin, id: string): Promise<void> {
  assert.equal((await hub.api('POST', '/v1/devices', { id })).status, 201)
  const listed = standin.addClient({ clientid: id, username: id, mountpoint: `${id}/`, node: 'emqx@10.0.0.3', ipAddress: '10.0.0.4', port: 1234 })
  standin.subscribe(id, `${id}/v1/devices/me/attributes`, 1)
  const hook = async (body: object) => {
    const answer = await fetch(`${hub.httpUrl}/v1/hooks/emqx`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-iothub-webhook-secret': WEBHOOK_SECRET }, body: JSON.stringify(body) })
    assert.equal(answer.status, 200, await answer.text())
  }
  const base = { node: 'emqx@10.0.0.3', clientid: id, username: id }
  await hook({ event: 'client.connected', ...base, peername: '10.0.0.4:1234', mountpoint: `${id}/`, connected_at: listed.connectedAt, clean_start: listed.cleanStart, expiry_interval: listed.expiryInterval, keepalive: listed.keepalive, proto_ver: listed.protoVer })
  await hook({ event: 'session.subscribed', ...base, peerhost: '10.0.0.4', topic: `${id}/v1/devices/me/attributes`, qos: 1 })
}

/** Device `id`, connected through EMQX, subscribed to its commands too, as EMQX lists it, and the hub told so by EMQX's WebHook. */
async function subscribedToCommands(hub: EmqxChildHub, standin: EmqxRestStandin, id: string): Promise<void> {
  // listed by EMQX too: a replica's reconcile with EMQX's API keeps what it shows
  standin.subscribe(id, `${id}/v1/devices/me/commands`, 1)
  const hook = await fetch(`${hub.httpUrl}/v1/hooks/emqx`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-iothub-webhook-secret': WEBHOOK_SECRET },
    body: JSON.stringify({ event: 'session.subscribed', node: 'emqx@10.0.0.3', clientid: id, username: id, peerhost: '10.0.0.4', topic: `${id}/v1/devices/me/commands`, qos: 1 })
  })
  assert.equal(hook.status, 200, await hook.text())
}

/** One hub in EMQX mode (`node`) in an `emqxSetting`, with device `id` connected through EMQX and subscribed to its attributes. */
async function emqxHubWithDevice(t: { after: (fn: () => Promise<void>) => void }, children: Pick<ChildHub, 'kill'>[], node: string, id: string, env: Record<string, string> = {}) {
  const { database, dataDir, standin } = await emqxSetting(t, children)
  const hub = await startEmqxChildHub(dataDir, { env: { ...emqxEnv(database.url, standin.url, node), ...env } })
  children.push(hub)
  await connectedThroughEmqx(hub, standin, id)
  return { database, standin, hub }
}

/** The pushes of `property` EMQX (the stand-in) took for device `id`, in order, parsed. */
function publishedOf(standin: EmqxRestStandin, id: string, property: 'attributes' | 'commands'): Record<string, unknown>[] {
  return standin.published.filter((p) => p.topics.includes(`${id}/v1/devices/me/${property}`)).map((p) => JSON.parse(p.payload.toString('utf8')) as Record<string, unknown>)
}

/** An EMQX-mode setting whose node `node` can be started (again) with `start()`: one data dir, one database, one stand-in. */
async function restartableEmqxNode(t: { after: (fn: () => Promise<void>) => void }, children: Pick<ChildHub, 'kill'>[], node: string) {
  const { database, dataDir, standin } = await emqxSetting(t, children)
  const env = emqxEnv(database.url, standin.url, node)
  const start = async (): Promise<EmqxChildHub> => {
    const hub = await startEmqxChildHub(dataDir, { env })
    children.push(hub)
    return hub
  }
  return { database, standin, start }
}

/** The attributes pushes EMQX (the stand-in) took for device `id`, in order, parsed. */
function attributesPublished(standin: EmqxRestStandin, id: string): Record<string, unknown>[] {
  return publishedOf(standin, id, 'attributes')
}

/** The names of the commands EMQX (the stand-in) took for device `id`, in order. */
function commandsPublished(standin: EmqxRestStandin, id: string): string[] {
  return publishedOf(standin, id, 'commands').map((command) => command.name as string)
}

/** The command `name` sent to device `id` through `hub`'s API, and its answer. */
function sendCommand(hub: Pick<EmqxChildHub, 'api'>, id: string, name: string) {
  return hub.api<{ pushedTo: string[]; pushError?: string; message?: string }>('POST', `/v1/devices/${id}/commands`, { name })
}

/** `answer`, of a command sent through `hub`: stored and held behind an earlier one, EMQX not tried (the hub's only command so far). */
async function heldUntried(hub: Pick<EmqxChildHub, 'api'>, answer: { status: number; body: { pushError?: string } }): Promise<void> {
  assert.equal(answer.status, 200, JSON.stringify(answer.body))
  assert.match(answer.body.pushError ?? '', /^stored, not pushed: an earlier command to this device waits for the broker/, JSON.stringify(answer.body))
  assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="held"}'), 1)
  assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="failed"}'), 0, 'it was not tried')
}

/**
 * Holds EMQX's answer to the next publish asked for after `holdNext()`, until `letGo()`: a publish
 * on its way (the stand-in records a publish once it answers). `heldAt()`: when it was held, 0 before.
 */
function publishHeldAtEmqx(t: { after: (fn: () => void) => void }) {
  let holding = false
  let heldAt = 0
  let letGo: () => void = () => undefined
  const gone = new Promise<void>((resolve) => (letGo = resolve))
  t.after(() => letGo())
  const beforeReply = async (method: string, path: string): Promise<void> => {
    if (!holding || method !== 'POST' || !path.endsWith('/publish')) return
    holding = false
    heldAt = performance.now()
    await gone
  }
  return { beforeReply, holdNext: () => (holding = true), heldAt: () => heldAt, letGo: () => letGo() }
}

/** `patch` of device `id`'s attributes, stored and answered as not pushed (EMQX's API down). */
async function refusedByEmqx(hub: EmqxChildHub, id: string, patch: Record<string, unknown>): Promise<void> {
  const refused = await hub.api<{ pushError?: string }>('PATCH', `/v1/devices/${id}/attributes`, patch)
  assert.equal(refused.status, 200, JSON.stringify(refused.body))
  assert.match(refused.body.pushError ?? '', /^stored, not pushed: /, JSON.stringify(refused.body))
}

describe('pushes across a crash, EMQX mode', () => {
  const children: Pick<ChildHub, 'kill'>[] = []
  after(async () => {
    await Promise.all(children.map((c) => c.kill('SIGKILL')))
  })

  it('EMQX mode: a push EMQX refused is published by its own replica once EMQX takes pushes again, with the values stored then', async (t) => {
    const id = 'kept-emqx'
    const { database, standin, hub } = await emqxHubWithDevice(t, children, 'iothub-kept@push.test', id)
    const published = () => attributesPublished(standin, id)

    standin.setDown(true)
    await refusedByEmqx(hub, id, { mode: 'eco', fan: 1 })
    assert.equal(await metricValue(hub.api, 'iothub_pushes_waiting'), 1, 'the operator sees it wait')
    standin.setDown(false)
    // a later change, pushed at once: the kept push comes after it, and must not undo it
    const live = await hub.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${id}/attributes`, { mode: 'turbo' })
    assert.equal(live.status, 200, JSON.stringify(live.body))
    await eventually(() => published().length === 2, 30_000, 'the kept push published while the replica runs')
    // what the device holds once it has applied both pushes, in the order they came
    assert.deepEqual(Object.assign({}, ...published()), { mode: 'turbo', fan: 1 }, JSON.stringify(published()))
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 10_000, 'the journal emptied')
    assert.match((await hub.api<string>('GET', '/metrics', undefined, null)).body, /^iothub_pushes_waiting 0$/m)
  })

  it('EMQX mode: a replica tries the pushes EMQX refused, and looks for those of runs that are over, every IOTHUB_PUSH_RETRY_INTERVAL', async (t) => {
    const id = 'retried-emqx'
    const { database, standin, hub } = await emqxHubWithDevice(t, children, 'iothub-retried@push.test', id)
    const refusedPublishes = () => standin.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/publish') && r.status === 503).length
    standin.setDown(true)
    await refusedByEmqx(hub, id, { mode: 'eco' })
    // the live push's own tries (three, within IOTHUB_PUSH_TIMEOUT), then three more tries at
    // each try of the kept push: three of those come within ~3 s at 1 s, and take 20 s or more at
    // the default 10 s, which the wait below would not reach
    const afterLive = refusedPublishes()
    await eventually(() => refusedPublishes() >= afterLive + 9, 15_000, 'three tries of the kept push')
    // the replay's look, on the replica holding its lease: each complete look marks the lease done
    const looks = new Set<string>()
    await eventually(
      async () => {
        for (const row of await database.query<{ done_at: string | null }>("SELECT done_at FROM leases WHERE name = 'push-replay'")) if (row.done_at !== null) looks.add(String(row.done_at))
        return looks.size >= 3
      },
      15_000,
      'three looks for the pushes of runs that are over'
    )
  })

  it("EMQX mode: a command sent while an earlier one to its device waits for EMQX is kept behind it, and EMQX gets both in order", async (t) => {
    const id = 'ordered-emqx'
    const { database, standin, hub } = await emqxHubWithDevice(t, children, 'iothub-ordered@push.test', id)
    await subscribedToCommands(hub, standin, id)
    const taken = () => commandsPublished(standin, id)
    const send = (name: string) => sendCommand(hub, id, name)

    standin.setDown(true)
    const first = await send('first')
    assert.match(first.body.pushError ?? '', /^stored, not pushed: /, JSON.stringify(first.body))
    // still down, so that no retry can publish the first meanwhile: the answer tells a command
    // held behind it from one EMQX refused
    const second = await send('second')
    assert.equal(second.status, 200, JSON.stringify(second.body))
    assert.match(second.body.pushError ?? '', /^stored, not pushed: an earlier command to this device waits for the broker/, JSON.stringify(second.body))
    assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="held"}'), 1)
    assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="failed"}'), 1, 'the second was not tried')
    assert.equal(await metricValue(hub.api, 'iothub_pushes_waiting'), 2)
    standin.setDown(false)

    await eventually(() => taken().length === 2, 30_000, 'the kept commands published while the replica runs')
    assert.deepEqual(taken(), ['first', 'second'])
    const third = await send('third')
    assert.equal(third.body.pushError, undefined, 'nothing kept: a command goes at once again')
    assert.equal(third.body.pushedTo.length, 1, JSON.stringify(third.body))
    assert.deepEqual(taken(), ['first', 'second', 'third'])
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 10_000, 'the journal emptied')
  })

  it("EMQX mode: a device's commands waiting for EMQX are bounded: one more is refused with 503 and nothing stored, alone or in a fleet command", async (t) => {
    const id = 'backlogged'
    const { database, standin, hub } = await emqxHubWithDevice(t, children, 'iothub-backlog@push.test', id, { IOTHUB_PUSH_BACKLOG: '2' })
    await subscribedToCommands(hub, standin, id)
    assert.equal((await hub.api('POST', '/v1/devices', { id: 'not-backlogged' })).status, 201)
    const send = (name: string) => sendCommand(hub, id, name)
    const storedCommands = async () => {
      const commands = (await hub.api<{ properties: { commands?: Record<string, { name: string }> } }>('GET', `/v1/devices/${id}`)).body.properties.commands ?? {}
      return Object.values(commands).map((c) => c.name).sort()
    }

    standin.setDown(true)
    assert.match((await send('first')).body.pushError ?? '', /^stored, not pushed: /)
    assert.match((await send('second')).body.pushError ?? '', /^stored, not pushed: an earlier command/)
    const third = await fetch(`${hub.httpUrl}/v1/devices/${id}/commands`, {
      method: 'POST',
      headers: { authorization: BASIC_ADMIN, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'third' })
    })
    const refusal = (await third.json()) as { message: string }
    assert.equal(third.status, 503, JSON.stringify(refusal))
    assert.match(refusal.message, /^nothing was stored: 2 commands to this device wait for the broker already/)
    assert.equal(third.headers.get('retry-after'), String(RETRY_INTERVAL_MS / 1000), 'the waiting ones are tried again every IOTHUB_PUSH_RETRY_INTERVAL')
    assert.deepEqual(await storedCommands(), ['first', 'second'], 'the refused command is not among the stored ones')
    assert.equal((await database.query('SELECT run FROM push_journal')).length, 2, 'nor in the journal')
    // a fleet command: the backlogged device refused and listed, the other one changed
    const fleet = await hub.api<{ changed: number; failed: number; errors: { id: string; message: string }[]; complete: boolean }>('POST', '/v1/devices/commands', {
      ids: [id, 'not-backlogged'],
      command: { name: 'fleet' }
    })
    assert.equal(fleet.status, 200, JSON.stringify(fleet.body))
    assert.deepEqual([fleet.body.changed, fleet.body.failed, fleet.body.complete], [1, 1, true], JSON.stringify(fleet.body))
    assert.equal(fleet.body.errors[0]?.id, id)
    assert.deepEqual(await storedCommands(), ['first', 'second'])
    assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="refused"}'), 2)
    standin.setDown(false)

    const taken = () => commandsPublished(standin, id)
    await eventually(() => taken().length === 2, 30_000, 'the waiting commands published')
    assert.deepEqual(taken(), ['first', 'second'])
    const later = await send('later')
    assert.equal(later.status, 200, 'taken again once the broker has taken the waiting ones')
  })

  it('EMQX mode: a command EMQX has not taken within IOTHUB_COMMAND_EXPIRY is dropped, never published, and the commands after it go', async (t) => {
    const id = 'expiring'
    const { database, standin, hub } = await emqxHubWithDevice(t, children, 'iothub-expiry@push.test', id, { IOTHUB_COMMAND_EXPIRY: '1' })
    await subscribedToCommands(hub, standin, id)
    const send = (name: string) => sendCommand(hub, id, name)

    standin.setDown(true)
    assert.match((await send('too-late')).body.pushError ?? '', /^stored, not pushed: /)
    // held behind the first, or (the first's tries of ~0.6 s having let a retry drop it) refused itself
    assert.match((await send('also-too-late')).body.pushError ?? '', /^stored, not pushed: /)
    // tried every RETRY_INTERVAL_MS while EMQX refuses; the first try a second after each was sent
    // drops it, marked and removed in one commit, then counted
    await eventually(async () => (await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="expired"}')) === 2, 15_000, 'both dropped')
    assert.equal((await database.query('SELECT run FROM push_journal')).length, 0, 'their records removed')
    standin.setDown(false)
    const next = await send('in-time')
    assert.deepEqual(next.body.pushedTo, [id], JSON.stringify(next.body))
    assert.deepEqual(commandsPublished(standin, id), ['in-time'], 'EMQX never got the expired ones')
    // the device's commands say which were never sent
    const commands = (await hub.api<{ properties: { commands: Record<string, { name: string; status: string; expiredAt?: number }> } }>('GET', `/v1/devices/${id}`)).body.properties.commands
    const statuses = Object.values(commands).map((c) => [c.name, c.status, typeof c.expiredAt]).sort()
    assert.deepEqual(statuses, [['also-too-late', 'expired', 'number'], ['in-time', 'sent', 'undefined'], ['too-late', 'expired', 'number']])
    // an expired command's id may be sent again (README): sent anew, not "already sent"
    const [expiredId] = Object.entries(commands).find(([, c]) => c.name === 'too-late')!
    const again = await hub.api<{ pushedTo: string[] }>('POST', `/v1/devices/${id}/commands`, { id: expiredId, name: 'too-late' })
    assert.equal(again.status, 200, JSON.stringify(again.body))
    assert.deepEqual(again.body.pushedTo, [id], JSON.stringify(again.body))
    assert.deepEqual(commandsPublished(standin, id), ['in-time', 'too-late'])
  })

  it("EMQX mode: a command sent through another replica while an earlier one to its device waits for EMQX is kept behind it, and EMQX gets both in order", async (t) => {
    const { database, dataDir, standin } = await emqxSetting(t, children)
    const otherDir = tempDir('iothub-push-journal-other-')
    t.after(() => rmSync(otherDir, { recursive: true, force: true }))
    const hub = await startEmqxChildHub(dataDir, { env: emqxEnv(database.url, standin.url, 'iothub-first@push.test') })
    children.push(hub)
    const other = await startEmqxChildHub(otherDir, { env: emqxEnv(database.url, standin.url, 'iothub-second@push.test') })
    children.push(other)
    const id = 'ordered-replicas'
    await connectedThroughEmqx(hub, standin, id)
    await subscribedToCommands(hub, standin, id)
    const taken = () => commandsPublished(standin, id)
    const send = (through: EmqxChildHub, name: string) => sendCommand(through, id, name)

    standin.setDown(true)
    const first = await send(hub, 'first')
    assert.match(first.body.pushError ?? '', /^stored, not pushed: /, JSON.stringify(first.body))
    // still down, so that no retry can publish the first meanwhile: the other replica keeps the
    // second behind it without trying EMQX
    await heldUntried(other, await send(other, 'second'))
    standin.setDown(false)

    await eventually(() => taken().length === 2, 45_000, "the kept commands published by their replicas' retries")
    assert.deepEqual(taken(), ['first', 'second'])
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 10_000, 'the journal emptied')
    const third = await send(other, 'third')
    assert.equal(third.body.pushError, undefined, 'nothing kept: a command goes at once again')
    assert.deepEqual(third.body.pushedTo, [id], JSON.stringify(third.body))
    assert.deepEqual(taken(), ['first', 'second', 'third'])
  })

  it('EMQX mode: a command sent through another replica while an earlier one is on its way to EMQX waits for it, then goes at once', async (t) => {
    // the first command's publish is held at EMQX's API (the stand-in) until the second is stored
    // through the other replica: before, that one was held for the other replica's next try
    const held = publishHeldAtEmqx(t)
    const { database, dataDir, standin } = await emqxSetting(t, children, { beforeReply: held.beforeReply })
    const otherDir = tempDir('iothub-push-journal-other-')
    t.after(() => rmSync(otherDir, { recursive: true, force: true }))
    // as long as a busy machine could want, for the held publish and for the wait behind it
    const env = (node: string) => ({ ...emqxEnv(database.url, standin.url, node), IOTHUB_PUSH_TIMEOUT: '30000' })
    const hub = await startEmqxChildHub(dataDir, { env: env('iothub-on-its-way@push.test') })
    children.push(hub)
    const other = await startEmqxChildHub(otherDir, { env: env('iothub-after-it@push.test') })
    children.push(other)
    const id = 'on-its-way'
    await connectedThroughEmqx(hub, standin, id)
    await subscribedToCommands(hub, standin, id)
    const taken = () => commandsPublished(standin, id)
    const send = (through: EmqxChildHub, name: string) => sendCommand(through, id, name)
    const journalRows = async () => (await database.query('SELECT run FROM push_journal')).length

    held.holdNext()
    const first = send(hub, 'first')
    await eventually(() => held.heldAt() > 0, 20_000, "the first command's publish reached EMQX's API").catch(async (error: Error) => {
      // seen once in ~90 runs beside busy loops (2026-12-07) and not understood: what the API
      // answered and what the hubs logged say where the first command stopped
      const answered = await Promise.race([first.catch((e: Error) => `an error: ${e.message}`), delay(1000).then(() => 'no answer yet')])
      throw new Error(`${error.message}; the first command was answered ${JSON.stringify(answered)}; EMQX's API had ${JSON.stringify(standin.requests.slice(-20))}\nreplica A:\n${hub.output()}\nreplica B:\n${other.output()}`)
    })
    const second = send(other, 'second')
    // the second is stored, its record beside the first's: the other replica now finds the first on its way
    await eventually(async () => (await journalRows()) === 2, 20_000, "the second command's change stored")
    assert.deepEqual(taken(), [], 'neither taken yet')
    held.letGo()
    const [firstAnswer, secondAnswer] = await Promise.all([first, second])
    assert.deepEqual(firstAnswer.body.pushedTo, [id], JSON.stringify(firstAnswer.body))
    assert.equal(secondAnswer.body.pushError, undefined, `not held for a retry: ${JSON.stringify(secondAnswer.body)}`)
    assert.deepEqual(secondAnswer.body.pushedTo, [id], JSON.stringify(secondAnswer.body))
    assert.deepEqual(taken(), ['first', 'second'])
    assert.equal(await metricValue(other.api, 'iothub_pushes_total{property="commands",outcome="held"}'), 0)
    await eventually(async () => (await journalRows()) === 0, 10_000, 'the journal emptied')
  })

  it('EMQX mode: a late push overtaken by another replica\'s change is published again with the values stored after it', async (t) => {
    // the kept push's publish is held at EMQX's API (the stand-in) while another replica changes
    // the device and its push is taken: the held push, let go, arrives last with the older value
    const held = publishHeldAtEmqx(t)
    const { database, dataDir, standin } = await emqxSetting(t, children, { beforeReply: held.beforeReply })
    const otherDir = tempDir('iothub-push-journal-other-')
    t.after(() => rmSync(otherDir, { recursive: true, force: true }))
    // a publish may take this long here (IOTHUB_PUSH_TIMEOUT): the held one is let go after the default's 2.5 s
    const pushTimeoutMs = 30_000
    const hub = await startEmqxChildHub(dataDir, { env: { ...emqxEnv(database.url, standin.url, 'iothub-late@push.test'), IOTHUB_PUSH_TIMEOUT: String(pushTimeoutMs) } })
    children.push(hub)
    const other = await startEmqxChildHub(otherDir, { env: emqxEnv(database.url, standin.url, 'iothub-other@push.test') })
    children.push(other)
    const id = 'overtaken-emqx'
    await connectedThroughEmqx(hub, standin, id)
    const published = () => attributesPublished(standin, id)

    standin.setDown(true)
    await refusedByEmqx(hub, id, { mode: 'eco', fan: 1 })
    held.holdNext()
    standin.setDown(false)
    // the retry (every RETRY_INTERVAL_MS) has read `eco` and is publishing it: the other replica's change is stored and pushed
    await eventually(() => held.heldAt() > 0, 30_000, 'the kept push retried')
    const overtaking = await other.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${id}/attributes`, { mode: 'turbo' })
    assert.deepEqual(overtaking.body.pushedTo, [id], JSON.stringify(overtaking.body))
    assert.deepEqual(published(), [{ mode: 'turbo' }])
    // a publish held past its time is cut off (the stand-in then records no publish of it) and
    // kept, and its next try reads `turbo`: the publishes asserted below would miss
    // `eco`. Held past the default time, it goes on only under the configured one.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, PUSH_WITHIN_MS + 500 - (performance.now() - held.heldAt()))))
    const heldMs = performance.now() - held.heldAt()
    assert.ok(heldMs < pushTimeoutMs - 10_000, `the held publish was held ${heldMs.toFixed(0)} ms, near its ${pushTimeoutMs} ms: too slow a machine to tell`)
    held.letGo()
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 30_000, 'the kept push published and removed')
    // the held push came after the overtaking one, and was followed by the values stored after it
    assert.deepEqual(published(), [{ mode: 'turbo' }, { mode: 'eco', fan: 1 }, { mode: 'turbo', fan: 1 }])
  })

  it('EMQX mode: a push EMQX did not take is published once the run that stored it is over', async (t) => {
    const { database, standin, start } = await restartableEmqxNode(t, children, 'iothub-journal@push.test')
    const first = await start()
    const id = 'journaled-emqx'
    await connectedThroughEmqx(first, standin, id)

    const published = () => attributesPublished(standin, id)
    standin.setDown(true)
    await refusedByEmqx(first, id, { mode: 'journaled' })
    const journaled = await database.query<{ run: string }>('SELECT run FROM push_journal')
    assert.equal(journaled.length, 1, 'the push stays stored')
    assert.match(journaled[0]!.run, /^iothub-journal@push\.test#/)
    assert.equal(await metricValue(first.api, 'iothub_pushes_waiting'), 1, 'the operator sees it wait')
    assert.equal((await first.kill('SIGKILL')).signal, 'SIGKILL')
    standin.setDown(false)
    assert.deepEqual(published(), [])

    // the node starts again: its former run is over, and the push is published, once — by the
    // new run, once the killed run's lease on the replay has run out (15 s) and its next look comes
    const second = await start()
    await eventually(() => published().length > 0, 60_000, 'the journaled push published')
    assert.deepEqual(published(), [{ mode: 'journaled' }])
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 10_000, 'the journal emptied')
    // a push of the new run goes out as before, and is not journaled after
    const pushed = await second.api<{ pushedTo: string[] }>('PATCH', `/v1/devices/${id}/attributes`, { mode: 'live' })
    assert.equal(pushed.status, 200, JSON.stringify(pushed.body))
    assert.deepEqual(pushed.body.pushedTo, [id], `${JSON.stringify(pushed.body)}\n${second.output()}`)
    assert.deepEqual(published(), [{ mode: 'journaled' }, { mode: 'live' }])
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 10_000, 'the journal emptied')
    assert.match((await second.api<string>('GET', '/metrics', undefined, null)).body, /^iothub_pushes_waiting 0$/m)
  })

  it("EMQX mode: a command sent by a later run while a killed run's command waits for EMQX is kept behind it, and EMQX gets both in order", async (t) => {
    const { database, standin, start } = await restartableEmqxNode(t, children, 'iothub-later-run@push.test')
    const first = await start()
    const id = 'later-run'
    await connectedThroughEmqx(first, standin, id)
    await subscribedToCommands(first, standin, id)
    const taken = () => commandsPublished(standin, id)
    const send = (through: EmqxChildHub, name: string) => sendCommand(through, id, name)

    standin.setDown(true)
    const refused = await send(first, 'first')
    assert.match(refused.body.pushError ?? '', /^stored, not pushed: /, JSON.stringify(refused.body))
    assert.equal((await first.kill('SIGKILL')).signal, 'SIGKILL')

    // the node starts again while EMQX still refuses: the killed run's command is in the journal,
    // and the new run keeps its own behind it rather than trying EMQX
    const second = await start()
    await heldUntried(second, await send(second, 'second'))
    standin.setDown(false)

    // the killed run's command goes by the replay (once its lease has run out, 15 s), the new
    // run's at its next try after that
    await eventually(() => taken().length === 2, 90_000, 'both commands published')
    assert.deepEqual(taken(), ['first', 'second'])
    await eventually(async () => (await database.query('SELECT run FROM push_journal')).length === 0, 10_000, 'the journal emptied')
  })
})
