/**
 * EMQX mode on PostgreSQL with several hub replicas: they share one store and must act as ONE
 * hub. EMQX node n1's ExHook channel lands on replica A, n2's on replica B (test/helpers/replicas.ts),
 * so one client's story is told in parts to different replicas — a takeover from n1 to n2 most
 * plainly. "Agree" means: once one replica has acknowledged an action (a hook answered, an API
 * call answered), PostgreSQL holds it, and every other replica shows it — replicas follow the
 * store's changes with some lag, so their views are polled (`eventually`), never slept on.
 *
 * Every case also runs with one hub playing every replica's part (the control): the same steps
 * through the same harness, which must pass there, so a failure with real replicas is their
 * disagreement and not the harness's.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { eventually } from './helpers/hub.js'
import { NODES, replicasForTest, type Connection, type Replica, type ReplicaSet, type ReplicaSetOptions } from './helpers/replicas.js'

/**
 * How long a replica may trail what another acknowledged before a case fails: the lag of
 * following the store's change log, with room for a loaded machine.
 */
const REPLICA_LAG_MS = 5000

const ATTRIBUTES = 'v1/devices/me/attributes'

interface SessionView {
  id: string
  connected: boolean
  node: string
  topics: { topic: string; brokerTopic: string; qos: number }[]
}

interface EmqxClientRow {
  clientid: string
  connected: boolean
  node: string
  subscriptions_cnt: number
}

interface SubscriptionView {
  sessionId: string
  topic: string
  properties: string[]
}

const MODES = [
  { title: 'EMQX mode, replicas on one PostgreSQL: they act as one hub', oneHub: false },
  { title: 'EMQX mode, one hub playing every replica (control)', oneHub: true }
]

/** Both ways round: the action on `x`, the check on `y`. */
const DIRECTIONS = [
  [0, 1],
  [1, 0]
] as const


function pair(set: ReplicaSet, [i, j]: readonly [number, number]): [Replica, Replica] {
  return [set.replicas[i]!, set.replicas[j]!]
}

/** The session as `replica`'s API shows it: connected, node and broker topics (sorted), or null for a 404. */
async function sessionOn(replica: Replica, id: string): Promise<{ connected: boolean; node: string; topics: string[] } | null> {
  const { status, body } = await replica.api<SessionView>('GET', `/v1/sessions/${id}`)
  if (status === 404) return null
  assert.equal(status, 200, `GET /v1/sessions/${id} on ${replica.name}`)
  return { connected: body.connected, node: body.node, topics: body.topics.map((s) => s.brokerTopic).sort() }
}

/** The session as PostgreSQL holds it (table sessions, its topics from table topics), or null. */
async function storedSession(set: ReplicaSet, id: string): Promise<{ connected: boolean; node: string; topics: string[] } | null> {
  const rows = await set.db.query<{ node: string; connected: string }>(`SELECT doc->>'node' AS node, doc->>'connected' AS connected FROM sessions WHERE id = $1`, [id])
  if (rows.length === 0) return null
  const topics = await set.db.query<{ topic: string }>('SELECT topic FROM topics WHERE session_id = $1 ORDER BY topic', [id])
  return { connected: rows[0]!.connected === 'true', node: rows[0]!.node, topics: topics.map((r) => r.topic) }
}

async function storedAttributes(set: ReplicaSet, id: string): Promise<unknown> {
  const rows = await set.db.query<{ value: unknown }>(`SELECT value FROM device_properties WHERE device_id = $1 AND name = 'attributes'`, [id])
  return rows[0]?.value
}

async function attributesOn(replica: Replica, id: string): Promise<unknown> {
  const { status, body } = await replica.api<{ properties: { attributes: unknown } }>('GET', `/v1/devices/${id}`)
  assert.equal(status, 200, `GET /v1/devices/${id} on ${replica.name}`)
  return body.properties.attributes
}

/** Polls until `check` stops throwing; the last assertion's message is the failure's. */
function agree(what: string, check: () => Promise<void>): Promise<true> {
  return eventually(async () => {
    await check()
    return true as const
  }, REPLICA_LAG_MS, what)
}

for (const mode of MODES) {
  describe(mode.title, () => {
    const start = (t: TestContext, options: Omit<ReplicaSetOptions, 'db' | 'oneHub'>) => replicasForTest(t, { ...options, oneHub: mode.oneHub })

    for (const direction of DIRECTIONS) {
      const [xi, yi] = direction
      const X = 'AB'[xi]!
      const Y = 'AB'[yi]!
      const [nx, ny] = [NODES[xi].split('@')[0], NODES[yi].split('@')[0]]

      it(`1 ${X}→${Y}: a device created through ${X} is accepted by ${Y}'s client.authenticate at once, and ${Y} serves it`, async (t) => {
        const set = await start(t, { count: 2 })
        const [x, y] = pair(set, direction)
        const id = `made-on-${X}`
        const { token } = await set.createDevice(x, id)
        // no polling here: a replica that misses a device reads PostgreSQL before it refuses
        const verdict = await y.exhook.onClientAuthenticate({ clientid: id, username: id, password: token, mountpoint: `${id}/`, peerport: 41001 }, false)
        assert.deepEqual([verdict.type, verdict.bool_result], ['STOP_AND_RETURN', true], `${Y} accepts the device ${X} made, right after the 201`)
        await agree(`GET /v1/devices/${id} on ${Y} to answer 200`, async () => {
          const { status } = await y.api('GET', `/v1/devices/${id}`)
          assert.equal(status, 200)
        })
      })

      it(`2 ${X}→${Y}: a session connected and subscribed through ${X} shows on ${Y}'s /v1/sessions and /api/v4/clients`, async (t) => {
        const id = 'dev-2'
        const set = await start(t, { count: 2, devices: [id] })
        const [x, y] = pair(set, direction)
        const conn = set.connection(id, x.node)
        await set.connect(x, conn)
        await set.subscribe(x, conn, ATTRIBUTES)
        const expected = { connected: true, node: x.node, topics: [`${id}/${ATTRIBUTES}`] }
        assert.deepEqual(await storedSession(set, id), expected, 'PostgreSQL holds what the hooks acknowledged')
        await agree(`${Y}'s GET /v1/sessions/${id}`, async () => assert.deepEqual(await sessionOn(y, id), expected))
        await agree(`${Y}'s GET /api/v4/clients?clientid=${id}`, async () => {
          const { body } = await y.api<{ data: EmqxClientRow[] }>('GET', `/api/v4/clients?clientid=${id}`)
          assert.deepEqual(
            body.data.map((c) => [c.clientid, c.connected, c.node, c.subscriptions_cnt]),
            [[id, true, x.node, 1]]
          )
        })
      })

      it(`3 ${X}→${Y}: a PATCH of attributes sent to ${Y} pushes to the device subscribed through ${X}`, async (t) => {
        const id = 'dev-3'
        const set = await start(t, { count: 2, devices: [id] })
        const [x, y] = pair(set, direction)
        const conn = set.connection(id, x.node)
        await set.connect(x, conn)
        await set.subscribe(x, conn, ATTRIBUTES)
        await agree(`${Y}'s GET /v1/subscriptions?deviceId=${id} to show the entity`, async () => {
          const { body } = await y.api<{ data: SubscriptionView[] }>('GET', `/v1/subscriptions?deviceId=${id}`)
          assert.deepEqual(body.data.map((e) => [e.sessionId, e.topic, e.properties]), [[id, ATTRIBUTES, ['attributes']]])
        })
        const mark = set.standin.published.length
        const patched = await y.api<{ pushedTo: string[]; pushError?: string }>('PATCH', `/v1/devices/${id}/attributes`, { mode: 'eco' })
        assert.equal(patched.status, 200, JSON.stringify(patched.body))
        assert.deepEqual(patched.body.pushedTo, [id], `${Y} pushes to the session ${X} recorded`)
        const sent = set.standin.published.slice(mark)
        assert.deepEqual(
          sent.map((p) => [p.topics, JSON.parse(p.payload.toString()) as unknown]),
          [[[`${id}/${ATTRIBUTES}`], { mode: 'eco' }]],
          'EMQX was asked to publish it'
        )
      })

      it(`4 ${X}→${Y}: attributes PATCHed through ${X} ({a:1}) then through ${Y} ({b:2}) keep both keys everywhere`, async (t) => {
        const id = 'dev-4'
        const set = await start(t, { count: 2, devices: [id] })
        const [x, y] = pair(set, direction)
        const first = await x.api('PATCH', `/v1/devices/${id}/attributes`, { a: 1 })
        assert.equal(first.status, 200, JSON.stringify(first.body))
        // at once: a merge is made on the stored attributes, whichever replica takes it
        const second = await y.api<{ attributes: unknown }>('PATCH', `/v1/devices/${id}/attributes`, { b: 2 })
        assert.equal(second.status, 200, JSON.stringify(second.body))
        const both = { a: 1, b: 2 }
        assert.deepEqual(await storedAttributes(set, id), both, 'PostgreSQL (device_properties, attributes) keeps both')
        assert.deepEqual(second.body.attributes, both, `${Y} answers the merged attributes`)
        await agree(`${X}'s attributes of ${id}`, async () => assert.deepEqual(await attributesOn(x, id), both))
        await agree(`${Y}'s attributes of ${id}`, async () => assert.deepEqual(await attributesOn(y, id), both))
      })

      it(`6 ${X}→${Y}: a takeover from ${nx} (via ${X}) to ${ny} (via ${Y}), then a late plain disconnect of the ${nx} connection at ${X}, leaves it connected on ${ny}`, async (t) => {
        const id = 'dev-6'
        const set = await start(t, { count: 2, devices: [id] })
        const [x, y] = pair(set, direction)
        const onX = set.connection(id, x.node)
        const onY = set.connection(id, y.node)
        await set.connect(x, onX)
        await set.subscribe(x, onX, ATTRIBUTES)
        await set.takeover(x, onX, y, onY)
        await set.subscribe(y, onY, ATTRIBUTES)
        const expected = { connected: true, node: y.node, topics: [`${id}/${ATTRIBUTES}`] }
        assert.deepEqual(await storedSession(set, id), expected, 'PostgreSQL after the takeover, before the late disconnect')
        // the old connection's plain close, late, on its own node's channel: not the client leaving
        await x.exhook.onClientDisconnected(onX, 'normal')
        assert.deepEqual(await storedSession(set, id), expected, 'PostgreSQL (sessions, doc node/connected; topics) after the late disconnect')
        await agree(`${X}'s GET /v1/sessions/${id}`, async () => assert.deepEqual(await sessionOn(x, id), expected))
        await agree(`${Y}'s GET /v1/sessions/${id}`, async () => assert.deepEqual(await sessionOn(y, id), expected))
        assert.deepEqual(await storedSession(set, id), expected, 'and it stayed so in PostgreSQL')
      })

      it(`7 ${X}→${Y}: a subscribe arriving at ${Y} for a session connected through ${X} is applied`, async (t) => {
        const id = 'dev-7'
        const set = await start(t, { count: 2, devices: [id] })
        const [x, y] = pair(set, direction)
        const conn = set.connection(id, x.node)
        await set.connect(x, conn)
        // the same node's call, on the other replica's channel, right after the connect's answer
        await set.subscribe(y, conn, ATTRIBUTES)
        const expected = { connected: true, node: x.node, topics: [`${id}/${ATTRIBUTES}`] }
        assert.deepEqual(await storedSession(set, id), expected, 'PostgreSQL holds the subscription once the hook is answered')
        await agree(`${X}'s GET /v1/sessions/${id}`, async () => assert.deepEqual(await sessionOn(x, id), expected))
        await agree(`${Y}'s GET /v1/sessions/${id}`, async () => assert.deepEqual(await sessionOn(y, id), expected))
      })
    }

    it('5: 20 concurrent PATCHes of distinct keys, spread over A and B, are all stored', async (t) => {
      const id = 'dev-5'
      const set = await start(t, { count: 2, devices: [id] })
      const [a, b] = set.replicas as [Replica, Replica]
      const keys = Array.from({ length: 20 }, (_, i) => `k${String(i).padStart(2, '0')}`)
      const answers = await Promise.all(keys.map((key, i) => (i % 2 === 0 ? a : b).api('PATCH', `/v1/devices/${id}/attributes`, { [key]: i })))
      assert.deepEqual(
        answers.map((r) => r.status),
        keys.map(() => 200)
      )
      const all = Object.fromEntries(keys.map((key, i) => [key, i]))
      const stored = (await storedAttributes(set, id)) as Record<string, unknown>
      assert.deepEqual(Object.keys(stored).sort(), keys, 'PostgreSQL (device_properties, attributes) keeps every key')
      assert.deepEqual(stored, all)
      await agree("A's attributes", async () => assert.deepEqual(await attributesOn(a, id), all))
      await agree("B's attributes", async () => assert.deepEqual(await attributesOn(b, id), all))
    })

    it('8: random connects, subscribes, unsubscribes, takeovers and disconnects over three replicas end where EMQX is', async (t) => {
      const seed = Number(process.env.IOTHUB_REPLICAS_SEED ?? Math.floor(Math.random() * 2 ** 31))
      t.diagnostic(`seed ${seed} (IOTHUB_REPLICAS_SEED=${seed} repeats this run)`)
      const random = mulberry32(seed)
      const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!
      const CLIENTS = 40
      const OPERATIONS = 300
      const TOPICS = [ATTRIBUTES, 'v1/devices/me/commands', 'v1/devices/me/raw', 'data/report']
      const ids = Array.from({ length: CLIENTS }, (_, i) => `rnd-${String(i).padStart(2, '0')}`)
      const set = await start(t, { count: 3, devices: ids })
      const nodes = [set.replicas[0]!.node, set.replicas[1]!.node]

      // each client's operations, drawn up front so the seed alone decides the run
      const plans = new Map<string, number>(ids.map((id) => [id, 0]))
      for (let i = 0; i < OPERATIONS; i++) {
        const id = pick(ids)
        plans.set(id, plans.get(id)! + 1)
      }
      const log: string[] = []
      // one client's hook calls in order (EMQX's channel for a client is sequential); clients at once
      await Promise.all(
        ids.map(async (id) => {
          let conn: Connection | undefined
          const topics = new Set<string>()
          for (let step = 0; step < plans.get(id)!; step++) {
            const via = pick(set.replicas)
            const roll = random()
            if (!conn) {
              conn = set.connection(id, pick(nodes))
              log.push(`${id} connect ${conn.node}:${conn.peerport} via ${via.name}`)
              await set.connect(via, conn)
              topics.clear()
            } else if (roll < 0.35 || (roll < 0.55 && topics.size === 0)) {
              const topic = pick(TOPICS)
              log.push(`${id} subscribe ${topic} via ${via.name}`)
              await set.subscribe(via, conn, topic, 1)
              topics.add(topic)
            } else if (roll < 0.55) {
              const topic = pick([...topics])
              log.push(`${id} unsubscribe ${topic} via ${via.name}`)
              await set.unsubscribe(via, conn, topic)
              topics.delete(topic)
            } else if (roll < 0.75) {
              const to = set.connection(id, nodes.find((n) => n !== conn!.node)!)
              const toVia = pick(set.replicas)
              log.push(`${id} takeover ${conn.node}:${conn.peerport} -> ${to.node}:${to.peerport} via ${toVia.name}, old told to ${via.name}`)
              await set.takeover(via, conn, toVia, to)
              conn = to
              topics.clear()
            } else {
              log.push(`${id} disconnect via ${via.name}`)
              await set.disconnect(via, conn)
              conn = undefined
            }
          }
        })
      )

      // the run did what it claims: every kind of operation, and clients left with topics
      const kinds = new Set(log.map((l) => l.split(' ')[1]))
      assert.deepEqual([...kinds].sort(), ['connect', 'disconnect', 'subscribe', 'takeover', 'unsubscribe'], `seed ${seed}: kinds of operations run`)
      assert.ok(log.length >= OPERATIONS, `seed ${seed}: ${log.length} operations run`)

      // EMQX's truth, from the stand-in the operations kept in step
      const truth = new Map<string, string>()
      for (const c of set.standin.clients.values()) {
        const topics = set.standin.subscriptions.filter((s) => s.clientid === c.clientid).map((s) => s.topic)
        truth.set(c.clientid, describeSession({ connected: c.connected, node: c.node, topics }))
      }
      assert.ok([...truth.values()].some((v) => !v.endsWith('[]')), `seed ${seed}: EMQX ends with subscribed clients`)

      /** Per place (each replica's API, PostgreSQL), each client it shows otherwise than EMQX holds it. */
      const mismatches = async (): Promise<Map<string, string[]>> => {
        const views = new Map<string, Map<string, string>>()
        for (const replica of set.replicas) {
          const { body } = await replica.api<{ data: SessionView[] }>('GET', '/v1/sessions?limit=1000')
          views.set(`replica ${replica.name}`, new Map(body.data.map((s) => [s.id, describeSession({ connected: s.connected, node: s.node, topics: s.topics.map((x) => x.brokerTopic) })])))
        }
        const rows = await set.db.query<{ id: string; node: string; connected: string }>(`SELECT id, doc->>'node' AS node, doc->>'connected' AS connected FROM sessions`)
        const topics = await set.db.query<{ session_id: string; topic: string }>('SELECT session_id, topic FROM topics')
        views.set(
          'PostgreSQL',
          new Map(rows.map((r) => [r.id, describeSession({ connected: r.connected === 'true', node: r.node, topics: topics.filter((x) => x.session_id === r.id).map((x) => x.topic) })]))
        )
        const found = new Map<string, string[]>()
        for (const [where, seen] of views) {
          const wrong = [...new Set([...truth.keys(), ...seen.keys()])]
            .sort()
            .filter((id) => truth.get(id) !== seen.get(id))
            .map((id) => `${id}: ${seen.get(id) ?? 'absent'}; EMQX: ${truth.get(id) ?? 'absent'}`)
          if (wrong.length > 0) found.set(where, wrong)
        }
        return found
      }
      let last = new Map<string, string[]>()
      try {
        await eventually(async () => (last = await mismatches()).size === 0, REPLICA_LAG_MS, 'every replica and PostgreSQL to agree with EMQX')
      } catch {
        const first = [...last.values()][0]?.[0]?.split(':')[0] ?? ''
        assert.fail(
          `seed ${seed}: of ${ids.length} clients (EMQX holds ${truth.size}), shown otherwise than EMQX holds them by\n` +
            [...last].map(([where, wrong]) => `  ${where}: ${wrong.length}, e.g.\n    ${wrong.slice(0, 4).join('\n    ')}`).join('\n') +
            `\n${first}'s operations: ${log.filter((l) => l.startsWith(`${first} `)).join('; ')}`
        )
      }
    })
  })
}

function describeSession(s: { connected: boolean; node: string; topics: string[] }): string {
  return `${s.connected ? 'connected' : 'offline'} on ${s.node} [${[...s.topics].sort().join(', ')}]`
}

/** A small seeded generator (mulberry32): a failing run is repeated by its seed. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
