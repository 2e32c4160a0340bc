/**
 * How a batch of mutations becomes PostgreSQL statements, without a database: one outcome per
 * row key (the last put or delete wins), clears that undo the puts before them in their scope,
 * session versions folded into a put, the fixed order of tables and of statements within one,
 * rows in key order whatever the batch's order, and the parameters (one array per column, as
 * many as the SQL text names, whatever the batch's size).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { QueryConfig } from 'pg'
import type { Device } from '../../src/domain/device.js'
import type { SessionRecord } from '../../src/domain/session.js'
import type { SubscriptionEntity } from '../../src/domain/subscription.js'
import { BatchStatements, FleetCountChange, type PlannedStatement } from '../../src/store/postgres/batch-statements.js'
import { qualifiedTables } from '../../src/store/postgres/schema.js'
import type { Mutation } from '../../src/store/store.js'

const statements = new BatchStatements(qualifiedTables('hub_test'))
const plan = (mutations: Mutation[]): QueryConfig[] => statements.plan(mutations)
const names = (planned: QueryConfig[]): (string | undefined)[] => planned.map((s) => s.name)

function device(id: string, name = id): Device {
  return { id, name, owner: 'o', group: 'g', desc: '', ext: {}, tokenHash: `h-${id}`, createdAt: 1, updatedAt: 1 }
}

function sessionRecord(id: string, version = 1): SessionRecord {
  return {
    id,
    protocol: 'mqtt',
    clientId: id,
    deviceId: id,
    username: id,
    mountpoint: `${id}/`,
    node: 'hub-1',
    peerHost: '10.0.0.1',
    peerPort: 40000,
    sockPort: 1883,
    keepalive: 60,
    protoVer: 4,
    cleanStart: false,
    expiryInterval: 3600,
    connected: true,
    createdAt: 1,
    connectedAt: 1,
    disconnectedAt: null,
    disconnectReason: null,
    incarnation: '000000001.0000.hub-1',
    version
  }
}

function subscription(id: string, sessionId: string): SubscriptionEntity {
  return { id, sessionId, deviceId: sessionId, topic: 'v1/devices/me/attributes', brokerTopic: `${sessionId}/v1/devices/me/attributes` } as SubscriptionEntity
}

const topicPut = (sessionId: string, topic: string, qos: 0 | 1 | 2 = 1): Mutation => ({ op: 'topic.put', sessionId, subscription: { topic, qos }, persistent: true })
const packet = (byte: number): Uint8Array => new Uint8Array([0x30, byte])

/** The one statement of `name` in a plan; fails when there is none or more. */
function statement(planned: QueryConfig[], name: string): QueryConfig {
  const found = planned.filter((s) => s.name === name)
  assert.equal(found.length, 1, `one ${name} in ${JSON.stringify(names(planned))}`)
  return found[0]!
}

/** The rows of a statement: its column arrays turned back into rows, as unnest does. */
function rows(s: QueryConfig): unknown[][] {
  const columns = s.values as unknown[][]
  return columns[0]!.map((_, r) => columns.map((column) => column[r]))
}

/** The highest $n the SQL text names. */
function placeholders(text: string): number {
  return Math.max(0, ...[...text.matchAll(/\$(\d+)/g)].map((m) => Number(m[1])))
}

describe('BatchStatements.plan', () => {
  it('plans nothing for an empty batch', () => {
    assert.deepEqual(plan([]), [])
  })

  it('puts all of a table’s rows in one upsert, the SQL naming the schema-qualified table and its key', () => {
    const planned = plan([{ op: 'device.put', device: device('b') }, { op: 'device.put', device: device('a') }, { op: 'device.put', device: device('c') }])
    assert.deepEqual(names(planned), ['iothub_devices_upsert'])
    const [upsert] = planned
    assert.equal(
      upsert!.text,
      'INSERT INTO "hub_test"."devices" (id, doc, owner, group_name, name) SELECT * FROM unnest($1::text[], $2::json[], $3::text[], $4::text[], $5::text[]) ' +
        'ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, owner = excluded.owner, group_name = excluded.group_name, name = excluded.name ' +
        'RETURNING (xmax = 0) AS inserted'
    )
    assert.deepEqual(rows(upsert!), ['a', 'b', 'c'].map((id) => [id, JSON.stringify(device(id)), 'o', 'g', id]), 'rows in key order')
  })

  it('lets the last put or delete of a key win', () => {
    const put = (id: string, name: string): Mutation => ({ op: 'device.put', device: device(id, name) })
    const planned = plan([put('a', 'first'), put('a', 'second'), put('b', 'kept'), { op: 'retained.delete', topic: 't/1' }, { op: 'retained.put', topic: 't/1', packet: packet(1) }])
    assert.deepEqual(rows(statement(planned, 'iothub_devices_upsert')), [
      ['a', JSON.stringify(device('a', 'second')), 'o', 'g', 'second'],
      ['b', JSON.stringify(device('b', 'kept')), 'o', 'g', 'kept']
    ])
    assert.deepEqual(rows(statement(planned, 'iothub_retained_upsert')), [['t/1', packet(1)]], 'a delete then a put leaves the put')
    assert.ok(!names(planned).includes('iothub_retained_delete'))
    const deleted = plan([{ op: 'retained.put', topic: 't/1', packet: packet(1) }, { op: 'retained.delete', topic: 't/1' }])
    assert.deepEqual(names(deleted), ['iothub_retained_delete'], 'a put then a delete leaves no row')
    assert.equal(statement(deleted, 'iothub_retained_delete').text, 'DELETE FROM "hub_test"."retained" WHERE topic = ANY($1::text[])')
    assert.deepEqual(statement(deleted, 'iothub_retained_delete').values, [['t/1']])
  })

  it('deletes composite keys through unnest, keeping keys that only differ in where a separator falls apart', () => {
    const planned = plan([
      { op: 'topic.delete', sessionId: 'a', topic: 'b/c' },
      { op: 'topic.delete', sessionId: 'a/b', topic: 'c' }
    ])
    const del = statement(planned, 'iothub_topics_delete')
    assert.equal(
      del.text,
      'DELETE FROM "hub_test"."topics" AS target USING unnest($1::text[], $2::text[]) AS gone(session_id, topic) WHERE target.session_id = gone.session_id AND target.topic = gone.topic'
    )
    assert.deepEqual(rows(del), [['a', 'b/c'], ['a/b', 'c']])
  })

  it('runs the tables in a fixed order, and within a table the clear, then deletes, then upserts', () => {
    const planned = plan([
      { op: 'journal.put', seq: 1, packet: packet(1) },
      { op: 'will.put', clientId: 'c', packet: packet(2) },
      { op: 'incoming.put', clientId: 'c', messageId: 1, packet: packet(3) },
      { op: 'outgoing.put', clientId: 'c', seq: 1, packet: packet(4) },
      { op: 'retained.put', topic: 't', packet: packet(5) },
      topicPut('s', 'x'),
      { op: 'topic.delete', sessionId: 's', topic: 'y' },
      { op: 'topic.clear', sessionId: 'other' },
      { op: 'subscription.put', subscription: subscription('sub-1', 's') },
      { op: 'device.property', deviceId: 'd', name: 'attributes', value: { a: 1 }, updatedAt: 5 },
      { op: 'session.put', session: sessionRecord('s') },
      { op: 'device.put', device: device('d') }
    ])
    assert.deepEqual(names(planned), [
      'iothub_devices_upsert',
      'iothub_sessions_upsert',
      'iothub_device_properties_upsert',
      'iothub_subscriptions_upsert',
      'iothub_topics_clear',
      'iothub_topics_delete',
      'iothub_topics_upsert',
      'iothub_retained_upsert',
      'iothub_outgoing_upsert',
      'iothub_incoming_upsert',
      'iothub_wills_upsert',
      'iothub_publish_journal_upsert'
    ])
  })

  it('lists rows in the same order whatever the batch’s order (two hubs lock rows in one order)', () => {
    const mutations: Mutation[] = [
      { op: 'outgoing.put', clientId: 'b', seq: 2, packet: packet(1) },
      { op: 'outgoing.put', clientId: 'a', seq: 10, packet: packet(2) },
      { op: 'outgoing.put', clientId: 'a', seq: 9, packet: packet(3) },
      { op: 'outgoing.delete', clientId: 'c', seq: 1 },
      { op: 'outgoing.delete', clientId: 'a', seq: 1 },
      topicPut('s2', 'x'),
      topicPut('s1', 'y'),
      topicPut('s1', 'x')
    ]
    const forward = plan(mutations)
    const backward = plan([...mutations].reverse())
    assert.deepEqual(backward, forward)
    assert.deepEqual(rows(statement(forward, 'iothub_topics_upsert')).map((r) => [r[0], r[1]]), [['s1', 'x'], ['s1', 'y'], ['s2', 'x']])
    assert.deepEqual(rows(statement(forward, 'iothub_outgoing_delete')), [['a', 1], ['c', 1]])
    assert.equal(new Set(rows(statement(forward, 'iothub_outgoing_upsert')).map((r) => `${String(r[0])} ${String(r[1])}`)).size, 3)
  })

  describe('clears', () => {
    it('a clear deletes its scope’s rows and turns the puts before it in that scope into deletes', () => {
      const planned = plan([topicPut('s', 'before'), { op: 'topic.clear', sessionId: 's' }, topicPut('s', 'after'), topicPut('other', 'kept')])
      assert.deepEqual(names(planned), ['iothub_topics_clear', 'iothub_topics_delete', 'iothub_topics_upsert'])
      const clear = statement(planned, 'iothub_topics_clear')
      assert.equal(clear.text, 'DELETE FROM "hub_test"."topics" WHERE session_id = ANY($1::text[])')
      assert.deepEqual(clear.values, [['s']])
      // a delete, not dropped: the row may have been stored under another session before the batch
      assert.deepEqual(rows(statement(planned, 'iothub_topics_delete')), [['s', 'before']])
      assert.deepEqual(rows(statement(planned, 'iothub_topics_upsert')).map((r) => [r[0], r[1]]), [['other', 'kept'], ['s', 'after']])
    })

    it('a key put again under another scope since survives the clear of the first', () => {
      const planned = plan([
        { op: 'subscription.put', subscription: subscription('sub-1', 'a') },
        { op: 'subscription.put', subscription: subscription('sub-1', 'b') },
        { op: 'subscription.clear', sessionId: 'a' }
      ])
      assert.deepEqual(names(planned), ['iothub_subscriptions_clear', 'iothub_subscriptions_upsert'])
      assert.deepEqual(rows(statement(planned, 'iothub_subscriptions_upsert')).map((r) => [r[0], r[1]]), [['sub-1', 'b']])
    })

    it('a key put, cleared, then put again under the same scope is written after the clear', () => {
      const planned = plan([
        { op: 'incoming.clear', clientId: 'd' },
        { op: 'incoming.put', clientId: 'c', messageId: 7, packet: packet(1) },
        { op: 'incoming.clear', clientId: 'c' },
        { op: 'incoming.put', clientId: 'c', messageId: 7, packet: packet(2) }
      ])
      assert.deepEqual(names(planned), ['iothub_incoming_clear', 'iothub_incoming_upsert'])
      assert.deepEqual(statement(planned, 'iothub_incoming_clear').values, [['c', 'd']], 'every cleared scope, in key order whatever the batch’s')
      assert.deepEqual(rows(statement(planned, 'iothub_incoming_upsert')), [['c', 7, packet(2)]])
    })

    it('each clearable table clears by its scope column', () => {
      const planned = plan([
        { op: 'outgoing.clear', clientId: 'c' },
        { op: 'subscription.clear', sessionId: 's' }
      ])
      assert.equal(statement(planned, 'iothub_outgoing_clear').text, 'DELETE FROM "hub_test"."outgoing" WHERE client_id = ANY($1::text[])')
      assert.equal(statement(planned, 'iothub_subscriptions_clear').text, 'DELETE FROM "hub_test"."subscriptions" WHERE session_id = ANY($1::text[])')
    })
  })

  describe('session versions', () => {
    it('a version alone is an UPDATE of the version column', () => {
      const planned = plan([{ op: 'session.version', id: 'b', version: 4 }, { op: 'session.version', id: 'a', version: 2 }, { op: 'session.version', id: 'a', version: 3 }])
      const update = statement(planned, 'iothub_sessions_version')
      assert.equal(update.text, 'UPDATE "hub_test"."sessions" AS target SET version = change.version FROM unnest($1::text[], $2::bigint[]) AS change(id, version) WHERE target.id = change.id')
      assert.deepEqual(rows(update), [['a', 3], ['b', 4]], 'the last version of each session, in key order')
    })

    it('a version after a put of the session folds into the put, document included', () => {
      const planned = plan([{ op: 'session.put', session: sessionRecord('s', 1) }, { op: 'session.version', id: 's', version: 5 }])
      assert.deepEqual(names(planned), ['iothub_sessions_upsert'])
      const [[id, doc, version]] = rows(statement(planned, 'iothub_sessions_upsert')) as [[string, string, number]]
      assert.deepEqual([id, version, (JSON.parse(doc) as SessionRecord).version], ['s', 5, 5])
    })

    it('a version after a delete does nothing, as an UPDATE of a missing row would', () => {
      assert.deepEqual(names(plan([{ op: 'session.delete', id: 's' }, { op: 'session.version', id: 's', version: 5 }])), ['iothub_sessions_delete'])
    })

    it('a put or a delete after a version replaces it', () => {
      assert.deepEqual(names(plan([{ op: 'session.version', id: 's', version: 5 }, { op: 'session.put', session: sessionRecord('s', 6) }])), ['iothub_sessions_upsert'])
      assert.deepEqual(names(plan([{ op: 'session.version', id: 's', version: 5 }, { op: 'session.delete', id: 's' }])), ['iothub_sessions_delete'])
    })

    it('runs the version update after the table’s deletes and upserts', () => {
      const planned = plan([{ op: 'session.version', id: 'a', version: 2 }, { op: 'session.put', session: sessionRecord('b') }, { op: 'session.delete', id: 'c' }])
      assert.deepEqual(names(planned), ['iothub_sessions_delete', 'iothub_sessions_upsert', 'iothub_sessions_version'])
    })
  })

  describe('rows and parameters', () => {
    it('sends each column as one array, with null for what a row does not have', () => {
      const planned = plan([
        { op: 'topic.put', sessionId: 's', subscription: { topic: 'a', qos: 2, rh: 1, rap: true, nl: false, subscriptionIdentifier: 9 }, persistent: false },
        { op: 'topic.put', sessionId: 's', subscription: { topic: 'b', qos: 0 }, persistent: undefined as unknown as boolean },
        { op: 'device.property', deviceId: 'd', name: 'gone', value: undefined, updatedAt: 3 },
        { op: 'device.property', deviceId: 'd', name: 'set', value: { t: 1 }, updatedAt: 4 }
      ])
      const topics = statement(planned, 'iothub_topics_upsert')
      assert.deepEqual(topics.values, [['s', 's'], ['a', 'b'], [2, 0], [1, null], [true, null], [false, null], [9, null], [false, false]])
      assert.match(topics.text, /unnest\(\$1::text\[\], \$2::text\[\], \$3::integer\[\], \$4::integer\[\], \$5::boolean\[\], \$6::boolean\[\], \$7::integer\[\], \$8::boolean\[\]\)/)
      assert.match(topics.text, /ON CONFLICT \(session_id, topic\) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap, nl = excluded.nl, sub_id = excluded.sub_id, persistent = excluded.persistent RETURNING \(xmax = 0\) AS inserted$/)
      assert.deepEqual(rows(statement(planned, 'iothub_device_properties_upsert')), [['d', 'gone', null, 3], ['d', 'set', '{"t":1}', 4]])
    })

    it('passes packets through as bytes', () => {
      const p = packet(0xff)
      const planned = plan([{ op: 'will.put', clientId: 'c', packet: p }, { op: 'journal.put', seq: 3, packet: p }])
      assert.equal(rows(statement(planned, 'iothub_wills_upsert'))[0]![1], p)
      assert.match(statement(planned, 'iothub_publish_journal_upsert').text, /\$1::bigint\[\], \$2::bytea\[\]/)
    })

    it('names as many parameters as it sends, each array one entry per row, every statement named once', () => {
      const mutations: Mutation[] = []
      for (let i = 0; i < 50; i++) {
        const id = `d${i}`
        mutations.push({ op: 'device.put', device: device(id) }, { op: 'session.put', session: sessionRecord(id) }, topicPut(id, 'x'))
        mutations.push({ op: 'outgoing.put', clientId: id, seq: i, packet: packet(i) }, { op: 'incoming.delete', clientId: id, messageId: i })
        if (i % 3 === 0) mutations.push({ op: 'session.version', id: `gone-${i}`, version: i }, { op: 'topic.clear', sessionId: id }, { op: 'will.delete', clientId: id })
        if (i % 5 === 0) mutations.push({ op: 'device.property', deviceId: id, name: 'p', value: i, updatedAt: i }, { op: 'journal.delete', seq: i })
      }
      const planned = plan(mutations)
      assert.equal(new Set(names(planned)).size, planned.length)
      for (const s of planned) {
        const values = s.values as unknown[][]
        assert.equal(placeholders(s.text), values.length, `${s.name}: ${s.text}`)
        assert.equal(new Set(values.map((v) => v.length)).size, 1, `${s.name}: arrays of one length`)
      }
      assert.equal(rows(statement(planned, 'iothub_devices_upsert')).length, 50)
      assert.equal(rows(statement(planned, 'iothub_topics_delete')).length, 17, 'the puts before each clear')
    })

    it('keeps a batch of any size to one statement per kind: a few parameters, not one per row', () => {
      const mutations: Mutation[] = Array.from({ length: 70_000 }, (_, i) => ({ op: 'retained.put', topic: `t/${i}`, packet: packet(i % 256) }))
      const planned = plan(mutations)
      assert.deepEqual(names(planned), ['iothub_retained_upsert'])
      assert.equal((planned[0]!.values as unknown[][]).length, 2, 'PostgreSQL’s 65,535 parameters are never approached')
      assert.equal(rows(planned[0]!).length, 70_000)
    })

    it('marks what moves the totals of sessions, topics, devices and subscription entities: their deletes and clears by the rows removed, their upserts by the rows inserted', () => {
      const planned: PlannedStatement[] = statements.plan([
        { op: 'session.delete', id: 'gone' },
        { op: 'session.put', session: sessionRecord('s') },
        { op: 'session.version', id: 'v', version: 3 },
        { op: 'topic.clear', sessionId: 'c' },
        { op: 'topic.delete', sessionId: 's', topic: 'old' },
        topicPut('s', 'new'),
        { op: 'subscription.clear', sessionId: 'c' },
        { op: 'device.put', device: device('d') }
      ])
      const counts: Record<string, PlannedStatement['counts'] | null> = Object.fromEntries(planned.map((s) => [s.name ?? '', s.counts ?? null]))
      assert.deepEqual(counts, {
        iothub_devices_upsert: { total: 'devices', by: 'inserted' },
        iothub_sessions_delete: { total: 'sessions', by: 'deleted', connected: true },
        iothub_sessions_upsert: { total: 'sessions', by: 'inserted', connected: true },
        iothub_sessions_version: null,
        iothub_subscriptions_clear: { total: 'subscriptions', by: 'deleted' },
        iothub_topics_clear: { total: 'topics', by: 'deleted' },
        iothub_topics_delete: { total: 'topics', by: 'deleted' },
        iothub_topics_upsert: { total: 'topics', by: 'inserted' }
      })
      assert.match(statement(planned, 'iothub_topics_upsert').text, / RETURNING \(xmax = 0\) AS inserted$/)
      assert.doesNotMatch(statement(planned, 'iothub_sessions_version').text, /RETURNING/)
      // sessions answer what they replaced and removed: whether connected, and where
      assert.match(statement(planned, 'iothub_sessions_upsert').text, /FOR UPDATE\).*was_connected/)
      assert.match(statement(planned, 'iothub_sessions_delete').text, / RETURNING connected, protocol, node$/)

      const change = new FleetCountChange()
      const result = (rowCount: number, inserted: boolean[] = []) => ({ rowCount, rows: inserted.map((i) => ({ inserted: i })) })
      const connected = (protocol: string, node: string) => ({ connected: true, protocol, node })
      const offline = { connected: false, protocol: 'mqtt', node: 'n1' }
      change.add(statement(planned, 'iothub_sessions_delete'), { rowCount: 2, rows: [connected('mqtt', 'n1'), offline] })
      change.add(statement(planned, 'iothub_sessions_upsert'), {
        rowCount: 4,
        rows: [
          // new, connected; a disconnect; a takeover from another node and protocol; one offline still
          { inserted: true, ...connected('mqtt', 'n1'), was_connected: null, was_protocol: null, was_node: null },
          { inserted: false, ...offline, was_connected: true, was_protocol: 'mqtt', was_node: 'n1' },
          { inserted: false, ...connected('coap', 'n2'), was_connected: true, was_protocol: 'mqtt', was_node: 'n1' },
          { inserted: false, ...offline, was_connected: false, was_protocol: 'mqtt', was_node: 'n1' }
        ]
      })
      change.add(statement(planned, 'iothub_topics_clear'), result(4))
      change.add(statement(planned, 'iothub_topics_upsert'), result(1, [true]))
      change.add(statement(planned, 'iothub_subscriptions_clear'), result(2))
      change.add(statement(planned, 'iothub_devices_upsert'), result(1, [true]))
      assert.deepEqual(
        { sessions: change.sessions, topics: change.topics, devices: change.devices, subscriptions: change.subscriptions, connected: change.connected, none: change.none },
        { sessions: -1, topics: -3, devices: 1, subscriptions: -2, connected: [{ protocol: 'coap', node: 'n2', sessions: 1 }, { protocol: 'mqtt', node: 'n1', sessions: -2 }], none: false }
      )
      assert.equal(new FleetCountChange().none, true)
      // a row replaced that the upsert did not read was inserted meanwhile by another writer: run again
      assert.throws(
        () => new FleetCountChange().add(statement(planned, 'iothub_sessions_upsert'), { rowCount: 1, rows: [{ inserted: false, ...offline, was_connected: null }] }),
        (error: Error & { code?: string }) => error.code === '40001'
      )
    })

    it('refuses a mutation it does not know, naming its op', () => {
      assert.throws(() => plan([{ op: 'device.explode', id: 'd' } as unknown as Mutation]), /unknown mutation op "device.explode"/)
    })
  })
})
