/**
 * The Store contract: what every backend must do, written once and run against each
 * (test/store/sqlite.test.ts today; PostgreSQL next). A backend passes by being opened on a
 * harness — `open()` may be called again after `close()` and must find the same data.
 */
import { loadAll } from '../helpers/snapshot.js'
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Device } from '../../src/domain/device.js'
import type { SessionRecord } from '../../src/domain/session.js'
import type { SubscriptionEntity } from '../../src/domain/subscription.js'
import type { Mutation, Store } from '../../src/store/store.js'

export interface StoreHarness {
  /** Opens the backend on this harness's data; again after close() it must see the same data. */
  open(options?: { maxBatch?: number; onBatch?: (commits: number) => void }): Promise<Store>
  /** Removes the data for good. */
  destroy(): Promise<void>
}

/** Fixtures other backend tests build on too. */
export const device = (id: string): Device => ({
  id,
  name: `name-${id}`,
  owner: 'owner-1',
  group: 'default',
  desc: '',
  ext: { version: '1.1' },
  tokenHash: `hash-${id}`,
  createdAt: 1_700_000_000_000,
  updatedAt: 1_700_000_000_000
})

export const session = (id: string, overrides: Partial<SessionRecord> = {}): SessionRecord => ({
  id,
  protocol: 'mqtt',
  clientId: id,
  deviceId: `dev-${id}`,
  username: `dev-${id}`,
  mountpoint: `dev-${id}/`,
  node: 'iothub@test',
  peerHost: '127.0.0.1',
  peerPort: 50000,
  sockPort: 1883,
  keepalive: 60,
  protoVer: 4,
  cleanStart: false,
  expiryInterval: 7200,
  connected: true,
  createdAt: 1_700_000_000_000,
  connectedAt: 1_700_000_000_000,
  disconnectedAt: null,
  disconnectReason: null,
  incarnation: '0000000001.0000.iothub@test',
  version: 1,
  ...overrides
})

export const subscription = (id: string, sessionId: string): SubscriptionEntity => ({
  id,
  type: 'subscription',
  owner: 'owner-1',
  source: 'iothub',
  sessionId,
  deviceId: `dev-${sessionId}`,
  topic: 'v1/devices/me/#',
  brokerTopic: `dev-${sessionId}/v1/devices/me/#`,
  properties: ['attributes', 'telemetry', 'commands', 'raw'],
  mode: 'realtime',
  filter: `insert into ${id} select dev-${sessionId}.attributes`,
  createdAt: 1_700_000_000_000
})

const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text))
const text = (b: Uint8Array): string => Buffer.from(b).toString()

export function storeContract(name: string, makeHarness: () => Promise<StoreHarness>): void {
  describe(`Store contract: ${name}`, () => {
    let harness: StoreHarness
    let store: Store

    before(async () => {
      harness = await makeHarness()
      store = await harness.open()
    })
    after(async () => {
      await store.close()
      await harness.destroy()
    })

    it('loads nothing from a new store', async () => {
      const snapshot = await loadAll(store)
      assert.deepEqual(snapshot, {
        devices: [],
        deviceProperties: [],
        subscriptions: [],
        sessions: [],
        topics: [],
        retained: [],
        outgoing: [],
        incoming: [],
        wills: [],
        journal: [],
        logPosition: 0
      })
    })

    it('keeps subscription entities and device properties, each property replaced as a whole', async () => {
      await store.commit([
        { op: 'subscription.put', subscription: subscription('sub-1', 'sp1') },
        { op: 'subscription.put', subscription: subscription('sub-2', 'sp1') },
        { op: 'subscription.put', subscription: subscription('sub-3', 'sp2') },
        { op: 'device.property', deviceId: 'dp1', name: 'attributes', value: { a: 1, nested: { b: [1, 2] } }, updatedAt: 10 },
        { op: 'device.property', deviceId: 'dp1', name: 'connectinfo', value: { _online: true }, updatedAt: 11 }
      ])
      await store.commit([
        { op: 'subscription.put', subscription: { ...subscription('sub-1', 'sp1'), properties: ['attributes', 'raw'] } },
        { op: 'subscription.delete', id: 'sub-2' },
        { op: 'device.property', deviceId: 'dp1', name: 'attributes', value: { c: 3 }, updatedAt: 12 }
      ])
      await store.close()
      store = await harness.open()
      let snapshot = await loadAll(store)
      assert.deepEqual(
        snapshot.subscriptions.sort((a, b) => a.id.localeCompare(b.id)),
        [{ ...subscription('sub-1', 'sp1'), properties: ['attributes', 'raw'] }, subscription('sub-3', 'sp2')]
      )
      assert.deepEqual(
        snapshot.deviceProperties.sort((a, b) => a.name.localeCompare(b.name)),
        [
          { deviceId: 'dp1', name: 'attributes', value: { c: 3 }, updatedAt: 12 },
          { deviceId: 'dp1', name: 'connectinfo', value: { _online: true }, updatedAt: 11 }
        ]
      )
      await store.commit([{ op: 'subscription.clear', sessionId: 'sp1' }])
      snapshot = await loadAll(store)
      assert.deepEqual(snapshot.subscriptions.map((e) => e.id), ['sub-3'], 'clear removes only that session’s')
      await store.commit([{ op: 'subscription.clear', sessionId: 'sp2' }])
    })

    it('stores every kind of record and loads it back after a reopen', async () => {
      await store.commit([
        { op: 'device.put', device: device('d1') },
        { op: 'session.put', session: session('s1') },
        { op: 'topic.put', sessionId: 's1', subscription: { topic: 'a/+', qos: 1, rh: 0, rap: true, nl: false, subscriptionIdentifier: 7 }, persistent: true },
        { op: 'topic.put', sessionId: 's1', subscription: { topic: 'b/#', qos: 0 }, persistent: false },
        { op: 'retained.put', topic: 'r/1', packet: bytes('retained-1') },
        { op: 'outgoing.put', clientId: 's1', seq: 2, packet: bytes('second') },
        { op: 'outgoing.put', clientId: 's1', seq: 1, packet: bytes('first') },
        { op: 'incoming.put', clientId: 's1', messageId: 42, packet: bytes('qos2') },
        { op: 'will.put', clientId: 's1', packet: bytes('will') },
        { op: 'journal.put', seq: 9, packet: bytes('accepted-9') },
        { op: 'journal.put', seq: 3, packet: bytes('accepted-3') }
      ])
      await store.close()
      store = await harness.open()
      const snapshot = await loadAll(store)
      assert.deepEqual(snapshot.devices, [device('d1')])
      assert.deepEqual(snapshot.sessions, [session('s1')])
      const topics = [...snapshot.topics].sort((a, b) => a.subscription.topic.localeCompare(b.subscription.topic))
      assert.deepEqual(topics, [
        { sessionId: 's1', persistent: true, subscription: { topic: 'a/+', qos: 1, rh: 0, rap: true, nl: false, subscriptionIdentifier: 7 } },
        { sessionId: 's1', persistent: false, subscription: { topic: 'b/#', qos: 0 } }
      ])
      assert.deepEqual(snapshot.retained.map((r) => [r.topic, text(r.packet)]), [['r/1', 'retained-1']])
      assert.deepEqual(snapshot.outgoing.map((o) => [o.clientId, o.seq, text(o.packet)]), [['s1', 1, 'first'], ['s1', 2, 'second']], 'outgoing in seq order')
      assert.deepEqual(snapshot.incoming.map((i) => [i.clientId, i.messageId, text(i.packet)]), [['s1', 42, 'qos2']])
      assert.deepEqual(snapshot.wills.map((w) => [w.clientId, text(w.packet)]), [['s1', 'will']])
      assert.deepEqual(snapshot.journal.map((j) => [j.seq, text(j.packet)]), [[3, 'accepted-3'], [9, 'accepted-9']], 'journal in seq order')
    })

    it('replaces on put and removes on delete and clear, touching nothing else', async () => {
      await store.commit([
        { op: 'session.put', session: session('s2', { connected: false, version: 2 }) },
        { op: 'topic.put', sessionId: 's2', subscription: { topic: 'x', qos: 2 }, persistent: true },
        { op: 'topic.put', sessionId: 's2', subscription: { topic: 'y', qos: 1 }, persistent: true },
        { op: 'outgoing.put', clientId: 's2', seq: 1, packet: bytes('m1') }
      ])
      await store.commit([
        { op: 'session.put', session: session('s2', { connected: true, version: 3 }) },
        { op: 'topic.put', sessionId: 's2', subscription: { topic: 'x', qos: 0 }, persistent: true },
        { op: 'topic.delete', sessionId: 's2', topic: 'y' },
        { op: 'outgoing.put', clientId: 's2', seq: 1, packet: bytes('m1-updated') },
        { op: 'retained.delete', topic: 'r/1' },
        { op: 'will.delete', clientId: 's1' },
        { op: 'incoming.delete', clientId: 's1', messageId: 42 },
        { op: 'journal.delete', seq: 3 }
      ])
      let snapshot = await loadAll(store)
      assert.equal(snapshot.sessions.find((s) => s.id === 's2')?.version, 3)
      await store.commit([{ op: 'session.version', id: 's2', version: 4 }])
      snapshot = await loadAll(store)
      assert.deepEqual(snapshot.sessions.find((s) => s.id === 's2'), session('s2', { connected: true, version: 4 }), 'only the version changed')
      assert.deepEqual(
        snapshot.topics.filter((t) => t.sessionId === 's2').map((t) => [t.subscription.topic, t.subscription.qos]),
        [['x', 0]]
      )
      assert.deepEqual(snapshot.outgoing.filter((o) => o.clientId === 's2').map((o) => text(o.packet)), ['m1-updated'])
      assert.deepEqual(snapshot.retained, [])
      assert.deepEqual(snapshot.wills, [])
      assert.deepEqual(snapshot.incoming, [])
      assert.deepEqual(snapshot.journal.map((j) => j.seq), [9])
      // a range of entries at once (what a turn's routed pushes leave), the ones around it kept
      await store.commit(Array.from({ length: 6 }, (_, i): Mutation => ({ op: 'journal.put', seq: 20 + i, packet: bytes(`r${i}`) })))
      await store.commit([{ op: 'journal.delete', seq: 21, through: 24 }])
      assert.deepEqual((await loadAll(store)).journal.map((j) => j.seq), [9, 20, 25])
      await store.commit([{ op: 'journal.delete', seq: 20 }, { op: 'journal.delete', seq: 25, through: 25 }])
      assert.deepEqual((await loadAll(store)).journal.map((j) => j.seq), [9])

      await store.commit([
        { op: 'topic.clear', sessionId: 's2' },
        { op: 'outgoing.clear', clientId: 's2' },
        { op: 'session.delete', id: 's2' }
      ])
      snapshot = await loadAll(store)
      assert.equal(snapshot.sessions.some((s) => s.id === 's2'), false)
      assert.equal(snapshot.topics.some((t) => t.sessionId === 's2'), false)
      assert.equal(snapshot.topics.filter((t) => t.sessionId === 's1').length, 2, "another session's topics stay")
      assert.equal(snapshot.outgoing.some((o) => o.clientId === 's2'), false)
      assert.equal(snapshot.outgoing.filter((o) => o.clientId === 's1').length, 2, "another client's queue stays")
    })

    it('group-commits concurrent callers into fewer transactions, each resolved once durable', async () => {
      const batches: number[] = []
      await store.close()
      store = await harness.open({ onBatch: (commits) => batches.push(commits) })
      const commits = Array.from({ length: 500 }, (_, i) => store.commit([{ op: 'device.put', device: device(`g${i}`) }]))
      await Promise.all(commits)
      assert.equal(
        batches.reduce((a, b) => a + b, 0),
        500,
        'every commit was in a batch'
      )
      assert.ok(batches.length < 500, `500 concurrent commits shared transactions (${batches.length} batches)`)
      await store.close()
      store = await harness.open()
      assert.equal((await loadAll(store)).devices.filter((d) => d.id.startsWith('g')).length, 500)
    })

    it('with maxBatch 1, writes one transaction per commit (the per-event baseline)', async () => {
      const batches: number[] = []
      await store.close()
      store = await harness.open({ maxBatch: 1, onBatch: (commits) => batches.push(commits) })
      await Promise.all(Array.from({ length: 20 }, (_, i) => store.commit([{ op: 'device.put', device: device(`b${i}`) }])))
      assert.deepEqual(batches, Array.from({ length: 20 }, () => 1))
    })

    it('refuses a commit it cannot store, stores none of its mutations, and fails only that caller', async () => {
      const broken = { op: 'outgoing.put', clientId: 'bad', seq: 1, packet: null } as unknown as Mutation
      const results = await Promise.allSettled([
        store.commit([{ op: 'device.put', device: device('innocent-1') }]),
        store.commit([{ op: 'device.put', device: device('half') }, broken]),
        store.commit([{ op: 'device.put', device: device('innocent-2') }])
      ])
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'rejected', 'fulfilled']
      )
      const ids = (await loadAll(store)).devices.map((d) => d.id)
      assert.ok(ids.includes('innocent-1') && ids.includes('innocent-2'), 'callers sharing the batch were stored')
      assert.equal(ids.includes('half'), false, 'the failed commit left nothing behind')
      await store.commit([{ op: 'device.put', device: device('after-failure') }])
      assert.equal(store.health().ok, true, 'a later successful commit clears the failure')
    })

    it('resolves a commit with the answer its caller gave, once durable — also when a caller it shared a batch with is refused', async () => {
      const broken = { op: 'outgoing.put', clientId: 'bad', seq: 1, packet: null } as unknown as Mutation
      const results = await Promise.allSettled([
        store.commit([{ op: 'device.put', device: device('answer-1') }], { answer: 'one' }),
        store.commit([broken], { answer: 'never' }),
        store.commit([{ op: 'device.put', device: device('answer-2') }], { answer: { n: 2 }, background: true }),
        store.commit([], { answer: 3 }),
        store.commit([{ op: 'device.put', device: device('answer-4') }])
      ])
      assert.deepEqual(
        results.map((r) => (r.status === 'fulfilled' ? { answer: r.value as unknown } : 'refused')),
        [{ answer: 'one' }, 'refused', { answer: { n: 2 } }, { answer: 3 }, { answer: undefined }]
      )
      const ids = (await loadAll(store)).devices.map((d) => d.id)
      assert.ok(['answer-1', 'answer-2', 'answer-4'].every((id) => ids.includes(id)), 'answered commits are stored')
    })

    it('logs each change of what the hub knows in commit order, without gaps; the broker’s own state is not logged', async () => {
      const from = (await loadAll(store)).logPosition
      const first: Mutation[] = [
        { op: 'device.put', device: device('logged-1') },
        { op: 'retained.put', topic: 'not/logged', packet: bytes('r') },
        { op: 'session.put', session: session('logged-s') },
        { op: 'topic.put', sessionId: 'logged-s', subscription: { topic: 'a/b', qos: 1 }, persistent: true }
      ]
      const second: Mutation[] = [
        { op: 'device.property', deviceId: 'logged-1', name: 'attributes', value: { a: 1 }, updatedAt: 5 },
        { op: 'session.delete', id: 'logged-s', incarnation: session('logged-s').incarnation }
      ]
      // a failed commit in between appends nothing and leaves no gap
      const broken = { op: 'outgoing.put', clientId: 'bad', seq: 1, packet: null } as unknown as Mutation
      await store.commit(first)
      await assert.rejects(store.commit([{ op: 'device.put', device: device('never') }, broken]))
      await store.commit(second)
      const entries = await store.readLog(from, 100)
      assert.deepEqual(
        entries.map((e) => e.seq),
        [1, 2, 3, 4, 5].map((n) => from + n)
      )
      assert.deepEqual(
        entries.map((e) => e.change),
        [first[0], first[2], first[3], ...second]
      )
      assert.equal((await loadAll(store)).logPosition, from + 5)
      assert.deepEqual(
        (await store.readLog(from + 3, 1)).map((e) => e.seq),
        [from + 4],
        'read from any position, at most the limit'
      )
    })

    it('writes the rows of topic changes its session’s entry carries, and logs them only in that entry', async () => {
      const from = (await store.readLog(0, 1_000_000)).at(-1)?.seq ?? 0
      const subscription = { topic: 'dev-carried-s/a/b', qos: 1 as const }
      const version: Mutation = { op: 'session.version', id: 'carried-s', version: 2, session: session('carried-s', { version: 2 }), topics: [subscription], subscribed: [subscription], carriesTopics: true }
      await store.commit([{ op: 'session.put', session: session('carried-s') }])
      await store.commit([version, { op: 'topic.put', sessionId: 'carried-s', subscription, persistent: false, carried: true }])
      const topicsOf = async () => (await loadAll(store)).topics.filter((t) => t.sessionId === 'carried-s').map((t) => t.subscription.topic)
      assert.deepEqual(await topicsOf(), ['dev-carried-s/a/b'], 'the carried row is written')
      const ended: Mutation = { op: 'session.delete', id: 'carried-s', carriesTopics: true }
      await store.commit([ended, { op: 'topic.clear', sessionId: 'carried-s', carried: true }])
      assert.deepEqual(await topicsOf(), [], 'the carried clear is written')
      assert.deepEqual(
        (await store.readLog(from, 100)).map((e) => e.change.op),
        ['session.put', 'session.version', 'session.delete'],
        'no topic change is logged on its own'
      )
    })

    it('keeps line breaks and other control characters in what it logs, in the rows and in the log', async () => {
      const from = (await store.readLog(0, 1_000_000)).at(-1)?.seq ?? 0
      const awkward = 'line one\nline two\r\n\u2028\t"quoted"\\'
      const changes: Mutation[] = [
        { op: 'session.put', session: session('breaks-s', { username: awkward }) },
        { op: 'topic.put', sessionId: 'breaks-s', subscription: { topic: `dev-breaks-s/${awkward}`, qos: 1 }, persistent: true },
        { op: 'device.put', device: device('breaks-1') },
        { op: 'device.property', deviceId: 'breaks-1', name: 'attributes', value: { note: awkward, [awkward]: 1 }, updatedAt: 7 }
      ]
      await store.commit(changes)
      const loaded = await loadAll(store)
      assert.equal(loaded.sessions.find((x) => x.id === 'breaks-s')?.username, awkward)
      assert.deepEqual(
        loaded.topics.filter((t) => t.sessionId === 'breaks-s').map((t) => t.subscription.topic),
        [`dev-breaks-s/${awkward}`]
      )
      assert.deepEqual(loaded.deviceProperties.find((p) => p.deviceId === 'breaks-1')?.value, { note: awkward, [awkward]: 1 })
      assert.deepEqual(
        (await store.readLog(from, 100)).map((e) => e.change),
        changes,
        'each change is one log entry, read back equal'
      )
    })

    it('hands its follower every entry once and in order, before the commit that made it resolves', async () => {
      const follower = await harness.open()
      try {
        const position = (await loadAll(follower)).logPosition
        const seen: number[] = []
        follower.follow(position, (entries) => seen.push(...entries.map((e) => e.seq)))
        await follower.commit([{ op: 'device.put', device: device('followed-1') }])
        assert.deepEqual(seen, [position + 1], 'applied before the commit resolved')
        await Promise.all(Array.from({ length: 10 }, (_, i) => follower.commit([{ op: 'device.put', device: device(`followed-${i + 2}`) }])))
        assert.deepEqual(
          seen,
          Array.from({ length: 11 }, (_, i) => position + i + 1)
        )
        assert.equal(follower.following().applied, position + 11)
      } finally {
        await follower.close()
      }
    })

    it('prunes the change log by count and age, never past the position it is given', async () => {
      const from = (await loadAll(store)).logPosition
      await store.commit(Array.from({ length: 10 }, (_, i): Mutation => ({ op: 'device.put', device: device(`pruned-${i}`) })))
      const head = from + 10
      const seqs = async (): Promise<number[]> => (await store.readLog(0, 1_000_000)).map((e) => e.seq)
      // by count: keep the newest 4, but never past `through`
      assert.equal(await store.coordination.pruneLog({ through: head - 6, keepEntries: 4, keepSince: 0, limit: 1000 }), head - 6)
      assert.deepEqual((await seqs())[0], head - 5, 'stopped at the position a replica still needs')
      assert.equal(await store.coordination.pruneLog({ through: head, keepEntries: 4, keepSince: 0, limit: 1000 }), 2)
      assert.deepEqual(await seqs(), [head - 3, head - 2, head - 1, head])
      // by age: every entry is younger than a minute, so none goes
      assert.equal(await store.coordination.pruneLog({ through: head, keepEntries: 1_000_000, keepSince: Date.now() - 60_000, limit: 1000 }), 0)
      // older than now: all of them, at most `limit` at a time
      assert.equal(await store.coordination.pruneLog({ through: head, keepEntries: 1_000_000, keepSince: Date.now() + 1, limit: 3 }), 3)
      assert.deepEqual(await seqs(), [head])
      assert.equal((await loadAll(store)).logPosition, head, 'pruning never moves the numbering back')
    })

    it('lends a lease to one holder at a time, to another once it expires or is released', async () => {
      const now = Date.now()
      const a = await store.coordination.lease('contract-lease', 'node-a', 10_000, now)
      assert.equal(a.holder, 'node-a')
      assert.equal((await store.coordination.lease('contract-lease', 'node-a', 10_000, now + 1000)).expiresAt, now + 11_000, 'renewed')
      await store.coordination.leaseDone('contract-lease', 'node-a', now + 1500)
      await store.coordination.leaseDone('contract-lease', 'node-a', now + 1500, { trigger: 'start' })
      await store.coordination.leaseRequest('contract-lease', now + 1600, 'provider_loaded')
      const seen = await store.coordination.lease('contract-lease', 'node-a', 10_000, now + 1700)
      assert.deepEqual([seen.doneAt, seen.requestedAt, seen.requestReason, seen.note], [now + 1500, now + 1600, 'provider_loaded', { trigger: 'start' }])
      if (store.kind === 'sqlite') return // one writer, one replica: every lease is its own
      assert.equal((await store.coordination.lease('contract-lease', 'node-b', 10_000, now + 2000)).holder, 'node-a', 'held: not taken')
      assert.equal((await store.coordination.lease('contract-lease', 'node-b', 10_000, now + 12_000)).holder, 'node-b', 'expired: taken')
      await store.coordination.release('contract-lease', 'node-b')
      assert.equal((await store.coordination.lease('contract-lease', 'node-a', 10_000, now + 12_001)).holder, 'node-a', 'released: taken at once')
    })

    it('records replicas and forgets one that leaves', async () => {
      const record = { node: 'contract-node', address: 'http://127.0.0.1:1', startedAt: 1, lastSeen: 2, logPosition: 3 }
      await store.coordination.heartbeat(record)
      await store.coordination.heartbeat({ ...record, lastSeen: 5, logPosition: 7 })
      assert.deepEqual(
        (await store.coordination.replicas()).filter((r) => r.node === 'contract-node'),
        [{ ...record, lastSeen: 5, logPosition: 7 }]
      )
      await store.coordination.leave('contract-node', 999)
      assert.equal((await store.coordination.replicas()).filter((r) => r.node === 'contract-node').length, 1, 'another run of the node: left alone')
      await store.coordination.leave('contract-node', 1)
      assert.deepEqual((await store.coordination.replicas()).filter((r) => r.node === 'contract-node'), [])
    })

    it('keeps pushes by run and number until deleted, and pages a run\'s in their order; none are logged', async () => {
      const push = (run: string, seq: number, at: number) => ({ run, seq, topic: `d/v1/devices/me/attributes`, payload: bytes(`${run}:${seq}`), qos: 1 as const, at })
      const head = (await store.readLog(0, 1_000_000)).length
      await store.commit([
        { op: 'push.put', push: push('node-b#2.x', 1, 300) },
        { op: 'push.put', push: push('node-a#1.x', 2, 200) },
        { op: 'push.put', push: push('node-a#1.x', 1, 100) },
        // another replica's run numbers its own from 1: no collision
        { op: 'push.put', push: push('node-b#2.x', 2, 200) }
      ])
      const key = (p: { run: string; seq: number }) => `${p.run}/${p.seq}`
      const all = async () => [...(await store.readPushes('node-a#1.x', 0, 10)), ...(await store.readPushes('node-b#2.x', 0, 10))].map(key)
      assert.deepEqual((await store.pushRuns()).sort(), ['node-a#1.x', 'node-b#2.x'])
      assert.equal(await store.countPushes(), 4, 'every run\'s counted')
      assert.deepEqual(await all(), ['node-a#1.x/1', 'node-a#1.x/2', 'node-b#2.x/1', 'node-b#2.x/2'], 'each run by number')
      const [first] = await store.readPushes('node-a#1.x', 0, 1)
      assert.deepEqual([text(first!.payload), first!.topic, first!.qos, first!.at], ['node-a#1.x:1', 'd/v1/devices/me/attributes', 1, 100])
      assert.deepEqual((await store.readPushes('node-a#1.x', 1, 10)).map(key), ['node-a#1.x/2'], 'the page after the last one read')
      await store.commit([{ op: 'push.delete', run: 'node-a#1.x', seq: 1 }, { op: 'push.delete', run: 'node-b#2.x', seq: 1 }])
      assert.deepEqual(await all(), ['node-a#1.x/2', 'node-b#2.x/2'])
      await store.commit([{ op: 'push.delete', run: 'node-a#1.x', seq: 2 }, { op: 'push.delete', run: 'node-b#2.x', seq: 2 }])
      assert.deepEqual(await store.pushRuns(), [])
      // a range of one run's (what a turn's routed pushes leave), the same numbers of another run kept
      await store.commit([
        ...Array.from({ length: 5 }, (_, i): Mutation => ({ op: 'push.put', push: push('node-a#1.x', 10 + i, 400) })),
        { op: 'push.put', push: push('node-b#2.x', 11, 400) }
      ])
      await store.commit([{ op: 'push.delete', run: 'node-a#1.x', seq: 11, through: 13 }])
      assert.deepEqual(await all(), ['node-a#1.x/10', 'node-a#1.x/14', 'node-b#2.x/11'])
      assert.equal(await store.countPushes(), 3)
      await store.commit([{ op: 'push.delete', run: 'node-a#1.x', seq: 10, through: 14 }, { op: 'push.delete', run: 'node-b#2.x', seq: 11 }])
      assert.deepEqual(await store.pushRuns(), [])
      assert.equal(await store.countPushes(), 0)
      assert.equal((await store.readLog(0, 1_000_000)).length, head, 'the broker side of a change: not a change of what the hub knows')
    })

    it("tells when the earliest of other runs' pushes on a topic recorded before a given one was recorded, in one order every replica agrees on", async () => {
      const commands = 'cmd-dev/v1/devices/me/commands'
      const at = 5_000
      const push = (run: string, seq: number, topic: string, when: number) => ({ run, seq, topic, payload: bytes('x'), qos: 1 as const, at: when })
      const earliest = (topic: string, run: string, when: number) => store.earliestPushElsewhere(topic, { run, at: when })
      // the later push stored first: a store reading its rows in the order they were written would answer it
      await store.commit([{ op: 'push.put', push: push('node-d#4.x', 1, commands, at + 50) }])
      await store.commit([
        { op: 'push.put', push: push('node-b#2.x', 1, commands, at) },
        { op: 'push.put', push: push('node-b#2.x', 2, 'other-dev/v1/devices/me/commands', at - 100) },
        { op: 'push.put', push: push('node-b#2.x', 3, 'cmd-dev/v1/devices/me/attributes', at - 100) }
      ])
      assert.equal(await earliest(commands, 'node-c#3.x', at + 1), at, 'recorded earlier by another run')
      assert.equal(await earliest(commands, 'node-c#3.x', at + 100), at, 'the earliest of two')
      assert.equal(await earliest(commands, 'node-c#3.x', at - 1), undefined, 'recorded later')
      // the same millisecond: the smaller run goes first, as every replica reads it
      assert.equal(await earliest(commands, 'node-c#3.x', at), at)
      assert.equal(await earliest(commands, 'node-a#1.x', at), undefined)
      assert.equal(await earliest(commands, 'node-b#2.x', at + 1), undefined, "a run's own pushes are its own to order")
      assert.equal(await earliest('cmd-dev/v1/devices/me/raw', 'node-c#3.x', at + 1), undefined, 'another topic of the device')
      assert.equal(await earliest('cmd-dev/v1/devices/me/attributes', 'node-c#3.x', at + 1), undefined, 'attributes pushes are not kept in order')
      await store.commit([{ op: 'push.delete', run: 'node-b#2.x', seq: 1, through: 3 }])
      assert.equal(await earliest(commands, 'node-c#3.x', at + 1), undefined, 'deleted once routed')
      assert.equal(await earliest(commands, 'node-c#3.x', at + 100), at + 50, 'the one left')
      await store.commit([{ op: 'push.delete', run: 'node-d#4.x', seq: 1 }])
    })

    it('reads the properties of several devices at once (a page of a device listing)', async () => {
      await store.commit([
        { op: 'device.put', device: device('many-a') },
        { op: 'device.put', device: device('many-b') },
        { op: 'device.put', device: device('many-c') },
        { op: 'device.property', deviceId: 'many-a', name: 'attributes', value: { a: 1 }, updatedAt: 1 },
        { op: 'device.property', deviceId: 'many-a', name: 'telemetry', value: { t: 2 }, updatedAt: 2 },
        { op: 'device.property', deviceId: 'many-c', name: 'attributes', value: { c: 3 }, updatedAt: 3 }
      ])
      const read = await store.readPropertiesOf(['many-a', 'many-b', 'many-c', 'many-unknown'])
      const seen = read.map((p) => [p.deviceId, p.name, p.value, p.updatedAt]).sort((x, y) => `${String(x[0])}${String(x[1])}`.localeCompare(`${String(y[0])}${String(y[1])}`))
      assert.deepEqual(seen, [
        ['many-a', 'attributes', { a: 1 }, 1],
        ['many-a', 'telemetry', { t: 2 }, 2],
        ['many-c', 'attributes', { c: 3 }, 3]
      ])
      assert.deepEqual(await store.readPropertiesOf([]), [])
    })

    it('deletes a device with its properties, logs the deletion, and keeps its token key across a reopen', async () => {
      const hashed = store.tokens.hash('a-token')
      assert.equal(store.tokens.matches(hashed, 'a-token'), true)
      assert.equal(store.tokens.matches(hashed, 'another'), false)
      const position = (await loadAll(store)).logPosition
      await store.commit([
        { op: 'device.put', device: device('gone') },
        { op: 'device.put', device: device('stays') },
        { op: 'device.property', deviceId: 'gone', name: 'attributes', value: { a: 1 }, updatedAt: 1 },
        { op: 'device.property', deviceId: 'gone', name: 'telemetry', value: { t: 2 }, updatedAt: 2 },
        { op: 'device.property', deviceId: 'stays', name: 'attributes', value: { s: 3 }, updatedAt: 3 }
      ])
      await store.commit([{ op: 'device.delete', id: 'gone', device: device('gone') }])
      assert.equal(await store.readDevice('gone'), undefined)
      assert.deepEqual(await store.readProperties('gone'), [])
      assert.deepEqual((await store.readProperties('stays')).map((p) => p.value), [{ s: 3 }])
      // deleted and made again in one batch: the new device has none of the old one's properties
      await store.commit([
        { op: 'device.property', deviceId: 'stays', name: 'telemetry', value: { before: true }, updatedAt: 4 },
        { op: 'device.delete', id: 'stays' },
        { op: 'device.put', device: device('stays') },
        { op: 'device.property', deviceId: 'stays', name: 'commands', value: { after: true }, updatedAt: 5 }
      ])
      assert.deepEqual((await store.readProperties('stays')).map((p) => [p.name, p.value]), [['commands', { after: true }]])
      const logged = (await store.readLog(position, 100)).map((e) => e.change.op)
      assert.deepEqual(logged.filter((op) => op === 'device.delete').length, 2)
      await store.close()
      store = await harness.open()
      assert.equal(store.tokens.hash('a-token'), hashed, 'the key is the store’s, kept')
      const snapshot = await loadAll(store)
      assert.deepEqual(snapshot.devices.filter((d) => d.id === 'gone' || d.id === 'stays').map((d) => d.id), ['stays'])
      assert.deepEqual(snapshot.deviceProperties.filter((p) => p.deviceId === 'gone' || p.deviceId === 'stays').map((p) => p.name), ['commands'])
    })

    it('rejects commits after close', async () => {
      await store.close()
      await assert.rejects(store.commit([{ op: 'device.put', device: device('late') }]), /closed/)
      store = await harness.open()
    })
  })
}
