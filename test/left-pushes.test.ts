/**
 * One pass over the journal's left pushes (src/devices/left-pushes.ts), run by run, with the
 * devices the broker refused at the pass before (`deferred`) tried after the others: a device's
 * pushes never overtake one another, and a broker refusing everything gets a few tries a pass,
 * however many runs and deferred devices there are. The journal is a real SQLite store; the
 * broker a publisher that refuses as it is told (the callers' cases: test/kept-pushes.test.ts,
 * test/emqx/push-replay.test.ts).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { BrokerMessage } from '../src/devices/dispatcher.js'
import { publishLeftPushes, REFUSALS_IN_A_ROW, waitsBehindOtherRun } from '../src/devices/left-pushes.js'
import { EmqxApiError } from '../src/emqx/emqx-rest.js'
import { replicaRunId } from '../src/store/coordination.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import type { StoredPush } from '../src/store/store.js'
import { openTestStore } from './helpers/sqlite-store.js'

const text = (p: { payload: Uint8Array }): string => Buffer.from(p.payload).toString()

const openStore = (t: { after: (fn: () => Promise<void> | void) => void }): Promise<SqliteStore> => openTestStore(t, 'iothub-left-pushes-')

/** Runs that are over, oldest first, each holding `pushes` as `device:payload`, commands in that order. */
async function leftRuns(store: SqliteStore, runs: string[][]): Promise<void> {
  const pushes: StoredPush[] = []
  for (const [i, named] of runs.entries()) {
    const run = replicaRunId(`gone-${String(i).padStart(2, '0')}`, 1000 + i)
    for (const [seq, entry] of named.entries()) {
      const [device, payload] = entry.split(':') as [string, string]
      pushes.push({ run, seq: seq + 1, topic: `${device}/v1/devices/me/commands`, payload: Buffer.from(payload), qos: 1, at: 1000 })
    }
  }
  await store.commit(pushes.map((push) => ({ op: 'push.put' as const, push })))
}

/** A broker refusing (503) the payloads `refuses` says, recording every try. */
function broker(refuses: (payload: string) => boolean): { tried: string[]; publish: (message: BrokerMessage) => Promise<void> } {
  const tried: string[] = []
  return {
    tried,
    async publish(message: BrokerMessage) {
      const payload = text(message)
      tried.push(payload)
      if (refuses(payload)) throw new EmqxApiError('EMQX answered 503', 503)
    }
  }
}

describe('a pass over the pushes runs left', () => {
  it("holds a deferred device's pushes in the younger runs once the deferred devices' try is cut short", async (t) => {
    const store = await openStore(t)
    await leftRuns(store, [['h:fine', 'q1:poison-1', 'q2:poison-2', 'q3:poison-3', 'e:e-first'], ['e:e-second']])
    const emqx = broker((payload) => payload.startsWith('poison'))
    const outcome = await publishLeftPushes(store, emqx.publish, { leftUpTo: () => Infinity, deferred: new Set(['q1', 'q2', 'q3', 'e']) })
    assert.equal(outcome.published, 1)
    assert.deepEqual(emqx.tried, ['fine', 'poison-1', 'poison-2', 'poison-3'], 'three refusals of deferred devices end their try, after the broker took h\'s')
    assert.ok(outcome.complete, 'the pass went on to the younger run')
    assert.deepEqual([...outcome.refusedDevices].sort(), ['q1', 'q2', 'q3'], 'e, not tried, is not deferred at the next pass: it goes with the others')
    const left: string[] = []
    for (const run of await store.pushRuns()) left.push(...(await store.readPushes(run, 0, 100)).map(text))
    assert.deepEqual(left.sort(), ['e-first', 'e-second', 'poison-1', 'poison-2', 'poison-3'], 'e-second did not overtake e-first')
  })

  it('makes a few tries at most while the broker refuses everything, however many runs hold deferred devices', async (t) => {
    const store = await openStore(t)
    const runs: string[][] = []
    const deferred = new Set<string>()
    for (let r = 0; r < 10; r++) {
      runs.push([0, 1, 2].map((d) => `r${r}d${d}:p-${r}-${d}`))
      for (const d of [0, 1, 2]) deferred.add(`r${r}d${d}`)
    }
    runs[9]!.push('fresh:f')
    await leftRuns(store, runs)
    const emqx = broker(() => true)
    const outcome = await publishLeftPushes(store, emqx.publish, { leftUpTo: () => Infinity, deferred })
    assert.equal(outcome.published, 0)
    assert.equal(emqx.tried.length, REFUSALS_IN_A_ROW, JSON.stringify(emqx.tried))
    assert.equal(outcome.complete, false)
  })

  it('makes a few tries at most when the broker stops taking pushes partway, across runs of deferred devices', async (t) => {
    const store = await openStore(t)
    // the first run's push is taken; then the broker refuses everything; twenty runs follow,
    // each with two deferred devices' pushes only (below REFUSALS_IN_A_ROW within any one run)
    const runs: string[][] = [['h:taken']]
    const deferred = new Set<string>()
    for (let r = 1; r <= 20; r++) {
      runs.push([0, 1].map((d) => `r${r}d${d}:p-${r}-${d}`))
      for (const d of [0, 1]) deferred.add(`r${r}d${d}`)
    }
    await leftRuns(store, runs)
    const emqx = broker((payload) => payload !== 'taken')
    const outcome = await publishLeftPushes(store, emqx.publish, { leftUpTo: () => Infinity, deferred })
    assert.equal(outcome.published, 1)
    assert.deepEqual(emqx.tried, ['taken', 'p-1-0', 'p-1-1', 'p-2-0'], 'three refusals of deferred devices, across runs, end their try for the pass')
    assert.deepEqual([...outcome.refusedDevices].sort(), ['r1d0', 'r1d1', 'r2d0'], 'only those refused')
  })

  it("does not keep deferring a device the deferred devices' cut-short try never reached", async (t) => {
    const store = await openStore(t)
    // q1–q3 refused at every pass; y refused once
    await leftRuns(store, [['q1:poison-1', 'q2:poison-2', 'q3:poison-3', 'y:y-1', 'h:fine-1']])
    const refused = new Set(['poison-1', 'poison-2', 'poison-3', 'y-1'])
    const emqx = broker((payload) => refused.has(payload))
    const pass = (deferred: ReadonlySet<string>) => publishLeftPushes(store, emqx.publish, { leftUpTo: () => Infinity, deferred })

    const first = await pass(new Set(['q1', 'q2', 'q3']))
    assert.deepEqual(emqx.tried, ['y-1', 'fine-1', 'poison-1', 'poison-2', 'poison-3'])
    assert.deepEqual([...first.refusedDevices].sort(), ['q1', 'q2', 'q3', 'y'])
    refused.delete('y-1')
    // a new push of h, so that the broker takes one before the deferred devices' try
    const run = (await store.pushRuns())[0]!
    await store.commit([{ op: 'push.put', push: { run, seq: 100, topic: 'h/v1/devices/me/commands', payload: Buffer.from('fine-2'), qos: 1, at: 1000 } }])
    emqx.tried.length = 0
    const second = await pass(first.refusedDevices)
    assert.deepEqual(emqx.tried, ['fine-2', 'poison-1', 'poison-2', 'poison-3'], 'the deferred try cut short before y')
    assert.deepEqual([...second.refusedDevices].sort(), ['q1', 'q2', 'q3'], 'y was held, not refused')
    emqx.tried.length = 0
    const third = await pass(second.refusedDevices)
    assert.equal(third.published, 1)
    assert.deepEqual(emqx.tried, ['y-1', 'poison-1', 'poison-2', 'poison-3'], 'y goes with the others again')
  })
  it("holds a device's commands behind an earlier one of another run still in the journal, counting no refusal, and lets them go once it has left", async (t) => {
    const store = await openStore(t)
    await leftRuns(store, [['w:w-first', 'x:x-only', 'w:w-second']])
    // a live run's command to w, recorded before the left ones (at 1000), that its broker has not taken
    const live = replicaRunId('live', 2000)
    await store.commit([{ op: 'push.put', push: { run: live, seq: 1, topic: 'w/v1/devices/me/commands', payload: Buffer.from('w-earlier'), qos: 1, at: 500 } }])
    const emqx = broker(() => false)
    const rules = { leftUpTo: (run: string) => (run === live ? undefined : Infinity), waitsBehind: (push: StoredPush) => waitsBehindOtherRun(store, push) }
    const outcome = await publishLeftPushes(store, emqx.publish, rules)
    assert.deepEqual(emqx.tried, ['x-only'], "w's commands wait behind the live run's")
    assert.deepEqual([outcome.published, outcome.refused, [...outcome.refusedDevices], outcome.complete], [1, undefined, [], true], 'no refusal: w is not deferred')
    await store.commit([{ op: 'push.delete', run: live, seq: 1 }])
    const after = await publishLeftPushes(store, emqx.publish, rules)
    assert.equal(after.published, 2)
    assert.deepEqual(emqx.tried, ['x-only', 'w-first', 'w-second'], 'in their order, once the earlier one has left the journal')
    assert.deepEqual(await store.pushRuns(), [])
  })
  it("holds a command waiting behind another run's in its own run only: that run's, younger in the pass, still goes", async (t) => {
    const store = await openStore(t)
    // R, the older run, holds a push the broker refuses (device x) and a command to d1 recorded
    // after S's command to d1: S's goes first, though R is swept before S
    const [older, younger] = [replicaRunId('gone-r', 1000), replicaRunId('gone-s', 2000)]
    const command = (run: string, seq: number, device: string, name: string, at: number) => ({ op: 'push.put' as const, push: { run, seq, topic: `${device}/v1/devices/me/commands`, payload: Buffer.from(name), qos: 1 as const, at } })
    await store.commit([command(older, 1, 'x', 'poison', 50), command(younger, 1, 'd1', 's1', 200), command(older, 2, 'd1', 'r1', 300)])
    const emqx = broker((payload) => payload === 'poison')
    const rules = { leftUpTo: () => Infinity, waitsBehind: (push: StoredPush) => waitsBehindOtherRun(store, push) }
    const first = await publishLeftPushes(store, emqx.publish, rules)
    assert.deepEqual(emqx.tried, ['poison', 's1'], "r1 waits behind s1, and s1 is not held by r1's wait")
    const second = await publishLeftPushes(store, emqx.publish, { ...rules, deferred: first.refusedDevices })
    assert.deepEqual(emqx.tried, ['poison', 's1', 'r1', 'poison'], 'r1 once s1 has left the journal')
    assert.equal(second.published, 1)
  })
})
