/**
 * A device's commands waiting for the broker are bounded (IOTHUB_PUSH_BACKLOG,
 * src/devices/dispatcher.ts `refuseOverBacklog`): one more is refused in its change's decision,
 * and counted once, however many times that decision ran. A store may run a decision again — a
 * PostgreSQL batch rolled back whole (a deadlock, a raced session) decides every change of it
 * anew — so the decider here is a stand-in that decides each change three times, as such retries
 * would; the journal is a real SQLite store. The whole path through a hub and EMQX's REST API:
 * test/push-journal.test.ts ("are bounded").
 */
import assert from 'node:assert/strict'
import { it } from 'node:test'
import { DeviceProperties } from '../src/devices/device-properties.js'
import { Dispatcher, PushBacklogFull } from '../src/devices/dispatcher.js'
import { DownstreamChanges } from '../src/devices/downstream-changes.js'
import { PushJournal } from '../src/devices/push-journal.js'
import { newCommand } from '../src/domain/device-properties.js'
import { createLogger } from '../src/observability/logger.js'
import { HubMetrics } from '../src/observability/metrics.js'
import type { Decider, Decision, StoredView } from '../src/store/decision.js'
import { openTestStore } from './helpers/sqlite-store.js'

it('refuses a command over its device\'s backlog in the decision, and counts it once though the decision ran three times', async (t) => {
  const store = await openTestStore(t, 'iothub-push-backlog-')
  const journal = new PushJournal(store, createLogger('silent'))
  const metrics = new HubMetrics()
  const dispatcher = new Dispatcher({ receiving: async () => [] }, { publish: async () => undefined }, metrics, journal, { backlog: 1 })
  // one command of d1 waits for the broker already
  const waiting = journal.record({ topic: 'd1/v1/devices/me/commands', payload: Buffer.from('c0'), qos: 1, retain: false })
  journal.keep(waiting.seq, 'd1/v1/devices/me/commands')

  let decided = 0
  const view = { device: (id: string) => ({ id }), property: () => undefined } as unknown as StoredView
  const decidingThrice: Decider = {
    fromCaches: false,
    async decide<R>(decision: Decision<R>): Promise<R> {
      let outcome: { error: unknown } | { result: R } = { error: new Error('not decided') }
      for (let run = 0; run < 3; run++) {
        decided++
        try {
          outcome = { result: decision.decide(view).result }
        } catch (error) {
          outcome = { error }
        }
      }
      if ('error' in outcome) throw outcome.error
      return outcome.result
    }
  }
  const changes = new DownstreamChanges(new DeviceProperties(decidingThrice), dispatcher)
  const command = newCommand({ name: 'reboot' }, Date.now())
  await assert.rejects(changes.sendCommand('d1', command, Buffer.from('c1')), (error: unknown) => error instanceof PushBacklogFull && /^1 commands to this device wait/.test(error.message))
  assert.equal(decided, 3)
  const refused = (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.filter((v) => v.labels.outcome === 'refused')
  assert.deepEqual(refused.map((v) => [v.labels.property, v.value]), [['commands', 1]])
  // another device's command, and d1's raw bytes, are not over any backlog
  await assert.doesNotReject(changes.sendCommand('d2', newCommand({ name: 'reboot' }, Date.now()), Buffer.from('x')))
  await assert.doesNotReject(changes.sendRaw('d1', () => 'raw', Buffer.from('raw')))
  // raw bytes have a backlog of their own
  const waitingRaw = journal.record({ topic: 'd1/v1/devices/me/raw', payload: Buffer.from('r0'), qos: 1, retain: false })
  journal.keep(waitingRaw.seq, 'd1/v1/devices/me/raw')
  await assert.rejects(changes.sendRaw('d1', () => 'raw', Buffer.from('r1')), (error: unknown) => error instanceof PushBacklogFull && /^1 raw pushes to this device wait/.test(error.message))
  const counted = (await metrics.registry.getSingleMetric('iothub_pushes_total')!.get()).values.filter((v) => v.labels.outcome === 'refused')
  assert.deepEqual(counted.map((v) => [v.labels.property, v.value]).sort(), [['commands', 1], ['raw', 1]])
})
