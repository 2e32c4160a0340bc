/**
 * In EMQX mode a push is stored with its change (src/devices/push-journal.ts), and the journal is
 * published by another run (src/emqx/push-replay.ts): a push EMQX's REST API did not take (the
 * stand-in down, as EMQX's API can be) stays stored, and once its replica's run is over — killed
 * here, and started again — it is published. Commands: push-journal-emqx-commands.test.ts; the
 * embedded broker's side: push-journal.test.ts.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import { startEmqxChildHub, type ChildHub } from './helpers/child-hub.js'
import { eventually, tempDir } from './helpers/hub.js'
import { metricValue } from './helpers/metrics.js'
import { PUSH_WITHIN_MS } from '../src/config.js'
import { attributesPublished, connectedThroughEmqx, emqxEnv, emqxHubWithDevice, emqxSetting, publishHeldAtEmqx, refusedByEmqx, restartableEmqxNode } from './helpers/emqx-push-journal.js'

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
})
