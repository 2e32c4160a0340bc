/**
 * Webhooks out across two hub replicas (EMQX mode, one PostgreSQL): one replica at a time
 * delivers (the `events-webhook` lease), the other does not send a second copy; when the one
 * delivering stops while its receiver is failing, the other takes the lease over and resumes from
 * the position the first kept in the lease's note — the receiver then has every event of the log
 * (as either replica's `GET /v1/events` has it), first arriving in log order, each signed.
 *
 * Real parts: two hubs on a real PostgreSQL, real gRPC ExHook calls, a real HTTP receiver; EMQX
 * itself is the REST stand-in (test/helpers/replicas.ts).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually } from './helpers/hub.js'
import { metricValue } from './helpers/metrics.js'
import { createTestDatabase, startReplicas, type Replica, type ReplicaSet } from './helpers/replicas.js'
import { SseStream } from './helpers/sse.js'
import { WebhookReceiver } from './helpers/webhook-receiver.js'

const SECRET = 'webhook-secret-of-the-replicas-test'
const DEVICES = ['wh-dev-1', 'wh-dev-2', 'wh-dev-3']

/** Each device connects, subscribes and leaves, through the replicas in turn. */
async function churn(set: ReplicaSet, round: number, through: readonly Replica[] = set.replicas): Promise<void> {
  for (const [i, id] of DEVICES.entries()) {
    const via = through[(i + round) % through.length]!
    const conn = set.connection(id, via.node)
    await set.connect(via, conn)
    await set.subscribe(via, conn, 'v1/devices/me/attributes', 1)
    await set.subscribe(via, conn, `r${round}/x`)
    await set.disconnect(via, conn)
  }
}

/** Every event of the log as `via` streams it, once it has applied everything committed so far. */
async function streamed(set: ReplicaSet, via: Replica): Promise<number[]> {
  const head = via.hub.hub.store.following().applied
  const { status, stream } = await SseStream.open(`${via.hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
  assert.equal(status, 200)
  await stream!.until((s) => Number(s.lastEventId) >= head, 30_000, 'the stream at the head of the log')
  const seqs = stream!.events<{ seq: number }>().map((e) => e.seq)
  stream!.close()
  return seqs
}

const delivered = (r: Replica) => metricValue(r.api, 'iothub_events_delivered_total{sink="webhook"}')

describe('webhooks out across two replicas (EMQX mode, PostgreSQL)', () => {
  it('one replica delivers; when it stops mid-failure, the other resumes from its position: every event, in order', async (t) => {
    const receiver = await WebhookReceiver.start(SECRET)
    const db = await createTestDatabase()
    const set = await startReplicas({
      count: 2,
      db,
      devices: DEVICES,
      overrides: { eventsWebhookUrl: receiver.url, eventsWebhookSecret: SECRET, eventsWebhookBatch: 5, eventsWebhookBackoffMax: 500, eventsWebhookTimeout: 2000 }
    }).catch(async (error: unknown) => {
      await db.drop()
      await receiver.close()
      throw error
    })
    t.after(async () => {
      await set.stop()
      await db.drop()
      await receiver.close()
    })
    const [a, b] = set.replicas as [Replica, Replica]

    await churn(set, 1)
    const first = await streamed(set, a)
    await receiver.until((r) => new Set(r.events.map((e) => e.seq)).size >= first.length, 30_000, 'the first events delivered')
    // one replica holds the lease and sent them all; the other sent none
    const counts = [await delivered(a), await delivered(b)]
    assert.equal(counts.filter((n) => n > 0).length, 1, `one replica delivers, not both: ${counts.join(' / ')}`)
    const holder = counts[0]! > 0 ? a : b
    const other = holder === a ? b : a

    // the receiver fails; events made meanwhile wait at the holder's position, which it then stops with
    receiver.fail()
    await churn(set, 2)
    await eventually(async () => (await metricValue(holder.api, 'iothub_events_delivery_failures_total{sink="webhook",reason="status"}')) >= 1, 20_000, 'a failed attempt')
    await holder.hub.hub.stop()
    await receiver.up()
    await churn(set, 3, [other])

    const all = await streamed(set, other)
    await receiver.until((r) => new Set(r.events.map((e) => e.seq)).size >= all.length, 60_000, 'every event at the receiver, delivered by the other replica')
    assert.ok((await delivered(other)) > 0, 'the other replica took the delivery over')
    assert.ok(receiver.batches.every((batch) => batch.signatureValid), 'every body signed with the secret')
    const firstArrivals: number[] = []
    const seen = new Set<number>()
    for (const e of receiver.events) {
      if (!seen.has(e.seq)) firstArrivals.push(e.seq)
      seen.add(e.seq)
    }
    // the log may have grown since `all` was read (the stopped replica's sessions, say): what
    // arrived is a prefix of the log as it is now, holding at least every event of `all`
    const now = await streamed(set, other)
    assert.ok(firstArrivals.length >= all.length)
    assert.deepEqual(firstArrivals, now.slice(0, firstArrivals.length), 'every event of the log, none other, first arriving in log order')
  })
})
