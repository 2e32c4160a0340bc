/**
 * One pass over the journal's left pushes (src/devices/left-pushes.ts), run by run, with the
 * devices the broker refused at the pass before (`deferred`) tried after the others: a device's
 * pushes never overtake one another, and a broker refusing everything gets a few tries a pass,
 * however many runs and deferred devices there are. The journal is a real SQLite store; the
 * broker a publisher that refuses as it is told (the callers' cases: test/kept-pushes.test.ts,
 * test/emqx/push-replay.test.ts).
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import type { BrokerMessage } from '../src/devices/dispatcher.js'
import { publishLeftPushes, REFUSALS_IN_A_ROW } from '../src/devices/left-pushes.js'
import { EmqxApiError } from '../src/emqx/emqx-rest.js'
import { replicaRunId } from '../src/store/coordination.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import type { StoredPush } from '../src/store/store.js'
import { tempDir } from './helpers/hub.js'

const text = (p: { payload: Uint8Array }): string => Buffer.from(p.payload).toString()

async function openStore(t: { after: (fn: () => Promise<void> | void) => void }): Promise<SqliteStore> {
  const dataDir = tempDir('iothub-left-pushes-')
  const store = new SqliteStore({ dataDir, synchronous: 'normal', busyTimeoutMs: 1000 })
  t.after(async () => {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  })
  await store.load()
  return store
}

/** Runs that are over, oldest first, each holding `pushes` as `device:payload`, commands in that order. */
async function leftRuns(store: SqliteStore, runs: string[][]): Promise<void> {
  const pushes: StoredPush[] = []
  for (const [i, named] of runs.entries()) {
    const run = replicaRunId(`gone-${i}`, 1000 + i)
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
    assert.deepEqual([...outcome.refusedDevices].sort(), ['e', 'q1', 'q2', 'q3'], 'e, not tried, is deferred again')
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
})
