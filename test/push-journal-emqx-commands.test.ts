/**
 * In EMQX mode a command waits for the ones before it to its device (src/devices/kept-pushes.ts,
 * src/emqx/push-replay.ts): kept behind one EMQX has not taken, in one replica or across them and
 * across runs; bounded per device; dropped unpublished once older than IOTHUB_COMMAND_EXPIRY.
 * Pushes EMQX refused: push-journal-emqx.test.ts.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, describe, it } from 'node:test'
import { setTimeout as delay } from 'node:timers/promises'
import { startEmqxChildHub, type ChildHub, type EmqxChildHub } from './helpers/child-hub.js'
import { eventually, tempDir } from './helpers/hub.js'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { metricValue } from './helpers/metrics.js'
import { RETRY_INTERVAL_MS, commandsPublished, connectedThroughEmqx, emqxEnv, emqxHubWithDevice, emqxSetting, heldUntried, publishHeldAtEmqx, restartableEmqxNode, sendCommand, subscribedToCommands } from './helpers/emqx-push-journal.js'

describe('commands across replicas and runs, EMQX mode', () => {
  const children: Pick<ChildHub, 'kill'>[] = []
  after(async () => {
    await Promise.all(children.map((c) => c.kill('SIGKILL')))
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
