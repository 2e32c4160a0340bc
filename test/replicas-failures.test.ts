/**
 * EMQX-mode replicas on one PostgreSQL database when parts of them fail: a replica process
 * killed with SIGKILL in the middle of a load of hook calls, and PostgreSQL unreachable for a
 * while. What must hold: a hook call answered without error (acknowledged) is committed, so it
 * survives whatever happens to the replica that answered it; the replicas left keep answering;
 * and every replica — the survivors, the one restarted, the ones cut off from the database —
 * comes back to the same picture as PostgreSQL by itself.
 *
 * Views are polled (`eventually`): replicas follow the change log with some lag. What the
 * database holds is read on a connection of the test's own, never through a replica or a proxy.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { describe, it, type TestContext } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { startEmqxChildHub, type EmqxChildHub } from './helpers/child-hub.js'
import { EmqxExhookClient } from './helpers/emqx-exhook-client.js'
import { EMQX_KEY, EMQX_SECRET } from './helpers/emqx-hub.js'
import { startEmqxRestStandin, type EmqxRestStandin } from './helpers/emqx-rest-standin.js'
import { eventually, tempDir } from './helpers/hub.js'
import { createTestDatabase, NODES, startReplicas, type Connection, type Replica, type ReplicaSet, type TestDatabase } from './helpers/replicas.js'
import { TcpProxy } from './helpers/tcp-proxy.js'

const SERVER = process.env.IOTHUB_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

/**
 * How long replicas may take to come to agree, or to recover, before a case fails: generous,
 * for a machine loaded by three hub processes. It bounds the wait only; nothing is asserted
 * about how fast.
 */
const SETTLE_MS = 30_000

const ATTRIBUTES = 'v1/devices/me/attributes'
const TOPICS = [ATTRIBUTES, 'v1/devices/me/commands', 'v1/devices/me/raw', 'data/report']

interface SessionView {
  id: string
  connected: boolean
  node: string
  topics: { brokerTopic: string }[]
}

interface ReadyBody {
  status: string
  checks: Record<string, { ok: boolean; detail?: string }>
}

/** A session in one line: compared as text, and readable in a failure message. */
function describeSession(s: { connected: boolean; node: string; topics: string[] }): string {
  return `${s.connected ? 'connected' : 'offline'} on ${s.node} [${[...s.topics].sort().join(', ')}]`
}

/** Every session a replica's API lists, id → describeSession. */
async function sessionsOn(api: (method: string, path: string) => Promise<{ status: number; body: unknown }>): Promise<Map<string, string>> {
  const { status, body } = await api('GET', '/v1/sessions?limit=1000')
  assert.equal(status, 200, 'GET /v1/sessions')
  const { data, next } = body as { data: SessionView[]; next: string | null }
  assert.equal(next, null, 'one page holds every session of the case')
  return new Map(data.map((s) => [s.id, describeSession({ connected: s.connected, node: s.node, topics: s.topics.map((x) => x.brokerTopic) })]))
}

/** Every session PostgreSQL holds (tables sessions and topics), id → describeSession. */
async function storedSessions(db: TestDatabase): Promise<Map<string, string>> {
  const rows = await db.query<{ id: string; node: string; connected: string }>(`SELECT id, doc->>'node' AS node, doc->>'connected' AS connected FROM sessions`)
  const topics = await db.query<{ session_id: string; topic: string }>('SELECT session_id, topic FROM topics')
  return new Map(
    rows.map((r) => [r.id, describeSession({ connected: r.connected === 'true', node: r.node, topics: topics.filter((x) => x.session_id === r.id).map((x) => x.topic) })])
  )
}

/** Every client EMQX holds (the stand-in, which the test keeps in step with the hook calls), id → describeSession. */
function brokerSessions(standin: EmqxRestStandin): Map<string, string> {
  return new Map(
    [...standin.clients.values()].map((c) => [
      c.clientid,
      describeSession({ connected: c.connected, node: c.node, topics: standin.subscriptions.filter((s) => s.clientid === c.clientid).map((s) => s.topic) })
    ])
  )
}

/** Polls until PostgreSQL and every replica of `set` hold the sessions EMQX lists (its stand-in's own list). */
function agreeWithEmqx(set: ReplicaSet, db: TestDatabase, what: string): Promise<true> {
  return settle(what, async () => {
    const wanted = brokerSessions(set.standin)
    const wrong = [
      ...differences(await storedSessions(db), wanted).map((d) => `PostgreSQL: ${d}`),
      ...(await Promise.all(set.replicas.map(async (r) => differences(await sessionsOn(r.api), wanted).map((d) => `${r.name}: ${d}`)))).flat()
    ]
    assert.deepEqual(wrong, [])
  })
}

/** What differs between two views, one line per client, or [] when they are the same. */
function differences(seen: Map<string, string>, expected: Map<string, string>): string[] {
  return [...new Set([...seen.keys(), ...expected.keys()])]
    .sort()
    .filter((id) => seen.get(id) !== expected.get(id))
    .map((id) => `${id}: ${seen.get(id) ?? 'absent'}; expected ${expected.get(id) ?? 'absent'}`)
}

/** Polls until `check` stops throwing; the last assertion's message is the failure's. */
function settle(what: string, check: () => Promise<void>): Promise<true> {
  return eventually(
    async () => {
      await check()
      return true as const
    },
    SETTLE_MS,
    what
  )
}

/** Clean-up steps run in the reverse of the order they were added, in one hook (so in order). */
function cleanups(t: TestContext): (step: () => unknown) => void {
  const steps: (() => unknown)[] = []
  t.after(async () => {
    for (const step of steps.reverse()) await step()
  })
  return (step) => void steps.push(step)
}

/**
 * A test database that replicas reach through a TCP proxy the test can cut, while the test's own
 * queries go to it directly (`db`). Both go with the test.
 */
async function cuttableDatabase(cleanup: (step: () => unknown) => void): Promise<{ db: TestDatabase; proxy: TcpProxy; throughProxy: TestDatabase }> {
  const db = await createTestDatabase()
  cleanup(() => db.drop())
  const server = new URL(SERVER)
  const proxy = await TcpProxy.start(server.hostname, Number(server.port || 5432))
  cleanup(() => proxy.stop())
  const proxiedUrl = new URL(db.url)
  proxiedUrl.hostname = '127.0.0.1'
  proxiedUrl.port = String(proxy.port)
  return { db, proxy, throughProxy: { ...db, url: proxiedUrl.toString() } }
}

/** The gRPC status a hook call was refused with (the test fails when it was answered). */
async function refusal(call: Promise<unknown>): Promise<{ code: grpc.status; details: string }> {
  try {
    await call
  } catch (error) {
    const { code, details } = error as grpc.ServiceError
    return { code, details }
  }
  assert.fail('the hook call was answered, not refused')
}

/** Backends of `db` on a LISTEN connection: the replicas' change-log listeners. */
async function listeners(db: TestDatabase): Promise<number> {
  const rows = await db.query<{ n: string }>(
    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
  )
  return Number(rows[0]!.n)
}

// ───────────────────────────────────────────────────────────── 1: kill -9 of a replica process

/** A session as the load's hook calls leave it: null when it has none (a clean start's disconnect ends it). */
type Expected = { node: string; topics: string[] } | null

const described = (id: string, s: Expected): string | undefined => (s ? describeSession({ connected: true, node: s.node, topics: s.topics.map((x) => `${id}/${x}`) }) : undefined)

/** One client of the load: what its acknowledged calls made of it, and the call in doubt that ended its story, if any. */
interface LoadClient {
  id: string
  node: string
  acked: Expected
  /** A call that failed: it may or may not have been committed, so either state is right. */
  inDoubt?: { before: Expected; after: Expected; call: string; via: string; error: string }
}

/** A replica process of the kill case: the real `iothub` command, EMQX mode, on the shared database. */
interface ReplicaProcess {
  name: string
  hubNode: string
  dataDir: string
  hub: EmqxChildHub
  /** One channel per EMQX node, as each node of a cluster has its own. */
  channels: Map<string, EmqxExhookClient>
}

describe('EMQX-mode replicas on one PostgreSQL under failure', () => {
  it('1: kill -9 of one of three replica processes during a load of hook calls loses nothing acknowledged; the others keep answering; restarted, it shows what they show', async (t) => {
    const CLIENTS = 45
    /** Acknowledged calls before the kill, and after it by the survivors. */
    const BEFORE_KILL = 150
    const AFTER_KILL = 150
    const seed = Number(process.env.IOTHUB_REPLICAS_SEED ?? Math.floor(Math.random() * 2 ** 31))
    // each client draws from a generator of its own: its choices do not hang on the interleaving
    t.diagnostic(`seed ${seed} (IOTHUB_REPLICAS_SEED=${seed} seeds each client's draws again; the interleaving and the kill's moment still vary)`)
    const pick = <T>(random: () => number, list: readonly T[]): T => list[Math.floor(random() * list.length)]!

    const cleanup = cleanups(t)
    const db = await createTestDatabase()
    cleanup(() => db.drop())
    const standin: EmqxRestStandin = await startEmqxRestStandin({ version: 5, apiKey: EMQX_KEY, apiSecret: EMQX_SECRET })
    cleanup(() => standin.close())

    const replicas: ReplicaProcess[] = []
    cleanup(async () => {
      for (const r of replicas) {
        for (const channel of r.channels.values()) channel.close()
        await r.hub.kill()
        rmSync(r.dataDir, { recursive: true, force: true })
      }
    })
    const launch = async (name: string, hubNode: string, dataDir: string): Promise<EmqxChildHub> => {
      const hub = await startEmqxChildHub(dataDir, {
        env: {
          IOTHUB_NODE: hubNode,
          IOTHUB_STORE: 'postgres',
          IOTHUB_DATABASE_URL: db.url,
          IOTHUB_EMQX_API: standin.url,
          IOTHUB_EMQX_API_KEY: EMQX_KEY,
          IOTHUB_EMQX_API_SECRET: EMQX_SECRET,
          IOTHUB_EMQX_VERSION: '5',
          // only the start's reconcile: one on an interval, mid-load, is not this case
          IOTHUB_RECONCILE_INTERVAL: '86400'
        },
        startTimeoutMs: SETTLE_MS
      })
      // ready: its start's reconcile with EMQX is done, so it changes nothing under the load
      await settle(`replica ${name}'s /readyz to answer 200`, async () => {
        const { status, body } = await hub.api<{ checks: { emqx?: { detail?: string } } }>('GET', '/readyz', undefined, null)
        assert.equal(status, 200, JSON.stringify(body))
        assert.match(body.checks.emqx?.detail ?? '', /^reconciled/, JSON.stringify(body))
      }).catch(async (error: unknown) => {
        await hub.kill()
        throw error
      })
      return hub
    }
    const add = async (name: string): Promise<ReplicaProcess> => {
      const dataDir = tempDir(`iothub-replica-${name}-`)
      const hubNode = `iothub-${name.toLowerCase()}@replicas.test`
      try {
        const replica = { name, hubNode, dataDir, hub: await launch(name, hubNode, dataDir), channels: new Map() }
        replicas.push(replica)
        return replica
      } catch (error) {
        rmSync(dataDir, { recursive: true, force: true })
        throw error
      }
    }
    const channel = (replica: ReplicaProcess, node: string): EmqxExhookClient => {
      let c = replica.channels.get(node)
      if (!c) replica.channels.set(node, (c = new EmqxExhookClient({ address: replica.hub.exhookAddress, version: 'v3', node })))
      return c
    }

    // A first, and the devices through it: B and C then load them from PostgreSQL at their start
    const a = await add('A')
    const clients: LoadClient[] = Array.from({ length: CLIENTS }, (_, i) => ({ id: `load-${String(i).padStart(2, '0')}`, node: NODES[i % NODES.length]!, acked: null }))
    const late = ['late-b', 'late-c', 'late-a']
    for (const id of [...clients.map((c) => c.id), ...late]) {
      const { status, body } = await a.hub.api('POST', '/v1/devices', { id })
      assert.equal(status, 201, `device ${id}: ${JSON.stringify(body)}`)
    }
    await Promise.all([add('B'), add('C')])
    const victim = replicas[0]!
    const survivors = replicas.slice(1)

    // ── the load: each client's calls in order (EMQX's channel for one client is sequential),
    // clients at once, each call to a replica drawn at random among those believed alive
    let nextPort = 40000
    const connections = new Map<string, Connection>()
    const alive = new Set(replicas)
    const inFlight = new Map<ReplicaProcess, number>(replicas.map((r) => [r, 0]))
    let acked = 0
    let ackedAfterKill = 0
    const survivorFailures: string[] = []
    let killedWith: number | undefined
    let killed: Promise<unknown> | undefined
    let stopping = false
    let onAck: (via: ReplicaProcess) => void = () => undefined
    const enough = new Promise<void>((resolve) => {
      onAck = (via) => {
        acked++
        if (killedWith !== undefined && via !== victim) ackedAfterKill++
        // killed with calls to it in flight: in the middle, not between two calls
        if (killedWith === undefined && acked >= BEFORE_KILL && inFlight.get(victim)! > 0) {
          killedWith = inFlight.get(victim)
          alive.delete(victim) // EMQX's calls turn to the replicas left (those in flight fail)
          killed = victim.hub.kill('SIGKILL')
        }
        if (ackedAfterKill >= AFTER_KILL) resolve()
      }
    })

    /** One hook call, EMQX's state changed first (as EMQX tells a hook of what it did); true when acknowledged. */
    const call = async (
      client: LoadClient,
      random: () => number,
      what: string,
      after: Expected,
      emqx: () => void,
      hook: (c: EmqxExhookClient, conn: Connection) => Promise<unknown>
    ): Promise<boolean> => {
      const via = pick(random, [...alive])
      const conn = connections.get(client.id)!
      emqx()
      inFlight.set(via, inFlight.get(via)! + 1)
      const failure = await hook(channel(via, client.node), conn).then(
        () => null,
        (error: Error) => error
      )
      // out of flight before the kill's check: a call answered does not count as in the middle
      inFlight.set(via, inFlight.get(via)! - 1)
      if (failure) {
        client.inDoubt = { before: client.acked, after, call: what, via: via.name, error: failure.message }
        if (via !== victim) survivorFailures.push(`${client.id} ${what} via ${via.name}: ${failure.message}`)
        return false
      }
      client.acked = after
      onAck(via)
      return true
    }

    const run = async (client: LoadClient, index: number): Promise<void> => {
      const { id } = client
      const random = mulberry32(seed + index)
      while (!stopping) {
        const now = client.acked
        const roll = random()
        let ok: boolean
        if (!now) {
          const conn: Connection = { clientid: id, username: id, node: client.node, peerhost: '127.0.0.1', peerport: nextPort++, mountpoint: `${id}/` }
          connections.set(id, conn)
          ok = await call(
            client,
            random,
            'connect',
            { node: client.node, topics: [] },
            () => {
              standin.removeClient(id)
              standin.addClient({ clientid: id, username: id, node: conn.node, ipAddress: conn.peerhost, port: conn.peerport, mountpoint: conn.mountpoint })
            },
            (c) => c.onClientConnected(conn)
          )
        } else if (roll < 0.5 && now.topics.length < TOPICS.length) {
          const topic = pick(random, TOPICS.filter((x) => !now.topics.includes(x)))
          ok = await call(
            client,
            random,
            `subscribe ${topic}`,
            { node: now.node, topics: [...now.topics, topic] },
            () => void (standin.subscribe(id, `${id}/${topic}`, 1).node = now.node),
            (c, conn) => c.onSessionSubscribed(conn, `${id}/${topic}`, { qos: 1 })
          )
        } else if (roll < 0.75 && now.topics.length > 0) {
          const topic = pick(random, now.topics)
          ok = await call(
            client,
            random,
            `unsubscribe ${topic}`,
            { node: now.node, topics: now.topics.filter((x) => x !== topic) },
            () => standin.unsubscribe(id, `${id}/${topic}`),
            (c, conn) => c.onSessionUnsubscribed(conn, `${id}/${topic}`)
          )
        } else if (roll >= 0.85) {
          ok = await call(
            client,
            random,
            'disconnect',
            null,
            () => standin.removeClient(id),
            (c, conn) => c.onClientDisconnected(conn, 'normal')
          )
        } else {
          continue // drawn again: the kind this roll names does not fit the session now
        }
        // a call in doubt ends the client's story: what follows could not say what it expects
        if (!ok) return
      }
    }

    const load = Promise.all(clients.map(run))
    const first = await Promise.race([enough.then(() => 'enough calls made'), load.then(() => 'every client stopped first')])
    assert.equal(first, 'enough calls made', `the load ran on after the kill (${acked} calls acknowledged, ${ackedAfterKill} after the kill)`)
    stopping = true
    await load
    await killed
    t.diagnostic(`${acked} calls acknowledged, ${ackedAfterKill} after the kill; ${killedWith} calls to ${victim.name} in flight at its kill; ${clients.filter((c) => c.inDoubt).length} clients in doubt`)

    // ── the survivors kept answering: every call to them was acknowledged, and many were made
    assert.deepEqual(survivorFailures, [], 'calls to the replicas left are all answered')
    assert.ok(killedWith !== undefined && killedWith > 0, 'the kill came with calls to the killed replica in flight')
    assert.ok(ackedAfterKill >= AFTER_KILL, `${ackedAfterKill} calls acknowledged after the kill`)
    assert.equal((await victim.hub.exited).signal, 'SIGKILL')

    // ── nothing acknowledged is lost: PostgreSQL holds every client as its acknowledged calls
    // left it; a client whose last call failed, as before that call or as after it
    const acknowledgedIn = (where: string, seen: Map<string, string>): string[] =>
      clients.flatMap((c) => {
        const got = seen.get(c.id)
        if (!c.inDoubt) return got === described(c.id, c.acked) ? [] : [`${where}: ${c.id}: ${got ?? 'absent'}; acknowledged ${described(c.id, c.acked) ?? 'absent'}`]
        const either = [described(c.id, c.inDoubt.before), described(c.id, c.inDoubt.after)]
        return either.includes(got) ? [] : [`${where}: ${c.id}: ${got ?? 'absent'}; ${c.inDoubt.call} via ${c.inDoubt.via} failed, so ${either.map((x) => x ?? 'absent').join(' or ')}`]
      })
    const stored = await storedSessions(db)
    assert.deepEqual(acknowledgedIn('PostgreSQL', stored), [], 'PostgreSQL holds every acknowledged change')
    assert.ok([...stored.values()].some((s) => !s.endsWith('[]')), 'the load left sessions with topics')
    const doubted = clients.filter((c) => c.inDoubt)
    const made = doubted.filter((c) => stored.get(c.id) === described(c.id, c.inDoubt!.after)).length
    t.diagnostic(`of the ${doubted.length} calls in doubt, PostgreSQL holds ${made} as made and ${doubted.length - made} as not`)

    // ── and the survivors show just that
    for (const s of survivors) {
      await settle(`replica ${s.name}'s /v1/sessions to show what PostgreSQL holds`, async () => {
        assert.deepEqual(differences(await sessionsOn(s.hub.api), await storedSessions(db)), [])
      })
    }

    // ── restarted on the same data dir with the same node name, it shows what the others show
    for (const c of victim.channels.values()) c.close()
    victim.channels.clear()
    victim.hub = await launch(victim.name, victim.hubNode, victim.dataDir)
    assert.deepEqual(acknowledgedIn('PostgreSQL after the restart', await storedSessions(db)), [], 'the restart (its reconcile with EMQX) undid nothing acknowledged')
    // Every replica shows what PostgreSQL holds; and PostgreSQL holds what EMQX does: the
    // restart's reconcile with EMQX settles the calls left in doubt as EMQX saw them
    const allAgree = (what: string): Promise<true> =>
      settle(what, async () => {
        const held = await storedSessions(db)
        const wrong = [
          ...differences(held, brokerSessions(standin)).map((d) => `PostgreSQL against EMQX: ${d}`),
          ...(await Promise.all(replicas.map(async (r) => differences(await sessionsOn(r.hub.api), held).map((d) => `${r.name}: ${d}`)))).flat()
        ]
        assert.deepEqual(wrong, [])
      })
    await allAgree('every replica, the restarted one too, to show what PostgreSQL holds, and it what EMQX holds')

    // ── it follows the log from then on, both ways: changes through each replica show on all
    for (const [i, id] of late.entries()) {
      const via = [survivors[0]!, survivors[1]!, victim][i]!
      const conn: Connection = { clientid: id, username: id, node: NODES[i]!, peerhost: '127.0.0.1', peerport: nextPort++, mountpoint: `${id}/` }
      standin.addClient({ clientid: id, username: id, node: conn.node, ipAddress: conn.peerhost, port: conn.peerport, mountpoint: conn.mountpoint })
      await channel(via, conn.node).onClientConnected(conn)
      standin.subscribe(id, `${id}/${ATTRIBUTES}`, 1).node = conn.node
      await channel(via, conn.node).onSessionSubscribed(conn, `${id}/${ATTRIBUTES}`, { qos: 1 })
    }
    const lateStored = await storedSessions(db)
    assert.deepEqual(
      late.map((id) => lateStored.get(id)),
      late.map((id, i) => describeSession({ connected: true, node: NODES[i]!, topics: [`${id}/${ATTRIBUTES}`] })),
      'PostgreSQL holds the calls acknowledged after the restart'
    )
    await allAgree('every replica to show the changes made through each after the restart')
  })

  // ─────────────────────────────────────────────────────── 2: PostgreSQL unreachable for a while

  it('2: PostgreSQL cut off from two replicas: hook calls are refused and /readyz says why; restored, both recover by themselves and follow each other again', async (t) => {
    const cleanup = cleanups(t)
    const { db, proxy, throughProxy } = await cuttableDatabase(cleanup)
    const ids = ['steady', 'leaving', 'newcomer', 'after-a', 'after-b']
    const set: ReplicaSet = await startReplicas({ count: 2, db: throughProxy, devices: ids, overrides: { storeTimeout: 1000 } })
    // restored first: a replica stopping against a cut store would wait out its deadlines
    cleanup(() => set.stop())
    cleanup(() => proxy.restore())
    const [a, b] = set.replicas as [Replica, Replica]

    const ready = async (r: Replica): Promise<{ status: number; body: ReadyBody }> => r.api<ReadyBody>('GET', '/readyz', undefined, null)

    // ── before: sessions through each replica, seen by both; each replica listens for the log
    const steady = set.connection('steady', a.node)
    await set.connect(a, steady)
    await set.subscribe(a, steady, ATTRIBUTES)
    const leaving = set.connection('leaving', b.node)
    await set.connect(b, leaving)
    await agreeWithEmqx(set, db, 'both replicas and PostgreSQL to hold the sessions made before the cut')
    assert.equal(await listeners(db), 2, "each replica's change-log listener is connected")

    proxy.cut()

    // ── while cut: what must be stored first is refused, clearly
    const newcomer = set.connection('newcomer', a.node)
    const connectRefused = await refusal(set.connect(a, newcomer))
    const subscribeRefused = await refusal(set.subscribe(b, steady, 'v1/devices/me/commands'))
    for (const [what, refused] of [
      ['client.connected through A', connectRefused],
      ['session.subscribed through B', subscribeRefused]
    ] as const) {
      assert.equal(refused.code, grpc.status.UNAVAILABLE, `${what}: ${refused.details}`)
      assert.match(refused.details, /^not recorded: /, what)
    }
    // a disconnect is answered: EMQX has closed the connection already, so the replica takes
    // the end at once and stores it when it can — an acknowledged change like any other
    await set.disconnect(a, leaving)
    // no replica holds the fleet: reads are the store's, and answer 503 (not 500) while it is away
    const whileCut = await a.api('GET', '/v1/sessions/leaving')
    assert.equal(whileCut.status, 503, "A's API says the store is away while it is")

    for (const r of set.replicas) {
      const body = await eventually(
        async () => {
          const answer = await ready(r)
          return answer.status === 503 && answer.body
        },
        SETTLE_MS,
        `replica ${r.name}'s /readyz to answer 503 while PostgreSQL is cut off`
      )
      t.diagnostic(`replica ${r.name} /readyz while cut: ${JSON.stringify(body)}`)
      assert.equal(body.status, 'not ready')
      assert.equal(body.checks.store?.ok, false, `${r.name}: the store check fails`)
      assert.match(body.checks.store?.detail ?? '', /^store (commit|probe|read) failed: \S/, `${r.name}: the store check says why`)
      for (const other of ['hub', 'exhook', 'emqx']) assert.equal(body.checks[other]?.ok, true, `${r.name}: ${other} is fine; the store alone is why`)
    }
    // the cut also took the listeners' connections: following the log again needs new ones
    await settle('the change-log listeners to be cut off', async () => assert.equal(await listeners(db), 0))

    proxy.restore()

    // ── restored: each replica recovers by itself
    for (const r of set.replicas) {
      await settle(`replica ${r.name}'s /readyz to answer 200 again`, async () => {
        const { status, body } = await ready(r)
        assert.equal(status, 200, JSON.stringify(body))
      })
    }
    await settle("both replicas' change-log listeners to connect again", async () => assert.equal(await listeners(db), 2))

    // the end A acknowledged while cut reached PostgreSQL, and B
    await settle('the disconnect acknowledged during the cut to be stored', async () => assert.equal((await storedSessions(db)).has('leaving'), false))
    assert.equal((await a.api('GET', '/v1/sessions/leaving')).status, 404, 'A shows the end it acknowledged during the cut')
    await settle("B's /v1/sessions to lose the session that ended during the cut", async () => assert.equal((await sessionsOn(b.api)).has('leaving'), false))

    // hook calls are answered again, and what one replica records the other shows
    const afterA = set.connection('after-a', a.node)
    await set.connect(a, afterA)
    await set.subscribe(a, afterA, ATTRIBUTES)
    const afterB = set.connection('after-b', b.node)
    await set.connect(b, afterB)
    await set.subscribe(b, afterB, ATTRIBUTES)
    const stored = await storedSessions(db)
    assert.deepEqual(
      [stored.get('after-a'), stored.get('after-b')],
      [
        describeSession({ connected: true, node: a.node, topics: [`after-a/${ATTRIBUTES}`] }),
        describeSession({ connected: true, node: b.node, topics: [`after-b/${ATTRIBUTES}`] })
      ],
      'PostgreSQL holds what the calls after the outage acknowledged'
    )
    await settle("B's /v1/sessions to show the session recorded through A after the outage", async () => {
      assert.equal((await sessionsOn(b.api)).get('after-a'), stored.get('after-a'))
    })
    await settle("A's /v1/sessions to show the session recorded through B after the outage", async () => {
      assert.equal((await sessionsOn(a.api)).get('after-b'), stored.get('after-b'))
    })

    // and what the store refused meanwhile is brought in from EMQX's own list, which holds it
    await agreeWithEmqx(set, db, 'both replicas and PostgreSQL to agree with EMQX, the calls refused during the cut included')
  })

  it('3: a cut shorter than the store watch looks: the hook call it refused is brought in from EMQX all the same', async (t) => {
    const cleanup = cleanups(t)
    const { db, proxy, throughProxy } = await cuttableDatabase(cleanup)
    const set: ReplicaSet = await startReplicas({ count: 2, db: throughProxy, devices: ['brief'], overrides: { storeTimeout: 1000 } })
    cleanup(() => set.stop())
    cleanup(() => proxy.restore())
    const [a] = set.replicas as [Replica, Replica]

    // cut and restored around one refused call: far shorter than the second between two looks of
    // a replica's store watch, which must still count it (src/store/store-return.ts)
    proxy.cut()
    const brief = set.connection('brief', a.node)
    const refused = await refusal(set.connect(a, brief))
    proxy.restore()
    assert.equal(refused.code, grpc.status.UNAVAILABLE, refused.details)
    assert.match(refused.details, /^not recorded: /)

    // EMQX holds the connection the hub refused to record: a reconcile must bring it in, long
    // before the interval's (300 s)
    assert.equal(brokerSessions(set.standin).size, 1, 'EMQX lists the client')
    await agreeWithEmqx(set, db, 'both replicas and PostgreSQL to hold the session whose connect was refused during the cut')
  })
})

/** A small seeded generator (mulberry32): a failing run's choices are repeated by its seed. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let x = state
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}
