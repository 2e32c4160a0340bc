/**
 * Hubs in EMQX mode on PostgreSQL behind EMQX's REST API (the stand-in), for the push journal's
 * EMQX-mode tests (push-journal-emqx.test.ts, push-journal-emqx-commands.test.ts): their setting,
 * a device connected and subscribed through the hooks, what EMQX was asked to publish, and a
 * push or command EMQX refused or held.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { startEmqxChildHub, type ChildHub, type EmqxChildHub } from './child-hub.js'
import { EMQX_KEY, EMQX_SECRET, WEBHOOK_SECRET } from './emqx-hub.js'
import { startEmqxRestStandin, type EmqxRestStandin, type EmqxRestStandinOptions } from './emqx-rest-standin.js'
import { tempDir } from './hub.js'
import { metricValue } from './metrics.js'
import { createDatabase } from './postgres.js'

/** A database, a data dir and EMQX's REST API (the stand-in) for hubs in EMQX mode; `children` killed, and all of it gone, after the test. */
export async function emqxSetting(t: { after: (fn: () => Promise<void>) => void }, children: Pick<ChildHub, 'kill'>[], standinOptions: Pick<EmqxRestStandinOptions, 'beforeReply'> = {}) {
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
export const RETRY_INTERVAL_MS = 1000

/** A hub in EMQX mode on PostgreSQL, publishing through the REST stand-in at `emqxApi`. */
export function emqxEnv(databaseUrl: string, emqxApi: string, node: string): Record<string, string> {
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
export async function connectedThroughEmqx(hub: EmqxChildHub, standin: EmqxRestStandin, id: string): Promise<void> {
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
export async function subscribedToCommands(hub: EmqxChildHub, standin: EmqxRestStandin, id: string): Promise<void> {
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
export async function emqxHubWithDevice(t: { after: (fn: () => Promise<void>) => void }, children: Pick<ChildHub, 'kill'>[], node: string, id: string, env: Record<string, string> = {}) {
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
export async function restartableEmqxNode(t: { after: (fn: () => Promise<void>) => void }, children: Pick<ChildHub, 'kill'>[], node: string) {
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
export function attributesPublished(standin: EmqxRestStandin, id: string): Record<string, unknown>[] {
  return publishedOf(standin, id, 'attributes')
}

/** The names of the commands EMQX (the stand-in) took for device `id`, in order. */
export function commandsPublished(standin: EmqxRestStandin, id: string): string[] {
  return publishedOf(standin, id, 'commands').map((command) => command.name as string)
}

/** The command `name` sent to device `id` through `hub`'s API, and its answer. */
export function sendCommand(hub: Pick<EmqxChildHub, 'api'>, id: string, name: string) {
  return hub.api<{ pushedTo: string[]; pushError?: string; message?: string }>('POST', `/v1/devices/${id}/commands`, { name })
}

/** `answer`, of a command sent through `hub`: stored and held behind an earlier one, EMQX not tried (the hub's only command so far). */
export async function heldUntried(hub: Pick<EmqxChildHub, 'api'>, answer: { status: number; body: { pushError?: string } }): Promise<void> {
  assert.equal(answer.status, 200, JSON.stringify(answer.body))
  assert.match(answer.body.pushError ?? '', /^stored, not pushed: an earlier command to this device waits for the broker/, JSON.stringify(answer.body))
  assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="held"}'), 1)
  assert.equal(await metricValue(hub.api, 'iothub_pushes_total{property="commands",outcome="failed"}'), 0, 'it was not tried')
}

/**
 * Holds EMQX's answer to the next publish asked for after `holdNext()`, until `letGo()`: a publish
 * on its way (the stand-in records a publish once it answers). `heldAt()`: when it was held, 0 before.
 */
export function publishHeldAtEmqx(t: { after: (fn: () => void) => void }) {
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
export async function refusedByEmqx(hub: EmqxChildHub, id: string, patch: Record<string, unknown>): Promise<void> {
  const refused = await hub.api<{ pushError?: string }>('PATCH', `/v1/devices/${id}/attributes`, patch)
  assert.equal(refused.status, 200, JSON.stringify(refused.body))
  assert.match(refused.body.pushError ?? '', /^stored, not pushed: /, JSON.stringify(refused.body))
}
