/**
 * CoAP: BENCH_COAP_CLIENTS CoAP devices connect to the hub's CoAP gateway (EMQX 5 connection
 * mode), observe one topic each and close; the wall time, and the registry exact afterwards.
 *
 *   coap:  the hub (token auth, SQLite store, as `npm start` runs it); per device
 *          POST /mqtt/connection?clientid=&username=&password= → 2.01 + token,
 *          GET /ps/v1/devices/me/attributes?clientid=&token= with Observe 0 → 2.05 (a coap
 *          session entity and a subscription entity, stored before each answer), and, once
 *          every device has observed, DELETE /mqtt/connection?clientid=&token= → 2.02 (the
 *          session and its subscription entity ended, stored before the answer).
 *   floor: the same datagrams from the same client, answered at once by a bare node-coap server
 *          (the library the gateway is built on, with the gateway's transmission parameters):
 *          2.01 with a random token, 2.05 with Observe (the observation left open), 2.02,
 *          nothing checked or stored. What any gateway on node-coap pays for the three requests;
 *          hub/floor is what authentication, the registry and the durable store add.
 *   mqtt:  the same devices on a hub of their own doing the same over MQTT: CONNECT (token),
 *          SUBSCRIBE v1/devices/me/attributes QoS 1, and once all have their SUBACK, DISCONNECT;
 *          the same entities, through the hub's MQTT path. A reference, not a floor: its
 *          clients (mqtt.js over TCP) cost the shared cpus more than the CoAP ones.
 *
 * Every target runs in this process, freshly started for each run (hubs with a fresh data dir
 * and the devices registered through the API, untimed); the clients run in a child process
 * (bench/lib/coap-fleet.ts: CoAP written on coap-packet over BENCH_COAP_SOCKETS UDP sockets, and
 * mqtt.js), BENCH_COAP_CONCURRENCY devices at a time. One untimed warm-up run per target, then
 * BENCH_COAP_ROUNDS rounds of the three, in rotating order; medians are reported.
 *
 * Registry check (hub runs), through the hub's API (`GET /v1/sessions`, `GET /v1/subscriptions`,
 * paged) and its registry: once every device has observed, exactly BENCH_COAP_CLIENTS sessions,
 * each connected, of protocol coap (mqtt for the MQTT run), its own device, holding the one
 * topic, and exactly one subscription entity per session for that topic; after the closes, no
 * session and no subscription entity. Also checked, as diagnosis: the broker's handlers for the
 * devices' topics (one each, then none) and the gateway's own table of connections.
 *
 *   BENCH_COAP_CLIENTS      devices per run                                   (default 5,000)
 *   BENCH_COAP_CONCURRENCY  devices connecting+observing (or closing) at a time (default 128)
 *   BENCH_COAP_SOCKETS      UDP sockets the CoAP devices share                 (default 8)
 *   BENCH_COAP_ROUNDS       timed rounds of each target; medians reported      (default 3)
 *   BENCH_COAP_WARMUP       devices of one untimed run per target first        (default 1,000)
 *   BENCH_STORE_SYNC        the hubs' store sync, full or normal               (default full)
 *
 * Diagnosis only: BENCH_COAP_TARGETS=coap (or floor, mqtt, or two of them) runs those only;
 * BENCH_COAP_CPU_PROFILE=<dir> writes a V8 cpu profile of this process for each phase of each
 * timed CoAP hub run (`coap-hub-round1-open.cpuprofile`, `…-close…`; the profiler costs ~15%).
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import * as coap from 'coap'
import type { ObserveWriteStream } from 'coap'
import { loadConfig } from '../src/config.js'
import type { Hub } from '../src/hub.js'
import { readCoapRequest } from '../src/embedded/coap/coap-request.js'
import { roundExchangeLifetime, serverSocket } from '../src/embedded/coap/coap-internals.js'
import { CoapFleet, coapDeviceId, OBSERVED_TOPIC, udpDrops, type PhaseReport, type Stat } from './lib/coap-fleet.js'
import { cpuMsSince } from './lib/child-fleet.js'
import { machineTimes, mainThreadCpuMs, profiled } from './lib/process-cpu.js'
import { benchStoreSync, commitTotals, startHub, type CommitTotals, type Target } from './lib/targets.js'
import { basicAuthHeader } from './lib/devices.js'
import { collectGarbage, envInt, fmt, line, median, nowMs, report, runMain, waitFor } from './lib/util.js'

const CLIENTS = envInt('BENCH_COAP_CLIENTS', 5_000)
const CONCURRENCY = envInt('BENCH_COAP_CONCURRENCY', 128)
const SOCKETS = envInt('BENCH_COAP_SOCKETS', 8)
const ROUNDS = envInt('BENCH_COAP_ROUNDS', 3)
const WARMUP = envInt('BENCH_COAP_WARMUP', 1_000)
const SETTLE_TIMEOUT_MS = 60_000
/** Share of the machine's cpu used by other processes during a run above which it is flagged. */
const OTHERS_WARNING = 0.1
/** The hub's API credentials: its defaults (config.ts). */
const API_AUTH = 'admin:public'

type RunName = 'floor' | 'coap' | 'mqtt'
const RUN_NAMES: RunName[] = ['floor', 'coap', 'mqtt']
const TARGETS = (process.env.BENCH_COAP_TARGETS ?? RUN_NAMES.join(',')).split(',').map((t) => {
  if (!RUN_NAMES.includes(t as RunName)) throw new Error(`BENCH_COAP_TARGETS must list coap, floor and/or mqtt, got "${t}"`)
  return t as RunName
})
const PROFILE_DIR = process.env.BENCH_COAP_CPU_PROFILE ?? ''
const LABEL: Record<RunName, string> = { coap: 'coap→hub', floor: 'coap→floor', mqtt: 'mqtt→hub' }

interface Check {
  match: boolean
  sessions: number
  subscriptions: number
  differences: string[]
}

interface Leftovers {
  /** Broker handlers (Aedes' emitter) on the devices' topics: one each while observed, none after; null if unreadable. */
  brokerHandlers: number | null
  /** Connections in the CoAP gateway's own table; null if unreadable. */
  gatewayConnections: number | null
}

interface RunResult {
  run: RunName
  clients: number
  openMs: number
  closeMs: number
  open: PhaseReport
  close: PhaseReport
  /** This process' cpu (the target's: all its threads) in each phase, ms, and its main thread's (Linux). */
  cpuMs: [number, number]
  mainCpuMs: [number | null, number | null]
  elu: [number, number]
  commits: [CommitTotals | null, CommitTotals | null]
  registerMs: number | null
  /** CoAP runs: datagrams the kernel dropped on the server's socket (its receive buffer full); null for MQTT or off Linux. */
  serverDrops: number | null
  /** Share of the machine's cpu (both phases) used by processes other than this one and the clients'. */
  othersShare: number
  /** Hub runs only. */
  mid: Check | null
  after: Check | null
  midLeft: Leftovers | null
  afterLeft: Leftovers | null
}


function commitDelta(a: CommitTotals | null, b: CommitTotals | null): CommitTotals | null {
  if (!a || !b) return null
  return { transactions: b.transactions - a.transactions, commits: b.commits - a.commits, seconds: b.seconds - a.seconds }
}

/**
 * The floor: node-coap's server with the transmission parameters the gateway sets
 * (CoapGateway.listen(), from the hub's default IOTHUB_COAP_ACK_TIMEOUT; node-coap keeps them
 * process-wide), answering the three requests at once: nothing checked, nothing stored.
 */
async function startCoapFloor(): Promise<{ port: number; stop(): Promise<void> }> {
  const ackTimeout = loadConfig({}, [], {}).coapAckTimeout / 1000
  coap.updateTiming({ ackTimeout, ackRandomFactor: 1.5, maxRetransmit: 4, maxLatency: ackTimeout * 50 })
  roundExchangeLifetime()
  const server = coap.createServer({ reuseAddr: false }, (req, res) => {
    const [first, second] = readCoapRequest(req).path
    if (first === 'mqtt' && second === 'connection' && req.method === 'POST') {
      res.code = '2.01'
      res.end(randomBytes(8).toString('hex'))
    } else if (first === 'mqtt' && second === 'connection' && req.method === 'DELETE') {
      res.code = '2.02'
      res.end()
    } else if (first === 'ps' && req.method === 'GET' && res instanceof coap.ObserveWriteStream) {
      ;(res as unknown as ObserveWriteStream).write('') // 2.05 with Observe
    } else {
      res.code = '4.04'
      res.end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = serverSocket(server).address().port
  return { port, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

interface Page<T> {
  data: T[]
  next: string | null
}

/** Every item of a paged list route of the hub's API. */
async function listAll<T>(httpUrl: string, path: string): Promise<T[]> {
  const all: T[] = []
  let cursor: string | null = null
  do {
    const url = `${httpUrl}${path}?limit=1000${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`
    const answer = await fetch(url, { headers: { authorization: basicAuthHeader(API_AUTH) } })
    if (answer.status !== 200) throw new Error(`GET ${path} answered ${answer.status}: ${(await answer.text()).slice(0, 200)}`)
    const page = (await answer.json()) as Page<T>
    all.push(...page.data)
    cursor = page.next
  } while (cursor !== null)
  return all
}

interface ApiSession {
  id: string
  protocol: string
  deviceId: string | null
  connected: boolean
  topics: { topic: string; brokerTopic: string }[]
}

interface ApiSubscription {
  id: string
  sessionId: string
  deviceId: string
  topic: string
  brokerTopic: string
}

/**
 * What the hub's API shows, against what `clients` devices connected over `protocol` and each
 * observing (subscribed to) OBSERVED_TOPIC must look like — or, with `clients` 0, nothing.
 */
async function checkRegistry(hub: Hub, httpUrl: string, protocol: 'coap' | 'mqtt', clients: number): Promise<Check> {
  const differences: string[] = []
  let count = 0
  const note = (text: string) => {
    if (count++ < 8) differences.push(text)
  }
  const sessions = await listAll<ApiSession>(httpUrl, '/v1/sessions')
  const subscriptions = await listAll<ApiSubscription>(httpUrl, '/v1/subscriptions')
  const expected = new Set(Array.from({ length: clients }, (_, i) => coapDeviceId(i)))
  const seen = new Set<string>()
  for (const s of sessions) {
    if (!expected.has(s.id)) note(`session ${s.id} (${s.protocol}, connected ${s.connected}) should not exist`)
    else if (s.protocol !== protocol || !s.connected || s.deviceId !== s.id) note(`session ${s.id}: protocol ${s.protocol}, connected ${s.connected}, device ${s.deviceId}`)
    else if (s.topics.length !== 1 || s.topics[0]!.topic !== OBSERVED_TOPIC) note(`session ${s.id} holds topics [${s.topics.map((t) => t.topic).join(', ')}]`)
    seen.add(s.id)
  }
  if (sessions.length !== clients) note(`${fmt(sessions.length)} sessions listed, ${fmt(clients)} expected (${fmt(clients - [...expected].filter((id) => seen.has(id)).length)} missing)`)
  const perSession = new Map<string, number>()
  for (const e of subscriptions) {
    perSession.set(e.sessionId, (perSession.get(e.sessionId) ?? 0) + 1)
    if (!expected.has(e.sessionId)) note(`subscription entity ${e.id} of session ${e.sessionId} should not exist`)
    else if (e.deviceId !== e.sessionId || e.topic !== OBSERVED_TOPIC || e.brokerTopic !== `${e.deviceId}/${OBSERVED_TOPIC}`) {
      note(`subscription entity ${e.id}: device ${e.deviceId}, topic ${e.topic}, broker topic ${e.brokerTopic}`)
    }
  }
  for (const [id, n] of perSession) if (n > 1) note(`session ${id} has ${n} subscription entities`)
  if (subscriptions.length !== clients) note(`${fmt(subscriptions.length)} subscription entities listed, ${fmt(clients)} expected`)
  // the API reads the registry; its own counts must agree
  if (hub.registry.size !== sessions.length) note(`registry holds ${fmt(hub.registry.size)} sessions, the API listed ${fmt(sessions.length)}`)
  if (count > differences.length) differences.push(`… and ${fmt(count - differences.length)} more`)
  return { match: count === 0, sessions: sessions.length, subscriptions: subscriptions.length, differences }
}

/** Broker handlers on the devices' topics, and the gateway's connections (private state: null when it cannot be read). */
function leftovers(hub: Hub, clients: number): Leftovers {
  const aedes = hub.broker?.aedes as unknown as { mq?: { _matcher?: { match?(topic: string): unknown[] } } } | undefined
  const matcher = aedes?.mq?._matcher
  let brokerHandlers: number | null = null
  if (matcher && typeof matcher.match === 'function') {
    brokerHandlers = 0
    for (let i = 0; i < clients; i++) brokerHandlers += matcher.match(`${coapDeviceId(i)}/${OBSERVED_TOPIC}`).length
  }
  const table = (hub.carrier as unknown as { coap?: { connections?: unknown } }).coap?.connections
  return { brokerHandlers, gatewayConnections: table instanceof Map ? table.size : null }
}

async function runOnce(fleet: CoapFleet, run: RunName, clients: number, label: string): Promise<RunResult> {
  await collectGarbage()
  const hubTarget: Target | null = run === 'floor' ? null : await startHub({ auth: 'token' })
  const floor = run === 'floor' ? await startCoapFloor() : null
  const hub = hubTarget?.hub ?? null
  try {
    const registerMs = hubTarget ? await fleet.register(hubTarget.httpUrl!, API_AUTH, clients) : null
    const protocol = run === 'mqtt' ? 'mqtt' : 'coap'
    const open = () =>
      run === 'mqtt'
        ? fleet.open({ url: hubTarget!.url, count: clients, concurrency: CONCURRENCY })
        : fleet.open({ host: '127.0.0.1', port: floor ? floor.port : hub!.address.coap!.port, count: clients, concurrency: CONCURRENCY, sockets: SOCKETS })
    const profileAs = (phase: string) => (PROFILE_DIR !== '' && run === 'coap' && label.startsWith('round') ? `coap-hub-${label.replace(' ', '')}-${phase}.cpuprofile` : '')
    const profile = <T>(phase: string, work: () => Promise<T>) => {
      const file = profileAs(phase)
      return file === '' ? work() : profiled(PROFILE_DIR, file, work)
    }

    const commits0 = await commitTotals(hub)
    let cpu = process.cpuUsage()
    let main = mainThreadCpuMs()
    let elu = performance.eventLoopUtilization()
    let machine = machineTimes()
    let t0 = nowMs()
    const opened = await profile('open', open)
    const openMs = nowMs() - t0
    const openMachine = machineTimes()
    let othersMs = openMachine.busy - machine.busy
    let machineMs = openMachine.total - machine.total
    const openCpu = cpuMsSince(cpu)
    const openMain = main === null ? null : mainThreadCpuMs()! - main
    const openElu = performance.eventLoopUtilization(elu).utilization
    const commits1 = await commitTotals(hub)

    // outside the timings: every device has its 2.05 (SUBACK), so all must be there
    const mid = hub ? await checkRegistry(hub, hubTarget!.httpUrl!, protocol, clients) : null
    const midLeft = hub ? leftovers(hub, clients) : null

    await collectGarbage()
    const commits2 = await commitTotals(hub)
    cpu = process.cpuUsage()
    main = mainThreadCpuMs()
    elu = performance.eventLoopUtilization()
    machine = machineTimes()
    t0 = nowMs()
    const closed = await profile('close', () => fleet.close(protocol, CONCURRENCY))
    // a CoAP 2.02 leaves once the end is stored; an MQTT DISCONNECT has no answer: wait for the registry
    const settled = hub === null || (await waitFor(() => hub.registry.size === 0, SETTLE_TIMEOUT_MS))
    const closeMs = nowMs() - t0
    const closeCpu = cpuMsSince(cpu)
    const closeMain = main === null ? null : mainThreadCpuMs()! - main
    const closeElu = performance.eventLoopUtilization(elu).utilization
    const closeMachine = machineTimes()
    othersMs += closeMachine.busy - machine.busy - openCpu - closeCpu - opened.cpuMs - closed.cpuMs
    machineMs += closeMachine.total - machine.total
    if (!settled) line(`  WARNING: ${LABEL[run]}: the registry still held ${hub.registry.size} sessions ${fmt(SETTLE_TIMEOUT_MS)} ms after the closes`)
    if (hub) await hub.registry.settled()
    const commits3 = await commitTotals(hub)
    const serverPort = floor ? floor.port : run === 'coap' ? hub!.address.coap!.port : null
    const serverDrops = serverPort === null ? null : udpDrops(serverPort)
    const after = hub ? await checkRegistry(hub, hubTarget!.httpUrl!, protocol, 0) : null
    const afterLeft = hub ? leftovers(hub, clients) : null
    return {
      run,
      clients,
      openMs,
      closeMs,
      open: opened,
      close: closed,
      cpuMs: [openCpu, closeCpu],
      mainCpuMs: [openMain, closeMain],
      elu: [openElu, closeElu],
      commits: [commitDelta(commits0, commits1), commitDelta(commits2, commits3)],
      registerMs,
      serverDrops,
      othersShare: Math.max(0, othersMs) / Math.max(1, machineMs),
      mid,
      after,
      midLeft,
      afterLeft
    }
  } finally {
    if (hubTarget) await hubTarget.stop()
    if (floor) await floor.stop()
  }
}

const PAD = ''.padEnd(14)
const stat = (s: Stat | undefined) => (s ? `${fmt(s.p50, 1)}/${fmt(s.p99, 1)}` : '-')
const totalMs = (r: RunResult) => r.openMs + r.closeMs
/** Requests (CoAP) or packets answered (MQTT: CONNECT, SUBSCRIBE, DISCONNECT) per device: three. */
const perSecond = (r: RunResult) => ((3 * r.clients) / totalMs(r)) * 1000
const failures = (r: RunResult) => r.open.failed + r.close.failed + (r.open.ok === r.clients ? 0 : 1)
const leftText = (l: Leftovers | null) =>
  l === null ? '' : `broker handlers on the devices' topics ${l.brokerHandlers === null ? 'n/a' : fmt(l.brokerHandlers)}, gateway connections ${l.gatewayConnections === null ? 'n/a' : fmt(l.gatewayConnections)}`

/** Leftovers as expected: one broker handler per device while observed (none after); the gateway's table holds the CoAP run's connections (none after). */
function leftoversOk(r: RunResult): boolean {
  const ok = (l: Leftovers | null, handlers: number, connections: number) =>
    l === null || ((l.brokerHandlers === null || l.brokerHandlers === handlers) && (l.gatewayConnections === null || l.gatewayConnections === connections))
  return ok(r.midLeft, r.open.ok, r.run === 'coap' ? r.open.ok : 0) && ok(r.afterLeft, 0, 0)
}

function printRun(r: RunResult, label: string): void {
  const steps = r.run === 'mqtt' ? ['connect', 'subscribe'] : ['connect', 'observe']
  const o = r.open
  line(
    `  ${label.padEnd(8)} ${LABEL[r.run].padEnd(10)}  connect+${steps[1]} ${fmt(r.openMs).padStart(6)} ms  close ${fmt(r.closeMs).padStart(6)} ms  total ${fmt(totalMs(r)).padStart(6)} ms` +
      `  ${fmt(perSecond(r)).padStart(6)} req/s   p50/p99 ms: ${steps[0]} ${stat(o.latency[steps[0]!])}, ${steps[1]} ${stat(o.latency[steps[1]!])}, close ${stat(r.close.latency.close)}`
  )
  line(
    `  ${PAD}${r.run === 'floor' ? 'floor' : 'hub'}: cpu ${fmt(r.cpuMs[0] + r.cpuMs[1])} ms` +
      (r.mainCpuMs[0] === null || r.mainCpuMs[1] === null ? '' : ` (main thread ${fmt(r.mainCpuMs[0] + r.mainCpuMs[1])} ms, ${fmt(((r.mainCpuMs[0] + r.mainCpuMs[1]) * 1000) / r.clients)} µs a device)`) +
      `, event loop ${fmt(r.elu[0] * 100)}%/${fmt(r.elu[1] * 100)}% busy (open/close);  clients: cpu ${fmt(o.cpuMs + r.close.cpuMs)} ms, event loop ${fmt(o.elu * 100)}%/${fmt(r.close.elu * 100)}%` +
      (r.commits[0] && r.commits[1]
        ? `;  store: ${fmt(r.commits[0].transactions + r.commits[1].transactions)} transactions × ${fmt((r.commits[0].commits + r.commits[1].commits) / Math.max(1, r.commits[0].transactions + r.commits[1].transactions), 1)} writes`
        : '') +
      (r.registerMs === null ? '' : `;  ${fmt(r.clients)} devices registered in ${fmt(r.registerMs)} ms (untimed)`)
  )
  if (r.run !== 'mqtt') {
    const c = { ...o.coap }
    for (const k of Object.keys(c) as (keyof typeof c)[]) c[k] += r.close.coap[k]
    line(
      `  ${PAD}coap: ${fmt(c.retransmits)} retransmissions, ${fmt(c.separate)} answers sent separately (empty ACK first; ${fmt(c.acksSent)} ACKs sent back), ` +
        `${fmt(c.unmatched)} unmatched datagrams, ${fmt(c.notifications)} notifications;  datagrams dropped by the kernel (receive buffer full): ` +
        `server socket ${r.serverDrops === null ? 'n/a' : fmt(r.serverDrops)}, client sockets ${fmt(c.clientDrops)}`
    )
  }
  if (r.othersShare > OTHERS_WARNING) {
    line(`  ${PAD}WARNING: other processes used ${fmt(r.othersShare * 100)}% of the machine's cpu during this run: its figures are not clean`)
  }
  if (failures(r) > 0) line(`  ${PAD}FAILED: ${fmt(o.failed)} devices did not connect+observe, ${fmt(r.close.failed)} did not close: ${[...o.errors, ...r.close.errors].join('; ')}`)
  if (r.mid && r.after) {
    const what = r.run === 'coap' ? 'coap' : 'mqtt'
    line(
      `  ${PAD}registry mid-run: ${r.mid.match ? 'MATCH' : 'MISMATCH'} (${fmt(r.mid.sessions)} ${what} sessions connected, ${fmt(r.mid.subscriptions)} subscription entities; ${fmt(r.clients)} expected);` +
        ` after: ${r.after.match ? 'MATCH' : 'MISMATCH'} (${fmt(r.after.sessions)} sessions, ${fmt(r.after.subscriptions)} subscription entities)`
    )
    for (const d of [...r.mid.differences, ...r.after.differences]) line(`  ${PAD}  ${d}`)
    line(`  ${PAD}${leftoversOk(r) ? '' : 'LEFTOVERS: '}mid-run ${leftText(r.midLeft)}; after ${leftText(r.afterLeft)}`)
  }
}

const ROTATIONS: RunName[][] = [
  ['floor', 'coap', 'mqtt'],
  ['coap', 'mqtt', 'floor'],
  ['mqtt', 'floor', 'coap']
]

async function main(): Promise<void> {
  line(`coap: ${fmt(CLIENTS)} devices connect, observe one topic and close, ${fmt(CONCURRENCY)} at a time (each request confirmable; closes once all have observed)`)
  line(`  coap→hub:   the hub's CoAP gateway (EMQX 5 connection mode, token auth, store synchronous = ${benchStoreSync().toUpperCase()}${benchStoreSync() === 'full' ? '' : ': NOT the default, for diagnosis'})`)
  line('  coap→floor: the baseline — a bare node-coap server (the gateway\'s library and timing) answering the same three requests at once, nothing checked or stored:')
  line('              the floor of any gateway on node-coap, so hub/floor is the cost of authentication, registry and durable store')
  line('  mqtt→hub:   a reference — the same devices doing the same over MQTT on the same hub (CONNECT, SUBSCRIBE QoS 1, DISCONNECT): the same entities, the MQTT path')
  line(`  targets in this process, fresh for each run; clients in a child process (CoAP on coap-packet over ${fmt(SOCKETS)} UDP sockets; mqtt.js);` +
    ` one ${fmt(WARMUP)}-device warm-up per target, then ${ROUNDS} round(s), rotating order`)
  const fleet = await CoapFleet.start()
  const results: RunResult[] = []
  const warmups: RunResult[] = []
  try {
    for (const run of TARGETS) {
      const r = await runOnce(fleet, run, Math.min(WARMUP, CLIENTS), 'warm-up')
      printRun(r, 'warm-up')
      warmups.push(r)
    }
    for (let round = 0; round < ROUNDS; round++) {
      for (const run of ROTATIONS[round % ROTATIONS.length]!.filter((t) => TARGETS.includes(t))) {
        const r = await runOnce(fleet, run, CLIENTS, `round ${round + 1}`)
        printRun(r, `round ${round + 1}`)
        results.push(r)
      }
    }
  } finally {
    await fleet.stop()
  }

  const of = (run: RunName) => results.filter((r) => r.run === run)
  const med = (run: RunName, pick: (r: RunResult) => number) => median(of(run).map(pick))
  const flagged = results.filter((r) => r.othersShare > OTHERS_WARNING).length
  line(`  medians over ${ROUNDS} round(s)${flagged > 0 ? ` (${flagged} of ${results.length} runs flagged: other processes used more than ${fmt(OTHERS_WARNING * 100)}% of the cpu)` : ''}:`)
  for (const run of TARGETS) {
    const steps = run === 'mqtt' ? ['connect', 'subscribe'] : ['connect', 'observe']
    line(
      `    ${LABEL[run].padEnd(10)}  connect+${steps[1]!.padEnd(9)} ${fmt(med(run, (r) => r.openMs)).padStart(6)} ms  close ${fmt(med(run, (r) => r.closeMs)).padStart(6)} ms` +
        `  total ${fmt(med(run, totalMs)).padStart(6)} ms  ${fmt(((3 * CLIENTS) / med(run, totalMs)) * 1000).padStart(6)} req/s` +
        `   p99 ms: ${steps[0]} ${fmt(med(run, (r) => r.open.latency[steps[0]!]!.p99), 1)}, ${steps[1]} ${fmt(med(run, (r) => r.open.latency[steps[1]!]!.p99), 1)}, close ${fmt(med(run, (r) => r.close.latency.close!.p99), 1)}`
    )
  }
  const hubRuns = [...warmups, ...results].filter((r) => r.run === 'coap')
  const exact = hubRuns.length > 0 && hubRuns.every((r) => r.mid?.match === true && r.after?.match === true && failures(r) === 0)
  const clean = hubRuns.every(leftoversOk)
  const mqttRuns = [...warmups, ...results].filter((r) => r.run === 'mqtt')
  if (hubRuns.length > 0) {
    line(
      `  registry exact (coap→hub, warm-up included): ${exact ? 'MATCH' : 'MISMATCH'} — ${hubRuns.filter((r) => r.mid?.match).length}/${hubRuns.length} runs with exactly the devices' coap sessions and subscription entities once all observed,` +
        ` ${hubRuns.filter((r) => r.after?.match).length}/${hubRuns.length} with none left after the closes; broker handlers and gateway table ${clean ? 'as expected' : 'NOT AS EXPECTED (see LEFTOVERS above)'}`
    )
  }
  if (mqttRuns.length > 0) line(`  (mqtt→hub, same checks: ${mqttRuns.every((r) => r.mid?.match && r.after?.match && failures(r) === 0) ? 'MATCH' : 'MISMATCH'} in ${mqttRuns.filter((r) => r.mid?.match && r.after?.match).length}/${mqttRuns.length} runs)`)

  if (!TARGETS.includes('coap')) {
    line('  (no coap→hub run, BENCH_COAP_TARGETS: nothing reported)')
    return
  }
  const hubTotal = med('coap', totalMs)
  const rows = [
    ...(TARGETS.includes('floor')
      ? [
          {
            bench: 'coap',
            metric: `${fmt(CLIENTS)} CoAP clients: connect, observe, close`,
            value: `${fmt(hubTotal)} ms (${fmt(((3 * CLIENTS) / hubTotal) * 1000)} req/s)`,
            baseline: `${fmt(med('floor', totalMs))} ms (bare node-coap)`,
            ratio: fmt(hubTotal / med('floor', totalMs), 2),
            target: '',
            met: null
          }
        ]
      : []),
    ...(TARGETS.includes('mqtt')
      ? [
          {
            bench: 'coap',
            metric: 'the same over MQTT on the hub (reference)',
            value: `${fmt(hubTotal)} ms`,
            baseline: `${fmt(med('mqtt', totalMs))} ms (MQTT, hub)`,
            ratio: fmt(hubTotal / med('mqtt', totalMs), 2),
            target: '',
            met: null
          }
        ]
      : []),
    {
      bench: 'coap',
      metric: 'registry exact (mid-run and after)',
      value: `${exact ? 'MATCH' : 'MISMATCH'}${clean ? '' : '; LEFTOVERS'}`,
      baseline: '',
      ratio: '',
      target: 'exact match',
      met: exact && clean
    }
  ]
  await report('coap', rows)
}

runMain(main)
