/**
 * The FleetReads contract: what every implementation answers alike, written once and run against
 * each (test/store/fleet-reads.test.ts: PostgreSQL's queries, and the caches of a SQLite hub).
 * A harness takes committed changes (through a store's `commit`, as the hub makes them) and
 * answers reads once they are committed.
 *
 * The fleet's ids differ in case and in byte order where UTF-16 and UTF-8 disagree (U+FFFD sorts
 * before U+1F600 in UTF-8, after it in UTF-16), and hold `%` and `_`, which SQL's LIKE would read.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Device } from '../../src/domain/device.js'
import type { SessionRecord, TopicSubscription } from '../../src/domain/session.js'
import type { SubscriptionEntity } from '../../src/domain/subscription.js'
import { topicCursor, type DeviceFilter, type FleetReads, type PageRequest, type SessionFilter, type TopicFilter, type TopicRow } from '../../src/store/fleet-reads.js'
import type { Mutation } from '../../src/store/store.js'
import { session as contractSession } from './contract.js'

export interface FleetHarness {
  /** Resolves once the mutations are committed and `reads` answers with them. */
  commit(mutations: readonly Mutation[]): Promise<void>
  readonly reads: FleetReads
  close(): Promise<void>
}

const EMOJI = '\u{1F600}x'
const REPLACEMENT = '\uFFFDy'

/** Every session of the fleet, in byte order of their UTF-8 ids. */
const ALL = ['A1', 'B2', 'a1', 'b2', 'p%_q', 'é3', REPLACEMENT, EMOJI]

const s = (id: string, overrides: Partial<SessionRecord>): SessionRecord => contractSession(id, overrides)

const FLEET: SessionRecord[] = [
  // connected, with the disconnect of an earlier connection long past: never due
  s('A1', { deviceId: 'd1', node: 'n1', username: 'alice', peerHost: '10.0.0.1', createdAt: 1000, connectedAt: 5000, disconnectedAt: 100, expiryInterval: 1 }),
  s('B2', { deviceId: 'd1', node: 'n2', username: 'bob', peerHost: '10.0.0.2', protocol: 'coap', connected: false, disconnectedAt: 6000, disconnectReason: 'socket_error', expiryInterval: 10, createdAt: 2000, connectedAt: 5500 }),
  s('a1', { deviceId: 'd2', node: 'n1', username: null, peerHost: null, peerPort: null, cleanStart: true, expiryInterval: 0, protoVer: 5, createdAt: 3000, connectedAt: 6000 }),
  s('b2', { deviceId: 'd2', node: 'n2', username: 'alicia', peerHost: '10.0.0.1', connected: false, disconnectedAt: 7000, disconnectReason: 'client_disconnect', expiryInterval: 9, createdAt: 4000, connectedAt: 6500 }),
  s('p%_q', { deviceId: 'd5', node: 'n3', username: 'p', createdAt: 500, connectedAt: 500 }),
  s('é3', { deviceId: 'd3', node: 'n1', username: 'Alice', connected: false, disconnectedAt: 8000, disconnectReason: 'keepalive_timeout', expiryInterval: 100, protoVer: 3, createdAt: 5000, connectedAt: 7000 }),
  s(REPLACEMENT, { deviceId: 'd3', protocol: 'coap', username: 'bob', createdAt: 6000, connectedAt: 8000 }),
  // offline but clean (a state the hub never stores; it must still never be due)
  s(EMOJI, { deviceId: 'd4', connected: false, cleanStart: true, expiryInterval: 0, disconnectedAt: 9000, createdAt: 7000, connectedAt: 8500 })
]

const topic = (sessionId: string, subscription: TopicSubscription, persistent = true): Mutation => ({ op: 'topic.put', sessionId, subscription, persistent })

const TOPICS: Mutation[] = [
  topic('A1', { topic: 'dev/a', qos: 1, rh: 1, rap: true, nl: false, subscriptionIdentifier: 7 }),
  topic('A1', { topic: '$share/g1/x/y', qos: 0 }, false),
  topic('B2', { topic: 'dev/#', qos: 2 }),
  topic('a1', { topic: 'x/+/z', qos: 1 }),
  topic(EMOJI, { topic: 'a', qos: 0 })
]

const entity = (id: string, sessionId: string, deviceId: string, properties: SubscriptionEntity['properties']): SubscriptionEntity => ({
  id,
  type: 'subscription',
  owner: 'owner-1',
  source: 'iothub',
  sessionId,
  deviceId,
  topic: 'v1/devices/me/#',
  brokerTopic: `${deviceId}/v1/devices/me/#`,
  properties,
  mode: 'realtime',
  filter: `insert into ${id} select ${deviceId}.attributes`,
  createdAt: 1_700_000_000_000
})

const ENTITIES = [entity('sub-1', 'A1', 'd1', ['attributes']), entity('sub-2', 'B2', 'd1', ['attributes', 'telemetry']), entity('sub-3', 'a1', 'd2', ['raw'])]

const ids = (sessions: readonly { id: string }[]): string[] => sessions.map((x) => x.id)

const dev = (id: string, owner: string, group: string, name: string, ext: Record<string, unknown> = {}): Device => ({
  id,
  name,
  owner,
  group,
  desc: '',
  ext,
  tokenHash: `hash-${id}`,
  createdAt: 1_700_000_000_000,
  updatedAt: 1_700_000_000_000
})

/**
 * The fleet's devices: d1, d2, d3 and d5 have a connected session (FLEET), d4 only an offline
 * one, d6 none. Names in mixed case, one with LIKE's wildcards, one with a non-ASCII capital;
 * d6's ext holds a \u0000, which PostgreSQL cannot read out of a json document as text.
 */
const DEVICES: Device[] = [
  dev('d1', 'alice', 'g1', 'Kitchen Thermostat'),
  dev('d2', 'bob', 'g1', 'Garage'),
  dev('d3', 'alice', 'g2', 'ÉTAGE sensor'),
  dev('d4', 'alice', 'g2', 'p%_x'),
  dev('d5', 'bob', 'g2', 'Porch'),
  dev('d6', 'carol', 'g1', 'spare', { '\u0000': 'nul' })
]

/** Every page of a listing, walked by `next`, with the `more` each answered. */
async function walk<T>(first: PageRequest, list: (page: PageRequest) => Promise<{ rows: T[]; more: boolean }>, next: (page: PageRequest, rows: T[]) => PageRequest) {
  const rows: T[] = []
  const mores: boolean[] = []
  let page = first
  for (let guard = 0; guard < 100; guard++) {
    const answer = await list(page)
    rows.push(...answer.rows)
    mores.push(answer.more)
    if (!answer.more) return { rows, mores }
    page = next(page, answer.rows)
  }
  throw new Error('paging never ended')
}

export function fleetReadsContract(name: string, makeHarness: () => Promise<FleetHarness>): void {
  describe(`FleetReads contract: ${name}`, () => {
    let harness: FleetHarness
    let reads: FleetReads

    before(async () => {
      harness = await makeHarness()
      reads = harness.reads
      await harness.commit([
        ...DEVICES.map((device): Mutation => ({ op: 'device.put', device })),
        ...FLEET.map((session): Mutation => ({ op: 'session.put', session })),
        ...TOPICS,
        ...ENTITIES.map((subscription): Mutation => ({ op: 'subscription.put', subscription }))
      ])
    })
    after(() => harness.close())

    const listed = async (filter: SessionFilter): Promise<string[]> => ids((await reads.sessions(filter, { limit: 100 })).sessions)

    it('lists every session in byte order of its id, with its topics ordered by topic', async () => {
      const { sessions, more } = await reads.sessions({}, { limit: 100 })
      assert.deepEqual(ids(sessions), ALL)
      assert.equal(more, false)
      assert.deepEqual(sessions[0], {
        ...FLEET[0],
        topics: [
          { topic: '$share/g1/x/y', qos: 0 },
          { topic: 'dev/a', qos: 1, rh: 1, rap: true, nl: false, subscriptionIdentifier: 7 }
        ]
      })
      assert.deepEqual(sessions.find((x) => x.id === 'B2'), { ...FLEET[1], topics: [{ topic: 'dev/#', qos: 2 }] })
      assert.deepEqual(sessions.find((x) => x.id === 'b2')?.topics, [])
    })

    it('reads one session, and the sessions of some ids, as stored', async () => {
      assert.deepEqual(await reads.session('a1'), { ...FLEET[2], topics: [{ topic: 'x/+/z', qos: 1 }] })
      assert.equal(await reads.session('A'), undefined)
      assert.equal(await reads.session('a'), undefined)
      const found = await reads.sessionsOf(['b2', 'nope', EMOJI])
      assert.deepEqual([...found.keys()].sort(), ['b2', EMOJI].sort())
      assert.deepEqual(found.get(EMOJI), { ...FLEET[7], topics: [{ topic: 'a', qos: 0 }] })
      assert.equal((await reads.sessionsOf([])).size, 0)
    })

    it('filters by each field, exactly', async () => {
      assert.deepEqual(await listed({ deviceId: 'd1' }), ['A1', 'B2'])
      assert.deepEqual(await listed({ deviceId: 'd' }), [])
      assert.deepEqual(await listed({ clientId: 'a1' }), ['a1'])
      assert.deepEqual(await listed({ clientId: 'A' }), [])
      assert.deepEqual(await listed({ protocol: 'coap' }), ['B2', REPLACEMENT])
      assert.deepEqual(await listed({ connected: true }), ['A1', 'a1', 'p%_q', REPLACEMENT])
      assert.deepEqual(await listed({ connected: false }), ['B2', 'b2', 'é3', EMOJI])
      assert.deepEqual(await listed({ node: 'n2' }), ['B2', 'b2'])
      assert.deepEqual(await listed({ node: 'iothub@test' }), [REPLACEMENT, EMOJI])
      assert.deepEqual(await listed({ username: 'alice' }), ['A1'])
      assert.deepEqual(await listed({ username: 'bob' }), ['B2', REPLACEMENT])
      assert.deepEqual(await listed({ peerHost: '10.0.0.1' }), ['A1', 'b2'])
      assert.deepEqual(await listed({ cleanStart: true }), ['a1', EMOJI])
      assert.deepEqual(await listed({ cleanStart: false }), ['A1', 'B2', 'b2', 'p%_q', 'é3', REPLACEMENT])
      assert.deepEqual(await listed({ protoVer: 5 }), ['a1'])
      assert.deepEqual(await listed({ protoVer: 3 }), ['é3'])
    })

    it('searches client ids and usernames by substring, case-sensitively, with no wildcard of its own', async () => {
      assert.deepEqual(await listed({ clientIdLike: '1' }), ['A1', 'a1'])
      assert.deepEqual(await listed({ clientIdLike: 'x' }), [EMOJI])
      assert.deepEqual(await listed({ clientIdLike: '%' }), ['p%_q'])
      assert.deepEqual(await listed({ clientIdLike: '_' }), ['p%_q'])
      assert.deepEqual(await listed({ clientIdLike: 'a%' }), [])
      assert.deepEqual(await listed({ clientIdLike: 'é' }), ['é3'])
      assert.deepEqual(await listed({ usernameLike: 'lic' }), ['A1', 'b2', 'é3'])
      assert.deepEqual(await listed({ usernameLike: 'ALI' }), [])
      // every session has a username for this search, '' when it has none
      assert.deepEqual(await listed({ usernameLike: '' }), ALL)
    })

    it('filters by creation and connection time, both bounds inclusive', async () => {
      assert.deepEqual(await listed({ createdAtFrom: 3000 }), ['a1', 'b2', 'é3', REPLACEMENT, EMOJI])
      assert.deepEqual(await listed({ createdAtTo: 2000 }), ['A1', 'B2', 'p%_q'])
      assert.deepEqual(await listed({ createdAtFrom: 2000, createdAtTo: 4000 }), ['B2', 'a1', 'b2'])
      assert.deepEqual(await listed({ connectedAtFrom: 6500 }), ['b2', 'é3', REPLACEMENT, EMOJI])
      assert.deepEqual(await listed({ connectedAtTo: 5500 }), ['A1', 'B2', 'p%_q'])
      assert.deepEqual(await listed({ connectedAtFrom: 6000, connectedAtTo: 6000 }), ['a1'])
    })

    it('applies every filter given', async () => {
      assert.deepEqual(await listed({ connected: false, node: 'n2' }), ['B2', 'b2'])
      assert.deepEqual(await listed({ deviceId: 'd3', protocol: 'coap', usernameLike: 'o' }), [REPLACEMENT])
      assert.deepEqual(await listed({ deviceId: 'd1', clientId: 'a1' }), [])
    })

    it('counts what each filter lists', async () => {
      const filters: SessionFilter[] = [{}, { deviceId: 'd1' }, { connected: true }, { clientIdLike: '%' }, { usernameLike: '' }, { node: 'none' }, { connected: false, node: 'n2' }]
      for (const filter of filters) assert.equal(await reads.countSessions(filter), (await listed(filter)).length, JSON.stringify(filter))
    })

    it('pages by keyset: pages concatenate to the whole, no duplicates, `more` exact', async () => {
      for (const limit of [1, 2, 3, 7, 8, 9]) {
        const { rows, mores } = await walk<string>(
          { limit },
          async (page) => {
            const { sessions, more } = await reads.sessions({}, page)
            assert.ok(sessions.length <= limit)
            return { rows: ids(sessions), more }
          },
          (page, rows) => ({ ...page, after: rows.at(-1) })
        )
        assert.deepEqual(rows, ALL, `limit ${limit}`)
        assert.equal(mores.length, Math.max(1, Math.ceil(ALL.length / limit)), `limit ${limit}`)
      }
      // filtered, and after an id that is no session's
      assert.deepEqual(ids((await reads.sessions({ connected: false }, { after: 'B2', limit: 2 })).sessions), ['b2', 'é3'])
      assert.deepEqual(await reads.sessions({ connected: false }, { after: 'c', limit: 2 }).then((p) => [ids(p.sessions), p.more]), [['é3', EMOJI], false])
      assert.deepEqual(await reads.sessions({}, { after: 'b', limit: 1 }).then((p) => [ids(p.sessions), p.more]), [['b2'], true])
      assert.deepEqual(await reads.sessions({}, { after: REPLACEMENT, limit: 5 }).then((p) => [ids(p.sessions), p.more]), [[EMOJI], false])
      assert.deepEqual(await reads.sessions({}, { after: EMOJI, limit: 5 }).then((p) => [ids(p.sessions), p.more]), [[], false])
    })

    it('pages by offset likewise', async () => {
      for (const limit of [1, 3, 8]) {
        const { rows } = await walk<string>(
          { offset: 0, limit },
          async (page) => {
            const { sessions, more } = await reads.sessions({}, page)
            return { rows: ids(sessions), more }
          },
          (page) => ({ ...page, offset: page.offset! + limit })
        )
        assert.deepEqual(rows, ALL, `limit ${limit}`)
      }
      assert.deepEqual(await reads.sessions({}, { offset: 6, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [[REPLACEMENT, EMOJI], false])
      assert.deepEqual(await reads.sessions({}, { offset: 5, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [['é3', REPLACEMENT], true])
      assert.deepEqual(await reads.sessions({}, { offset: 8, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [[], false])
      assert.deepEqual(await reads.sessions({ connected: true }, { offset: 1, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [['a1', 'p%_q'], true])
    })

    it('pages by offset after a keyset: the offset counts rows after the id', async () => {
      assert.deepEqual(await reads.sessions({}, { after: 'B2', offset: 1, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [['b2', 'p%_q'], true])
      assert.deepEqual(await reads.sessions({}, { after: 'b', offset: 4, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [[EMOJI], false])
      assert.deepEqual(await reads.sessions({}, { after: 'b', offset: 5, limit: 2 }).then((p) => [ids(p.sessions), p.more]), [[], false])
      // filtered: the offset counts matching rows only
      assert.deepEqual(await reads.sessions({ connected: true }, { after: 'A1', offset: 1, limit: 1 }).then((p) => [ids(p.sessions), p.more]), [['p%_q'], true])
      assert.deepEqual(await reads.sessions({ connected: false }, { after: 'B2', offset: 2, limit: 5 }).then((p) => [ids(p.sessions), p.more]), [[EMOJI], false])
      // every split of an offset into a keyset and the rest reads the same page
      for (let at = 0; at < ALL.length; at++) {
        for (const limit of [1, 3]) {
          const whole = await reads.sessions({}, { offset: at + 1, limit })
          const split = await reads.sessions({}, { after: ALL[at], limit })
          assert.deepEqual([ids(split.sessions), split.more], [ids(whole.sessions), whole.more], `after ${ALL[at]}, limit ${limit}`)
        }
      }
    })

    const ROWS: TopicRow[] = [
      { clientId: 'A1', node: 'n1', topic: '$share/g1/x/y', qos: 0 },
      { clientId: 'A1', node: 'n1', topic: 'dev/a', qos: 1 },
      { clientId: 'B2', node: 'n2', topic: 'dev/#', qos: 2 },
      { clientId: 'a1', node: 'n1', topic: 'x/+/z', qos: 1 },
      { clientId: EMOJI, node: 'iothub@test', topic: 'a', qos: 0 }
    ]
    const topicRows = async (filter: TopicFilter): Promise<TopicRow[]> => (await reads.topics(filter, { limit: 100 })).topics

    it('lists topics by client id, then topic, with their session’s node', async () => {
      assert.deepEqual(await reads.topics({}, { limit: 100 }), { topics: ROWS, more: false })
      assert.deepEqual(await topicRows({ clientId: 'A1' }), ROWS.slice(0, 2))
      assert.deepEqual(await topicRows({ clientId: 'a' }), [])
      assert.deepEqual(await topicRows({ node: 'n1' }), [ROWS[0], ROWS[1], ROWS[3]])
      assert.deepEqual(await topicRows({ topic: 'dev/#' }), [ROWS[2]])
      assert.deepEqual(await topicRows({ topic: 'dev/+' }), [])
      assert.deepEqual(await topicRows({ qos: 1 }), [ROWS[1], ROWS[3]])
      assert.deepEqual(await topicRows({ share: 'g1' }), [ROWS[0]])
      assert.deepEqual(await topicRows({ share: 'g' }), [])
      assert.deepEqual(await topicRows({ matchTopic: 'x/1/z' }), [ROWS[3]])
      assert.deepEqual(await topicRows({ matchTopic: 'dev/a' }), [ROWS[1], ROWS[2]])
      assert.deepEqual(await topicRows({ matchTopic: 'dev' }), [ROWS[2]])
      assert.deepEqual(await topicRows({ matchTopic: 'x/1/z/2' }), [])
      assert.deepEqual(await topicRows({ node: 'n1', qos: 1 }), [ROWS[1], ROWS[3]])
      for (const filter of [{}, { node: 'n1' }, { matchTopic: 'dev/a' }, { clientId: 'nope' }] as TopicFilter[]) {
        assert.equal(await reads.countTopics(filter), (await topicRows(filter)).length, JSON.stringify(filter))
      }
    })

    it('pages topics by keyset and by offset', async () => {
      for (const limit of [1, 2, 5]) {
        const keyset = await walk<TopicRow>(
          { limit },
          async (page) => {
            const { topics, more } = await reads.topics({}, page)
            return { rows: topics, more }
          },
          (page, rows) => ({ ...page, after: topicCursor(rows.at(-1)!) })
        )
        assert.deepEqual(keyset.rows, ROWS, `limit ${limit}`)
        const offset = await walk<TopicRow>(
          { offset: 0, limit },
          async (page) => {
            const { topics, more } = await reads.topics({}, page)
            return { rows: topics, more }
          },
          (page) => ({ ...page, offset: page.offset! + limit })
        )
        assert.deepEqual(offset.rows, ROWS, `limit ${limit}`)
      }
      assert.deepEqual(await reads.topics({}, { after: topicCursor(ROWS[4]!), limit: 3 }), { topics: [], more: false })
      // an offset after a keyset
      assert.deepEqual(await reads.topics({}, { after: topicCursor(ROWS[0]!), offset: 1, limit: 2 }), { topics: [ROWS[2], ROWS[3]], more: true })
      assert.deepEqual(await reads.topics({}, { after: topicCursor(ROWS[1]!), offset: 2, limit: 2 }), { topics: [ROWS[4]], more: false })
      assert.deepEqual(await reads.topics({ node: 'n1' }, { after: topicCursor(ROWS[0]!), offset: 1, limit: 2 }), { topics: [ROWS[3]], more: false })
      assert.deepEqual(await reads.topics({ qos: 1 }, { after: 'A', offset: 1, limit: 1 }), { topics: [ROWS[3]], more: false })
    })

    it('lists subscription entities by device and session, in id order, and whom a push reaches', async () => {
      assert.deepEqual(await reads.subscription('sub-2'), ENTITIES[1])
      assert.equal(await reads.subscription('sub-9'), undefined)
      assert.deepEqual(await reads.subscriptions({ limit: 10 }), { subscriptions: ENTITIES, more: false })
      assert.deepEqual(await reads.subscriptions({ deviceId: 'd1', limit: 1 }), { subscriptions: [ENTITIES[0]], more: true })
      assert.deepEqual(await reads.subscriptions({ deviceId: 'd1', after: 'sub-1', limit: 1 }), { subscriptions: [ENTITIES[1]], more: false })
      assert.deepEqual(await reads.subscriptions({ sessionId: 'a1', limit: 5 }), { subscriptions: [ENTITIES[2]], more: false })
      assert.deepEqual(await reads.subscriptions({ sessionId: 'a1', deviceId: 'd1', limit: 5 }), { subscriptions: [], more: false })
      assert.deepEqual(await reads.receiving('d1', 'attributes'), [ENTITIES[0], ENTITIES[1]])
      assert.deepEqual(await reads.receiving('d1', 'telemetry'), [ENTITIES[1]])
      assert.deepEqual(await reads.receiving('d1', 'raw'), [])
      assert.deepEqual(await reads.receiving('d2', 'raw'), [ENTITIES[2]])
      assert.deepEqual(await reads.receiving('d9', 'raw'), [])
    })

    it('finds offline persistent sessions due to expire: due at exactly now, never clean or connected ones', async () => {
      // B2: 6000 + 10 s, b2: 7000 + 9 s, both due at 16000
      assert.deepEqual(ids(await reads.dueToExpire(15_999, undefined, 10)), [])
      assert.deepEqual(await reads.dueToExpire(16_000, undefined, 10), [FLEET[1], FLEET[3]])
      assert.deepEqual(ids(await reads.dueToExpire(16_000, undefined, 1)), ['B2'])
      assert.deepEqual(ids(await reads.dueToExpire(16_000, 'B2', 1)), ['b2'])
      assert.deepEqual(ids(await reads.dueToExpire(16_000, 'b2', 10)), [])
      assert.deepEqual(ids(await reads.dueToExpire(1e15, undefined, 10)), ['B2', 'b2', 'é3'])
    })

    it('totals the fleet', async () => {
      assert.deepEqual(await reads.totals(), { sessions: 8, connectedByProtocol: { mqtt: 3, coap: 1 }, connectedByNode: { n1: 2, n3: 1, 'iothub@test': 1 }, subscriptions: 3, devices: DEVICES.length })
    })

    it('lists devices in id order, filtered by owner, group, connected and a search of id and name, paged by id', async () => {
      const devices = async (filter: DeviceFilter, limit = 100) => ids((await reads.devices(filter, { limit })).devices)
      const all = await reads.devices({}, { limit: 100 })
      assert.deepEqual(ids(all.devices), ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'])
      assert.equal(all.more, false)
      assert.deepEqual(all.devices[5], DEVICES[5], 'as stored, ext and token hash included')
      const pages = await walk({ limit: 4 }, async (page) => {
        const found = await reads.devices({}, page)
        return { rows: found.devices, more: found.more }
      }, (page, rows) => ({ ...page, after: rows.at(-1)!.id }))
      assert.deepEqual([ids(pages.rows), pages.mores], [['d1', 'd2', 'd3', 'd4', 'd5', 'd6'], [true, false]])
      assert.deepEqual(ids((await reads.devices({}, { after: 'd2', limit: 2 })).devices), ['d3', 'd4'])
      assert.deepEqual(await devices({ owner: 'alice' }), ['d1', 'd3', 'd4'])
      assert.deepEqual(await devices({ owner: 'Alice' }), [])
      assert.deepEqual(await devices({ group: 'g2' }), ['d3', 'd4', 'd5'])
      assert.deepEqual(await devices({ connected: true }), ['d1', 'd2', 'd3', 'd5'])
      assert.deepEqual(await devices({ connected: false }), ['d4', 'd6'])
      assert.deepEqual(await devices({ owner: 'alice', connected: false }), ['d4'])
      assert.deepEqual(await devices({ owner: 'bob', group: 'g2', connected: true }), ['d5'])
      // the search: ASCII letters without case, in the id or the name; LIKE's wildcards are plain text
      assert.deepEqual(await devices({ q: 'THERMO' }), ['d1'])
      assert.deepEqual(await devices({ q: 'D5' }), ['d5'])
      assert.deepEqual(await devices({ q: 'ar' }), ['d2', 'd6'])
      assert.deepEqual(await devices({ q: '%_' }), ['d4'])
      assert.deepEqual(await devices({ q: '%' }), ['d4'])
      assert.deepEqual(await devices({ q: 'étage' }), [], 'É is not an ASCII letter: compared as it is')
      assert.deepEqual(await devices({ q: 'ÉTAGE' }), ['d3'])
      assert.deepEqual(await devices({ q: 'o', owner: 'bob' }, 1), ['d5'])
      // a deleted device is listed no more
      await harness.commit([{ op: 'device.delete', id: 'd6', device: DEVICES[5] }])
      assert.deepEqual(await devices({ group: 'g1' }), ['d1', 'd2'])
    })

    it('answers with what changed after a page was listed (last but one: it changes the fleet)', async () => {
      const first = await reads.sessions({}, { limit: 3 })
      assert.deepEqual(ids(first.sessions), ['A1', 'B2', 'a1'])
      const b2 = { ...FLEET[3]!, connected: true, disconnectedAt: null, disconnectReason: null, connectedAt: 20_000, node: 'n1', peerHost: '10.0.0.9', incarnation: 'x', version: 2 }
      await harness.commit([
        { op: 'session.delete', id: 'B2' },
        { op: 'topic.clear', sessionId: 'B2' },
        { op: 'subscription.clear', sessionId: 'B2' },
        { op: 'session.put', session: b2 },
        { op: 'topic.put', sessionId: 'b2', subscription: { topic: 'new/t', qos: 1 }, persistent: true },
        { op: 'session.put', session: s('Ab', { deviceId: 'd1' }) },
        { op: 'session.version', id: 'a1', version: 5 }
      ])
      const next = await reads.sessions({}, { after: 'a1', limit: 2 })
      assert.deepEqual(next.sessions, [{ ...b2, topics: [{ topic: 'new/t', qos: 1 }] }, { ...FLEET[4]!, topics: [] }])
      assert.equal(await reads.session('B2'), undefined)
      assert.equal((await reads.session('a1'))?.version, 5)
      assert.deepEqual(await listed({ deviceId: 'd1' }), ['A1', 'Ab'])
      assert.deepEqual(await listed({ node: 'n2' }), [])
      assert.deepEqual(await listed({ peerHost: '10.0.0.9', connected: true }), ['b2'])
      assert.deepEqual(ids(await reads.dueToExpire(1e15, undefined, 10)), ['é3'])
      assert.deepEqual(await reads.receiving('d1', 'telemetry'), [])
      assert.deepEqual(await topicRows({ clientId: 'b2' }), [{ clientId: 'b2', node: 'n1', topic: 'new/t', qos: 1 }])
      assert.deepEqual(await reads.totals(), { sessions: 8, connectedByProtocol: { mqtt: 5, coap: 1 }, connectedByNode: { n1: 3, n3: 1, 'iothub@test': 2 }, subscriptions: 2, devices: DEVICES.length - 1 }) // d6 deleted above
      assert.equal(await reads.countSessions({}), 8)
      assert.equal(await reads.countTopics({}), 5)
    })

    it('keeps its unfiltered totals exact as rows are inserted, updated, deleted and cleared (last)', async () => {
      const listedTotals = async () => ({
        sessions: (await reads.sessions({}, { limit: 1000 })).sessions.length,
        topics: (await reads.topics({}, { limit: 1000 })).topics.length
      })
      const counted = async () => ({ sessions: await reads.countSessions({}), topics: await reads.countTopics({}) })
      const batches: Mutation[][] = [
        // updates only: the same rows again
        [{ op: 'session.put', session: FLEET[0]! }, topic('A1', { topic: 'dev/a', qos: 2 })],
        // a delete of what is not there, and an insert of what is
        [{ op: 'session.delete', id: 'never' }, { op: 'topic.delete', sessionId: 'A1', topic: 'nope' }, { op: 'session.put', session: s('n1', { deviceId: 'd9' }) }],
        // a clear and puts of its session after it, one of them a row the clear removed
        [topic('n1', { topic: 'one', qos: 0 }), topic('n1', { topic: 'two', qos: 0 })],
        [{ op: 'topic.clear', sessionId: 'n1' }, topic('n1', { topic: 'two', qos: 1 }), topic('n1', { topic: 'three', qos: 1 })],
        // a delete and a put of one key in one batch, and a put before a delete
        [{ op: 'session.delete', id: 'n1' }, { op: 'session.put', session: s('n1', { deviceId: 'd9' }) }, { op: 'session.put', session: s('n2', { deviceId: 'd9' }) }, { op: 'session.delete', id: 'n2' }],
        // a session ended with its topics
        [{ op: 'session.delete', id: 'A1' }, { op: 'topic.clear', sessionId: 'A1' }, { op: 'subscription.clear', sessionId: 'A1' }]
      ]
      for (const [i, batch] of batches.entries()) {
        await harness.commit(batch)
        assert.deepEqual(await counted(), await listedTotals(), `after batch ${i}`)
      }
      assert.deepEqual(await counted(), { sessions: 8, topics: 5 })
    })
  })
}
