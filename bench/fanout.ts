/**
 * Fan-out: BENCH_FANOUT_DEVICES connected devices, each subscribed (QoS 1) to its attributes;
 * one API call per device changes its attributes, and the hub pushes each change to its
 * device. Measured: the time until every device has received its push, and the per-push
 * latency — against the same publishes sent straight to bare Aedes in the same run.
 *
 *   hub:  PATCH /v1/devices/{id}/attributes (HTTP keep-alive, BENCH_FANOUT_CONCURRENCY in flight)
 *         → durable write of the device's attributes → QoS 1 publish on {id}/v1/devices/me/attributes
 *         → the device, subscribed to v1/devices/me/attributes (token auth, its own mountpoint)
 *   bare: QoS 1 PUBLISH on {id}/v1/devices/me/attributes from MQTT publisher clients (the same
 *         number in flight, each until its PUBACK) → the device, subscribed to that topic
 *   fleet: the hub again, the same pushes as ONE fleet push — PATCH /v1/devices/attributes with
 *         `all: true` — every device changed (durably) and pushed its change; compared with the
 *         same bare round (the issue's target: ≤ 1.5× bare Aedes publishing the 10,000 messages)
 *   floor: the hub's PATCH requests, answered by bare Aedes behind node's HTTP server with
 *         nothing else (no framework, auth, store or entities): a reference, not a hub — what
 *         any hub making one HTTP request per push pays on this machine (floor/bare is printed)
 *
 * The same payloads (the PATCH body is what the hub publishes), the same device ids, topics,
 * QoS and concurrency. The brokers run in this process, one after the other (bare Aedes first),
 * each freshly started (the hub with a fresh data dir and token auth); the devices and the load
 * generator run in a child process (bench/lib/fanout-fleet.ts), so the broker has this process
 * to itself. Per broker: connect and subscribe the devices (untimed), one untimed warm-up
 * fan-out (every device once by default; it also opens the load generator's keep-alive
 * sockets), then BENCH_FANOUT_ROUNDS timed fan-outs to the same connected devices. Medians
 * over the rounds are reported, with each round's figures.
 *
 * Checked in every fan-out (warm-ups included): each device received exactly one push, its own
 * (device id, sequence number, phase and topic in the payload), every request was answered 200
 * with `pushedTo` = [the device's session] (every publish acknowledged, for bare Aedes); for the
 * hub, after setup, each device holds exactly one attributes subscription entity.
 *
 *   BENCH_FANOUT_DEVICES      connected devices, one push each per fan-out           (default 10,000)
 *   BENCH_FANOUT_CONCURRENCY  pushes in flight (HTTP requests / QoS 1 publishes)     (default 200)
 *   BENCH_FANOUT_PUBLISHERS   bare Aedes: MQTT publisher connections carrying them   (default 8)
 *   BENCH_FANOUT_ROUNDS       timed fan-outs per broker; medians are reported        (default 5)
 *   BENCH_FANOUT_WARMUP       devices of the untimed warm-up fan-out                 (default all)
 *   BENCH_FANOUT_FLEET_ROUNDS hub: timed fleet pushes after its per-device rounds, 0: none (default BENCH_FANOUT_ROUNDS)
 *   BENCH_CONCURRENCY         devices connecting at a time during setup              (default 200)
 *   BENCH_STORE_SYNC          the hub's store sync, full or normal                   (default full)
 *
 * Diagnosis only: BENCH_FANOUT_TARGETS=hub (or bare, floor, or two of them) runs those only;
 * BENCH_FANOUT_CPU_PROFILE=<dir> writes a V8 cpu profile of the broker's process (main thread)
 * for each timed fan-out (the profiler costs ~15%: do not quote those runs' times);
 * BENCH_FANOUT_HEAP_PROFILE=<dir> a sampling heap profile of it (what was allocated, collected or not).
 */
import { performance } from 'node:perf_hooks'
import type { Hub } from '../src/hub.js'
import { deviceId, FanoutFleet, type FanoutReport, type FanoutTarget, type SetupReport } from './lib/fanout-fleet.js'
import { heapProfiled, machineTimes, mainThreadCpuMs, profiled } from './lib/process-cpu.js'
import { benchStoreSync, commitTotals, startBareAedes, startHttpFloor, startHub, type CommitTotals, type Target } from './lib/targets.js'
import { envInt, fmt, line, median, report, runMain, waitFor } from './lib/util.js'

const DEVICES = envInt('BENCH_FANOUT_DEVICES', 10_000)
const CONCURRENCY = envInt('BENCH_FANOUT_CONCURRENCY', 200)
const PUBLISHERS = envInt('BENCH_FANOUT_PUBLISHERS', 8)
const ROUNDS = envInt('BENCH_FANOUT_ROUNDS', 5)
// 0: the per-device rounds only (to profile them)
const FLEET_ROUNDS = envInt('BENCH_FANOUT_FLEET_ROUNDS', ROUNDS, 0)
// every device once: the first push to a device takes paths (in the broker and in mqtt.js) later ones do not
const WARMUP = Math.min(envInt('BENCH_FANOUT_WARMUP', DEVICES), DEVICES)
const CONNECT_CONCURRENCY = envInt('BENCH_CONCURRENCY', 200)
const TARGET_RATIO = 1.5
const FANOUT_TIMEOUT_MS = 120_000
const GRACE_MS = 300
const SETTLE_TIMEOUT_MS = 60_000
/** Share of the machine's cpu used by other processes during a round above which it is flagged. */
const OTHERS_WARNING = 0.1
/** The hub's API credentials: its defaults (config.ts). */
const API_AUTH = 'admin:public'
/** Diagnosis: BENCH_FANOUT_TARGETS=hub (or bare) runs one broker only, and reports no ratio. */
const TARGETS = (process.env.BENCH_FANOUT_TARGETS ?? 'bare,floor,hub').split(',').map((t) => {
  if (t !== 'hub' && t !== 'bare' && t !== 'floor') throw new Error(`BENCH_FANOUT_TARGETS must list hub, floor and/or bare, got "${t}"`)
  return t
})
/** Diagnosis: a folder for cpu profiles of the broker's process during each timed fan-out. */
const PROFILE_DIR = process.env.BENCH_FANOUT_CPU_PROFILE ?? ''
/** Diagnosis: a folder for sampling heap profiles of the broker's process during each timed fan-out. */
const HEAP_PROFILE_DIR = process.env.BENCH_FANOUT_HEAP_PROFILE ?? ''

interface RoundResult {
  target: FanoutTarget
  round: number
  timed: FanoutReport
  /** CPU (user + system) of this process — the broker's, all its threads — during the timed fan-out, ms. */
  brokerCpuMs: number
  /** Of brokerCpuMs, the main thread's (Linux only; null elsewhere). */
  brokerMainCpuMs: number | null
  /** Share of the timed fan-out this process' event loop was busy (0..1). */
  brokerElu: number
  /** Hub only: its store's transactions during the timed fan-out. */
  commits: CommitTotals | null
  /** CPU the whole machine spent meanwhile beyond the broker's and the clients' processes, ms: other load. */
  othersCpuMs: number
  /** The machine's cpu capacity over the same time (cpus × wall), ms. */
  machineMs: number
}

interface TargetResult {
  target: FanoutTarget
  setup: SetupReport
  /** CPU of this process while the devices connected and subscribed, ms. */
  setupBrokerCpuMs: number
  /** Hub only: devices without exactly one attributes subscription entity after setup. */
  entityMismatches: number | null
  warm: FanoutReport
  rounds: RoundResult[]
  /** Hub only: its warm-up fleet push (untimed) and timed fleet pushes, one call each. */
  fleetWarm: FanoutReport | null
  fleetRounds: RoundResult[]
}

/** Every device holds exactly one subscription entity for its attributes (the hub's view). */
function entityMismatches(hub: Hub): number {
  let bad = 0
  for (let i = 0; i < DEVICES; i++) if (hub.registry.subscriptions.receiving(deviceId(i), 'attributes').length !== 1) bad++
  return bad
}

function cpuMs(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since)
  return (d.user + d.system) / 1000
}

/** One broker, freshly started: connect the devices, warm up, then BENCH_FANOUT_ROUNDS timed fan-outs. */
async function runTarget(fleet: FanoutFleet, name: FanoutTarget): Promise<TargetResult> {
  const target: Target = name === 'hub' ? await startHub({ auth: 'token' }) : name === 'floor' ? await startHttpFloor() : await startBareAedes()
  try {
    const cpuSetup = process.cpuUsage()
    const setup = await fleet.setup({
      target: name,
      mqttUrl: target.url,
      httpUrl: target.httpUrl,
      apiAuth: API_AUTH,
      devices: DEVICES,
      connectConcurrency: CONNECT_CONCURRENCY,
      concurrency: CONCURRENCY,
      publishers: PUBLISHERS
    })
    const setupBrokerCpuMs = cpuMs(cpuSetup)
    if (setup.failed > 0) throw new Error(`${name}: ${setup.failed} of ${DEVICES} devices failed to connect and subscribe: ${setup.errors.join('; ')}`)
    const clients = DEVICES + (name === 'bare' ? PUBLISHERS : 0)
    if (!(await waitFor(() => target.brokerClients() === clients, SETTLE_TIMEOUT_MS))) {
      throw new Error(`${name}: Aedes counts ${target.brokerClients()} clients, ${clients} are connected`)
    }
    const mismatches = target.hub ? entityMismatches(target.hub) : null
    printSetup(name, setup, setupBrokerCpuMs, mismatches)

    const warm = await fleet.fanout({ phase: 'warm-up', count: WARMUP, timeoutMs: FANOUT_TIMEOUT_MS, graceMs: GRACE_MS })
    printWarm(name, warm)
    const result: TargetResult = { target: name, setup, setupBrokerCpuMs, entityMismatches: mismatches, warm, rounds: [], fleetWarm: null, fleetRounds: [] }
    /** One timed fan-out, with the broker's cpu, event loop and store meanwhile. */
    const timedRound = async (round: number, phase: string, fleetPush: boolean): Promise<RoundResult> => {
      if (target.hub) await target.hub.properties.settled()
      const commits0 = await commitTotals(target.hub)
      const cpu0 = process.cpuUsage()
      const main0 = mainThreadCpuMs()
      const machine0 = machineTimes()
      const elu0 = performance.eventLoopUtilization()
      const file = `fanout-${name}${fleetPush ? '-fleet' : ''}-round${round + 1}`
      const timed = await heapProfiled(HEAP_PROFILE_DIR, `${file}.heapprofile`, () =>
        profiled(PROFILE_DIR, `${file}.cpuprofile`, () => fleet.fanout({ phase, count: DEVICES, timeoutMs: FANOUT_TIMEOUT_MS, graceMs: GRACE_MS, fleet: fleetPush }))
      )
      // busy time over the fan-out's own wall time: the grace period after it is idle
      const brokerElu = Math.min(1, performance.eventLoopUtilization(elu0).active / Math.max(timed.wallMs, timed.acksMs))
      const brokerCpuMs = cpuMs(cpu0)
      const main1 = mainThreadCpuMs()
      const brokerMainCpuMs = main0 === null || main1 === null ? null : main1 - main0
      const machine1 = machineTimes()
      // the clients' cpu is counted until the last push arrived; the broker's and the machine's include the idle grace period
      const othersCpuMs = Math.max(0, machine1.busy - machine0.busy - brokerCpuMs - timed.cpuMs)
      const commits1 = await commitTotals(target.hub)
      const commits =
        commits0 && commits1
          ? { transactions: commits1.transactions - commits0.transactions, commits: commits1.commits - commits0.commits, seconds: commits1.seconds - commits0.seconds }
          : null
      const r: RoundResult = { target: name, round, timed, brokerCpuMs, brokerMainCpuMs, brokerElu, commits, othersCpuMs, machineMs: machine1.total - machine0.total }
      printRound(r, fleetPush ? 'fleet' : name)
      return r
    }
    for (let round = 0; round < ROUNDS; round++) result.rounds.push(await timedRound(round, `round-${round + 1}`, false))
    if (name === 'hub' && FLEET_ROUNDS > 0) {
      result.fleetWarm = await fleet.fanout({ phase: 'fleet-warm-up', count: DEVICES, timeoutMs: FANOUT_TIMEOUT_MS, graceMs: GRACE_MS, fleet: true })
      printWarm('fleet', result.fleetWarm, 'one fleet push')
      for (let round = 0; round < FLEET_ROUNDS; round++) result.fleetRounds.push(await timedRound(round, `fleet-round-${round + 1}`, true))
    }
    await fleet.teardown()
    return result
  } finally {
    await target.stop()
  }
}

/** Any device without exactly its own push, any failed request or publish, any stray push. */
const faults = (f: FanoutReport): number => f.missing + f.duplicates + f.wrong + f.ackFailures + f.pushedToMismatch + (f.timedOut ? 1 : 0)

const PAD = ''.padEnd(12)

function printSetup(name: FanoutTarget, s: SetupReport, brokerCpuMs: number, mismatches: number | null): void {
  const entities = mismatches === null ? '' : mismatches === 0 ? '; one subscription entity per device' : `; ${fmt(mismatches)} DEVICES WITHOUT EXACTLY ONE SUBSCRIPTION ENTITY`
  line(
    `  ${name.padEnd(5)}  setup: ${name === 'hub' ? `${fmt(DEVICES)} devices registered (one POST) in ${fmt(s.createMs)} ms, ` : ''}` +
      `${fmt(s.ok)} connected+subscribed in ${fmt(s.connectMs)} ms (broker cpu ${fmt(brokerCpuMs)} ms, clients cpu ${fmt(s.connectCpuMs)} ms)${entities}`
  )
}

function checkText(f: FanoutReport, target: FanoutTarget): string {
  if (faults(f) === 0) return `every device received exactly its own push (${fmt(f.received)}/${fmt(f.count)})`
  return (
    `MISMATCH: received ${fmt(f.received)}/${fmt(f.count)}, missing ${fmt(f.missing)}, duplicates ${fmt(f.duplicates)}, ` +
    `meant for another device/phase ${fmt(f.wrong)}, failed ${target === 'bare' ? 'publishes' : 'requests'} ${fmt(f.ackFailures)}` +
    (target !== 'bare' ? `, pushedTo not [device] ${fmt(f.pushedToMismatch)}` : '') +
    (f.timedOut ? `, TIMED OUT after ${fmt(FANOUT_TIMEOUT_MS)} ms` : '')
  )
}

function printWarm(name: FanoutTarget | 'fleet', w: FanoutReport, how = ''): void {
  line(`  ${name.padEnd(5)}  warm-up: ${fmt(w.count)} pushes${how ? ` (${how})` : ''} in ${fmt(w.wallMs)} ms (untimed); ${checkText(w, name === 'fleet' ? 'hub' : name)}`)
  for (const e of w.errors) line(`  ${PAD}  ${e}`)
}

function printRound(r: RoundResult, label: string = r.target): void {
  const t = r.timed
  line(
    `  ${label.padEnd(5)}  round ${r.round + 1}: fan-out ${fmt(t.wallMs).padStart(6)} ms  (last ${r.target === 'bare' ? 'PUBACK' : 'HTTP 200'} at ${fmt(t.acksMs)} ms)` +
      `  push latency p50/p99/max ${fmt(t.latency.p50, 1)}/${fmt(t.latency.p99, 1)}/${fmt(t.latency.max, 1)} ms` +
      `  ${r.target === 'bare' ? 'PUBACK' : 'HTTP response'} p50/p99 ${fmt(t.ackLatency.p50, 1)}/${fmt(t.ackLatency.p99, 1)} ms` +
      `  ${fmt((t.received / t.wallMs) * 1000)} pushes/s`
  )
  line(
    `  ${PAD}broker: cpu ${fmt(r.brokerCpuMs)} ms${r.brokerMainCpuMs === null ? '' : ` (main thread ${fmt(r.brokerMainCpuMs)} ms)`}, event loop ${fmt(r.brokerElu * 100)}% busy;  clients+load: cpu ${fmt(t.cpuMs)} ms, event loop ${fmt(t.elu * 100)}% busy` +
      (r.commits
        ? `;  hub store: ${fmt(r.commits.transactions)} transactions × ${fmt(r.commits.commits / Math.max(1, r.commits.transactions), 1)} writes, ` +
          `${fmt((r.commits.seconds * 1000) / Math.max(1, r.commits.transactions), 2)} ms each`
        : '')
  )
  line(`  ${PAD}check: ${checkText(t, r.target)}`)
  const others = r.othersCpuMs / Math.max(1, r.machineMs)
  if (others > OTHERS_WARNING) {
    line(`  ${PAD}WARNING: other processes used ${fmt(r.othersCpuMs)} ms of cpu (${fmt(others * 100)}% of the machine) during this round: its figures are not clean`)
  }
  for (const e of t.errors) line(`  ${PAD}  ${e}`)
}

async function main(): Promise<void> {
  line(`fanout: ${fmt(DEVICES)} connected devices, each subscribed (QoS 1) to its attributes; one push per device, ${fmt(CONCURRENCY)} in flight`)
  line(`  hub:  PATCH /v1/devices/{id}/attributes over HTTP keep-alive (token auth, store synchronous = ${benchStoreSync().toUpperCase()}${benchStoreSync() === 'full' ? '' : ': NOT the default, for diagnosis'})`)
  line(`  bare: QoS 1 PUBLISH on {id}/v1/devices/me/attributes from ${fmt(PUBLISHERS)} MQTT publisher connection(s), each push in flight until its PUBACK`)
  if (FLEET_ROUNDS > 0) line(`  fleet: the hub, after its rounds: the same pushes as ONE PATCH /v1/devices/attributes ({ all: true }), ${FLEET_ROUNDS} timed round(s); compared with bare`)
  line(`  brokers in this process, one at a time; devices and load generator in a child process; per broker: setup, a ${fmt(WARMUP)}-push warm-up, ${ROUNDS} timed round(s)`)
  const fleet = await FanoutFleet.start()
  const results: TargetResult[] = []
  try {
    for (const name of TARGETS) results.push(await runTarget(fleet, name))
  } finally {
    await fleet.stop()
  }

  if (!TARGETS.includes('hub') || !TARGETS.includes('bare')) {
    line('  (one broker only, BENCH_FANOUT_TARGETS: no comparison, nothing reported)')
    return
  }
  const rounds = (name: FanoutTarget) => results.find((r) => r.target === name)!.rounds
  const med = (name: FanoutTarget, pick: (r: RoundResult) => number) => median(rounds(name).map(pick))
  const p = (name: FanoutTarget, pick: (f: FanoutReport) => number) => med(name, (r) => pick(r.timed))
  const wall = (name: FanoutTarget) => p(name, (f) => f.wallMs)
  const ratio = wall('hub') / wall('bare')
  const spread = (name: FanoutTarget) => {
    const w = rounds(name).map((r) => r.timed.wallMs)
    return `${fmt(Math.min(...w))}–${fmt(Math.max(...w))}`
  }
  const noisy = (name: FanoutTarget) => rounds(name).filter((r) => r.othersCpuMs / Math.max(1, r.machineMs) > OTHERS_WARNING).length
  line(`  medians over ${ROUNDS} round(s):`)
  for (const name of TARGETS) {
    line(
      `    ${name.padEnd(5)}  fan-out ${fmt(wall(name)).padStart(6)} ms (rounds ${spread(name)} ms)` +
        `  push latency p50 ${fmt(p(name, (f) => f.latency.p50), 1)} ms, p99 ${fmt(p(name, (f) => f.latency.p99), 1)} ms` +
        `  broker cpu ${fmt(med(name, (r) => r.brokerCpuMs))} ms` +
        (rounds(name).every((r) => r.brokerMainCpuMs !== null) ? ` (main thread ${fmt(med(name, (r) => r.brokerMainCpuMs!))} ms)` : '') +
        `  clients+load cpu ${fmt(p(name, (f) => f.cpuMs))} ms  ${fmt((DEVICES / wall(name)) * 1000)} pushes/s` +
        (noisy(name) > 0 ? `  — ${noisy(name)} of ${ROUNDS} round(s) ran beside other load` : '')
    )
  }
  line(
    `    hub/bare: fan-out ${fmt(ratio, 2)} (p50 ${fmt(p('hub', (f) => f.latency.p50) / p('bare', (f) => f.latency.p50), 2)}, p99 ${fmt(p('hub', (f) => f.latency.p99) / p('bare', (f) => f.latency.p99), 2)},` +
      ` broker cpu ${fmt(med('hub', (r) => r.brokerCpuMs) / med('bare', (r) => r.brokerCpuMs), 2)})  target ≤ ${TARGET_RATIO}: ${ratio <= TARGET_RATIO ? 'met' : 'MISSED'}`
  )
  const hubResult = results.find((r) => r.target === 'hub')!
  const fleetRounds = hubResult.fleetRounds
  const fleetWall = fleetRounds.length > 0 ? median(fleetRounds.map((r) => r.timed.wallMs)) : null
  const fleetRatio = fleetWall === null ? null : fleetWall / wall('bare')
  if (fleetWall !== null && fleetRatio !== null) {
    const fw = fleetRounds.map((r) => r.timed.wallMs)
    const fmed = (pick: (r: RoundResult) => number) => median(fleetRounds.map(pick))
    line(
      `    fleet  fan-out ${fmt(fleetWall).padStart(6)} ms (rounds ${fmt(Math.min(...fw))}–${fmt(Math.max(...fw))} ms)` +
        `  push latency p50 ${fmt(fmed((r) => r.timed.latency.p50), 1)} ms, p99 ${fmt(fmed((r) => r.timed.latency.p99), 1)} ms` +
        `  broker cpu ${fmt(fmed((r) => r.brokerCpuMs))} ms` +
        (fleetRounds.every((r) => r.brokerMainCpuMs !== null) ? ` (main thread ${fmt(fmed((r) => r.brokerMainCpuMs!))} ms)` : '') +
        `  clients+load cpu ${fmt(fmed((r) => r.timed.cpuMs))} ms  ${fmt((DEVICES / fleetWall) * 1000)} pushes/s  (one PATCH /v1/devices/attributes; answered after ${fmt(fmed((r) => r.timed.acksMs))} ms)`
    )
    line(
      `    fleet/bare: fan-out ${fmt(fleetRatio, 2)} (broker cpu ${fmt(fmed((r) => r.brokerCpuMs) / med('bare', (r) => r.brokerCpuMs), 2)})  target ≤ ${TARGET_RATIO}: ${fleetRatio <= TARGET_RATIO ? 'met' : 'MISSED'}`
    )
  }
  const floor = TARGETS.includes('floor') ? wall('floor') : null
  if (floor !== null) {
    line(
      `    floor/bare: fan-out ${fmt(floor / wall('bare'), 2)} — the least any hub making one HTTP request per push reaches on this machine` +
        ` (bare Aedes behind node's HTTP server, no framework, auth or store); hub/floor ${fmt(wall('hub') / floor, 2)}`
    )
  }
  const runs = results.flatMap((r) => [r.warm, ...r.rounds.map((x) => x.timed), ...(r.fleetWarm ? [r.fleetWarm] : []), ...r.fleetRounds.map((x) => x.timed)])
  const faultTotal = runs.reduce((n, f) => n + faults(f), 0)
  const entityFaults = results.reduce((n, r) => n + (r.entityMismatches ?? 0), 0)
  const exact = faultTotal === 0 && entityFaults === 0
  line(
    `  delivery check: ${exact ? `every device received exactly its own push in all ${runs.length} fan-outs (warm-ups included)` : `MISMATCH: ${fmt(faultTotal)} faulty pushes in ${runs.filter((f) => faults(f) > 0).length} of ${runs.length} fan-outs, ${fmt(entityFaults)} devices without their subscription entity`}`
  )

  const latency = (name: FanoutTarget) => `p50 ${fmt(p(name, (f) => f.latency.p50), 1)} / p99 ${fmt(p(name, (f) => f.latency.p99), 1)} ms`
  await report('fanout', [
    {
      bench: 'fanout',
      metric: `${fmt(DEVICES)} devices: API change → push each`,
      value: `${fmt(wall('hub'))} ms`,
      baseline: `${fmt(wall('bare'))} ms (bare Aedes)`,
      ratio: fmt(ratio, 2),
      target: `hub/bare ≤ ${TARGET_RATIO}`,
      met: ratio <= TARGET_RATIO
    },
    ...(fleetWall === null || fleetRatio === null
      ? []
      : [
          {
            bench: 'fanout',
            metric: `${fmt(DEVICES)} devices: one fleet push (PATCH /v1/devices/attributes)`,
            value: `${fmt(fleetWall)} ms`,
            baseline: `${fmt(wall('bare'))} ms (bare Aedes)`,
            ratio: fmt(fleetRatio, 2),
            target: `fleet/bare ≤ ${TARGET_RATIO}`,
            met: fleetRatio <= TARGET_RATIO
          }
        ]),
    ...(floor === null
      ? []
      : [
          {
            bench: 'fanout',
            metric: 'floor: one HTTP request per push, nothing else',
            value: `${fmt(floor)} ms`,
            baseline: `${fmt(wall('bare'))} ms (bare Aedes)`,
            ratio: fmt(floor / wall('bare'), 2),
            target: '',
            met: null
          }
        ]),
    {
      bench: 'fanout',
      metric: 'per-push latency (send → device)',
      value: latency('hub'),
      baseline: `${latency('bare')} (bare Aedes)`,
      ratio: `${fmt(p('hub', (f) => f.latency.p99) / p('bare', (f) => f.latency.p99), 2)} (p99)`,
      target: '',
      met: null
    },
    {
      bench: 'fanout',
      metric: 'each device got exactly its own push',
      value: exact ? 'exact' : `${fmt(faultTotal + entityFaults)} faults`,
      baseline: '',
      ratio: '',
      target: 'exact',
      met: exact
    }
  ])
}

runMain(main)
