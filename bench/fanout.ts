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
 *         any hub making one HTTP request per push pays on this machine (issue 16: hub/floor ≤ 1.10)
 *   durable floor: the floor again, storing each request's change as one durable row before it
 *         publishes it (group commit on a writer thread with the hub's store settings, nothing
 *         else): what any hub that stores a change before pushing it pays. The hub must (a push
 *         is a change of the device's entity), so when durable floor/floor is above 1.10 the
 *         hub/floor target is out of reach on this machine in that run
 *
 * The same payloads (the PATCH body is what the hub publishes), the same device ids, topics,
 * QoS and concurrency. Each broker runs in a process of its own with its own devices and load
 * generator in a child process of it (bench/lib/fanout-broker.ts, bench/lib/fanout-fleet.ts),
 * freshly started (the hub with a fresh data dir and token auth). All of them are set up first
 * (devices connected and subscribed, untimed), then each gets one untimed warm-up fan-out (every
 * device once by default; it also opens the load generator's keep-alive sockets), then the timed
 * fan-outs alternate between them in cycles: floor, durable floor, hub, fleet, bare, then bare,
 * fleet, hub, durable floor, floor, and so on, BENCH_FANOUT_ROUNDS cycles. Each figure is the median over its rounds; each
 * ratio the median of the cycles' ratios. This machine's speed drifts by a third over minutes,
 * so brokers measured one after the other compared minutes of different speeds; a cycle's rounds
 * are seconds apart. The order puts the issue's two comparisons (hub/floor, fleet/bare) next to
 * each other, and is reversed every other cycle so that a drift within a cycle favours each side
 * of a ratio in half the cycles. What the alternation costs: while one broker runs, the others
 * sit idle beside it with their devices connected (keepalives only, one per device per 300 s),
 * and their processes' memory (three sets of devices and brokers) stays resident.
 *
 * Checked in every fan-out (warm-ups included): each device received exactly one push, its own
 * (device id, sequence number, phase and topic in the payload), every request was answered 200
 * with `pushedTo` = [the device's session] (every publish acknowledged, for bare Aedes); for the
 * hub, after setup, each device holds exactly one attributes subscription entity.
 *
 *   BENCH_FANOUT_DEVICES      connected devices per broker, one push each per fan-out (default 10,000)
 *   BENCH_FANOUT_CONCURRENCY  pushes in flight (HTTP requests / QoS 1 publishes)     (default 200)
 *   BENCH_FANOUT_PUBLISHERS   bare Aedes: MQTT publisher connections carrying them   (default 8)
 *   BENCH_FANOUT_ROUNDS       cycles of timed fan-outs; medians are reported         (default 5)
 *   BENCH_FANOUT_WARMUP       devices of the untimed warm-up fan-out                 (default all)
 *   BENCH_FANOUT_ATTRIBUTE_KEYS attributes a push carries beside its own five, ~60 bytes each (default 0)
 *   BENCH_FANOUT_FLEET_ROUNDS hub: timed fleet pushes, one in each of the first cycles, 0: none (default BENCH_FANOUT_ROUNDS)
 *   BENCH_CONCURRENCY         devices connecting at a time during setup              (default 200)
 *   BENCH_STORE_SYNC          the hub's store sync, full or normal                   (default full)
 *
 * Diagnosis only: BENCH_FANOUT_TARGETS=hub (or bare, floor, or two of them) runs those only;
 * BENCH_FANOUT_CPU_PROFILE=<dir> writes a V8 cpu profile of the broker's process (main thread)
 * for each timed fan-out (the profiler costs ~15%: do not quote those runs' times);
 * BENCH_FANOUT_HEAP_PROFILE=<dir> a sampling heap profile of it (what was allocated, collected or not).
 */
import { FanoutBroker, type BrokerSetupReport, type MeasuredFanout } from './lib/fanout-broker.js'
import { ATTRIBUTE_KEYS, type FanoutReport, type FanoutTarget } from './lib/fanout-fleet.js'
import { benchStoreSync } from './lib/targets.js'
import { envInt, fmt, line, median, report, runMain } from './lib/util.js'

const DEVICES = envInt('BENCH_FANOUT_DEVICES', 10_000)
const CONCURRENCY = envInt('BENCH_FANOUT_CONCURRENCY', 200)
const PUBLISHERS = envInt('BENCH_FANOUT_PUBLISHERS', 8)
const ROUNDS = envInt('BENCH_FANOUT_ROUNDS', 5)
// 0: the per-device rounds only (to profile them)
const FLEET_ROUNDS = envInt('BENCH_FANOUT_FLEET_ROUNDS', ROUNDS, 0)
// every device once: the first push to a device takes paths (in the broker and in mqtt.js) later ones do not
const WARMUP = Math.min(envInt('BENCH_FANOUT_WARMUP', DEVICES), DEVICES)
const CONNECT_CONCURRENCY = envInt('BENCH_CONCURRENCY', 200)
const FANOUT_TIMEOUT_MS = 120_000
const GRACE_MS = 300
/** Share of the machine's cpu used by other processes during a round above which it is flagged. */
const OTHERS_WARNING = 0.1
/** The hub's API credentials: its defaults (config.ts). */
const API_AUTH = 'admin:public'
/** Diagnosis: BENCH_FANOUT_TARGETS=hub (or bare) runs one broker only; ratios need both of theirs. */
const TARGETS = (process.env.BENCH_FANOUT_TARGETS ?? 'bare,floor,durable,hub').split(',').map((t) => {
  if (t !== 'hub' && t !== 'bare' && t !== 'floor' && t !== 'durable') throw new Error(`BENCH_FANOUT_TARGETS must list hub, floor, durable and/or bare, got "${t}"`)
  return t
})
/** Diagnosis: a folder for cpu profiles of the broker's process during each timed fan-out. */
const PROFILE_DIR = process.env.BENCH_FANOUT_CPU_PROFILE ?? ''
/** Diagnosis: a folder for sampling heap profiles of the broker's process during each timed fan-out. */
const HEAP_PROFILE_DIR = process.env.BENCH_FANOUT_HEAP_PROFILE ?? ''

/** A timed fan-out's kind: a broker's per-device pushes, or the hub's fleet push. */
type Step = FanoutTarget | 'fleet'

/** A cycle's order (reversed every other cycle): the issue's comparisons, hub/floor and fleet/bare, side by side. */
const CYCLE = ['floor', 'durable', 'hub', 'fleet', 'bare'] as const satisfies readonly Step[]

/** Issue 16: the hub's per-device pushes against their floor. */
const HUB_FLOOR_TARGET = 1.1

/** The ratios reported, each the median of the cycles' ratios; a target where the issues set one. */
const RATIOS: { of: Step; to: Step; metric: string; target: number | null }[] = [
  { of: 'hub', to: 'bare', metric: `${fmt(DEVICES)} devices: API change → push each`, target: 1.5 },
  { of: 'hub', to: 'floor', metric: `${fmt(DEVICES)} devices: API change → push each, against its floor`, target: HUB_FLOOR_TARGET },
  { of: 'fleet', to: 'bare', metric: `${fmt(DEVICES)} devices: one fleet push (PATCH /v1/devices/attributes)`, target: 1.5 },
  { of: 'floor', to: 'bare', metric: 'floor: one HTTP request per push, nothing else', target: null },
  { of: 'durable', to: 'floor', metric: 'durable floor/floor: the lowest hub/floor can be here', target: null },
  { of: 'hub', to: 'durable', metric: 'hub/durable floor (diagnosis)', target: null }
]

interface RoundResult extends MeasuredFanout {
  step: Step
  cycle: number
}

/** Any device without exactly its own push, any failed request or publish, any stray push. */
const faults = (f: FanoutReport): number => f.missing + f.duplicates + f.wrong + f.ackFailures + f.pushedToMismatch + (f.timedOut ? 1 : 0)

/** The broker a step's pushes go to. */
const brokerOf = (step: Step): FanoutTarget => (step === 'fleet' ? 'hub' : step)

const PAD = ''.padEnd(14)

function printSetup(name: FanoutTarget, s: BrokerSetupReport): void {
  const entities = s.entityMismatches === null ? '' : s.entityMismatches === 0 ? '; one subscription entity per device' : `; ${fmt(s.entityMismatches)} DEVICES WITHOUT EXACTLY ONE SUBSCRIPTION ENTITY`
  line(
    `  ${name.padEnd(7)}  setup: ${name === 'hub' ? `${fmt(DEVICES)} devices registered (one POST) in ${fmt(s.createMs)} ms, ` : ''}` +
      `${fmt(s.ok)} connected+subscribed in ${fmt(s.connectMs)} ms (broker cpu ${fmt(s.brokerCpuMs)} ms, clients cpu ${fmt(s.connectCpuMs)} ms)${entities}`
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

function printWarm(step: Step, w: FanoutReport): void {
  line(`  ${step.padEnd(7)}  warm-up: ${fmt(w.count)} pushes${step === 'fleet' ? ' (one fleet push)' : ''} in ${fmt(w.wallMs)} ms (untimed); ${checkText(w, brokerOf(step))}`)
  for (const e of w.errors) line(`  ${PAD}  ${e}`)
}

function printRound(r: RoundResult): void {
  const t = r.fanout
  const others = r.othersCpuMs / Math.max(1, r.machineMs)
  line(
    `  ${r.step.padEnd(7)}  round ${r.cycle + 1}: fan-out ${fmt(t.wallMs).padStart(6)} ms  (last ${r.step === 'bare' ? 'PUBACK' : 'HTTP 200'} at ${fmt(t.acksMs)} ms)` +
      `  push latency p50/p99/max ${fmt(t.latency.p50, 1)}/${fmt(t.latency.p99, 1)}/${fmt(t.latency.max, 1)} ms` +
      `  ${r.step === 'bare' ? 'PUBACK' : 'HTTP response'} p50/p99 ${fmt(t.ackLatency.p50, 1)}/${fmt(t.ackLatency.p99, 1)} ms` +
      `  ${fmt((t.received / t.wallMs) * 1000)} pushes/s`
  )
  line(
    `  ${PAD}broker: cpu ${fmt(r.brokerCpuMs)} ms${r.brokerMainCpuMs === null ? '' : ` (main thread ${fmt(r.brokerMainCpuMs)} ms)`}, event loop ${fmt(r.brokerElu * 100)}% busy;  clients+load: cpu ${fmt(t.cpuMs)} ms, event loop ${fmt(t.elu * 100)}% busy` +
      (r.commits
        ? `;  hub store: ${fmt(r.commits.transactions)} transactions × ${fmt(r.commits.commits / Math.max(1, r.commits.transactions), 1)} writes, ` +
          `${fmt((r.commits.seconds * 1000) / Math.max(1, r.commits.transactions), 2)} ms each`
        : '')
  )
  line(
    `  ${PAD}check: ${checkText(t, brokerOf(r.step))};  machine: other processes used ${fmt(others * 100)}% of it` +
      (others > OTHERS_WARNING ? ' — WARNING: this round\'s figures are not clean' : '')
  )
  for (const e of t.errors) line(`  ${PAD}  ${e}`)
}

async function main(): Promise<void> {
  const fleetPushes = TARGETS.includes('hub') && FLEET_ROUNDS > 0
  const steps = CYCLE.filter((s) => (s === 'fleet' ? fleetPushes : TARGETS.includes(s)))
  /** Whether `step` has a timed round in cycle `c`; bare's rounds are the fleet pushes' baseline too. */
  const runsIn = (step: Step, c: number) => (step === 'fleet' ? c < FLEET_ROUNDS : c < ROUNDS || (step === 'bare' && fleetPushes && c < FLEET_ROUNDS))
  const cycles = Math.max(ROUNDS, fleetPushes ? FLEET_ROUNDS : 0)

  line(`fanout: ${fmt(DEVICES)} connected devices per broker, each subscribed (QoS 1) to its attributes; one push per device, ${fmt(CONCURRENCY)} in flight`)
  if (ATTRIBUTE_KEYS > 0) line(`  each push carries ${fmt(ATTRIBUTE_KEYS)} attributes beside its own five (BENCH_FANOUT_ATTRIBUTE_KEYS: not the pushes the targets were set for)`)
  line(`  hub:  PATCH /v1/devices/{id}/attributes over HTTP keep-alive (token auth, store synchronous = ${benchStoreSync().toUpperCase()}${benchStoreSync() === 'full' ? '' : ': NOT the default, for diagnosis'})`)
  line(`  bare: QoS 1 PUBLISH on {id}/v1/devices/me/attributes from ${fmt(PUBLISHERS)} MQTT publisher connection(s), each push in flight until its PUBACK`)
  if (fleetPushes) line(`  fleet: the hub: the same pushes as ONE PATCH /v1/devices/attributes ({ all: true }), ${FLEET_ROUNDS} timed round(s); compared with bare`)
  line(
    `  brokers ${TARGETS.join(', ')}: each in its own process with its own devices and load generator, all up at once; per broker: setup, a ${fmt(WARMUP)}-push warm-up;` +
      ` then ${cycles} cycle(s) of timed rounds: ${steps.join(', ')}, reversed every other cycle`
  )
  const brokers = new Map<FanoutTarget, FanoutBroker>()
  const warms: FanoutReport[] = []
  const results: RoundResult[] = []
  let entityFaults = 0
  try {
    for (const name of TARGETS) {
      const broker = await FanoutBroker.start(name)
      brokers.set(name, broker)
      const setup = await broker.setup({ apiAuth: API_AUTH, devices: DEVICES, connectConcurrency: CONNECT_CONCURRENCY, concurrency: CONCURRENCY, publishers: PUBLISHERS })
      printSetup(name, setup)
      entityFaults += setup.entityMismatches ?? 0
    }
    const fanout = (step: Step, phase: string, count: number, profile?: string) =>
      brokers.get(brokerOf(step))!.fanout(
        { phase, count, timeoutMs: FANOUT_TIMEOUT_MS, graceMs: GRACE_MS, fleet: step === 'fleet' },
        profile === undefined ? undefined : { name: profile, cpuDir: PROFILE_DIR, heapDir: HEAP_PROFILE_DIR }
      )
    for (const step of steps) {
      // a fleet push changes every device: its warm-up pushes to all of them
      const warm = (await fanout(step, `${step}-warm-up`, step === 'fleet' ? DEVICES : WARMUP)).fanout
      printWarm(step, warm)
      warms.push(warm)
    }
    for (let c = 0; c < cycles; c++) {
      const order = c % 2 === 0 ? steps : [...steps].reverse()
      const cycle: RoundResult[] = []
      for (const step of order.filter((s) => runsIn(s, c))) {
        const r: RoundResult = { step, cycle: c, ...(await fanout(step, `${step}-round-${c + 1}`, DEVICES, `fanout-${step}-round${c + 1}`)) }
        printRound(r)
        cycle.push(r)
      }
      results.push(...cycle)
      const wallOf = (step: Step) => cycle.find((r) => r.step === step)?.fanout.wallMs
      const ratios = RATIOS.filter((x) => wallOf(x.of) !== undefined && wallOf(x.to) !== undefined).map((x) => `${x.of}/${x.to} ${fmt(wallOf(x.of)! / wallOf(x.to)!, 2)}`)
      if (ratios.length > 0) line(`  cycle ${c + 1}: fan-out ${ratios.join(', ')}`)
    }
  } finally {
    await Promise.all([...brokers.values()].map((b) => b.stop()))
  }

  const rounds = (step: Step) => results.filter((r) => r.step === step)
  const med = (step: Step, pick: (r: RoundResult) => number) => median(rounds(step).map(pick))
  const wall = (step: Step) => med(step, (r) => r.fanout.wallMs)
  const noisy = (step: Step) => rounds(step).filter((r) => r.othersCpuMs / Math.max(1, r.machineMs) > OTHERS_WARNING).length
  line(`  medians over each one's rounds:`)
  for (const step of steps) {
    const w = rounds(step).map((r) => r.fanout.wallMs)
    line(
      `    ${step.padEnd(7)}  fan-out ${fmt(wall(step)).padStart(6)} ms (${w.length} rounds, ${fmt(Math.min(...w))}–${fmt(Math.max(...w))} ms)` +
        `  push latency p50 ${fmt(med(step, (r) => r.fanout.latency.p50), 1)} ms, p99 ${fmt(med(step, (r) => r.fanout.latency.p99), 1)} ms` +
        `  broker cpu ${fmt(med(step, (r) => r.brokerCpuMs))} ms` +
        (rounds(step).every((r) => r.brokerMainCpuMs !== null) ? ` (main thread ${fmt(med(step, (r) => r.brokerMainCpuMs!))} ms)` : '') +
        `  clients+load cpu ${fmt(med(step, (r) => r.fanout.cpuMs))} ms  ${fmt((DEVICES / wall(step)) * 1000)} pushes/s` +
        (step === 'fleet' ? `  (one PATCH /v1/devices/attributes; answered after ${fmt(med(step, (r) => r.fanout.acksMs))} ms)` : '') +
        (noisy(step) > 0 ? `  — ${noisy(step)} of ${w.length} round(s) ran beside other load` : '')
    )
  }

  /** A ratio's value in each cycle that measured both its sides. */
  const perCycle = (of: Step, to: Step, pick: (r: RoundResult) => number): number[] => {
    const values: number[] = []
    for (let c = 0; c < cycles; c++) {
      const a = results.find((r) => r.step === of && r.cycle === c)
      const b = results.find((r) => r.step === to && r.cycle === c)
      if (a && b) values.push(pick(a) / pick(b))
    }
    return values
  }
  const measured = RATIOS.map((x) => ({ ...x, fanouts: perCycle(x.of, x.to, (r) => r.fanout.wallMs), cpus: perCycle(x.of, x.to, (r) => r.brokerCpuMs) })).filter(
    (x) => x.fanouts.length > 0
  )
  for (const x of measured) {
    const ratio = median(x.fanouts)
    line(
      `    ${x.of}/${x.to}: fan-out ${fmt(ratio, 2)}, the median of ${x.fanouts.length} cycles' ratios (${x.fanouts.map((v) => fmt(v, 2)).join(', ')}); broker cpu ${fmt(median(x.cpus), 2)}` +
        (x.target === null
          ? x.of === 'floor'
            ? ' — the least any hub making one HTTP request per push reaches on this machine (bare Aedes behind node\'s HTTP server, no framework, auth or store)'
            : x.of === 'durable'
              ? ratio > HUB_FLOOR_TARGET
                ? ` — above ${fmt(HUB_FLOOR_TARGET, 2)}: the hub/floor target is out of reach on this machine in this run for a hub that stores each change before pushing it`
                : ' — each push stored as one durable row first, nothing else: the least a hub that stores each change before pushing it reaches'
              : ''
          : `  target ≤ ${fmt(x.target, 2)}: ${ratio <= x.target ? 'met' : 'MISSED'} (in ${x.fanouts.filter((v) => v <= x.target!).length} of ${x.fanouts.length} cycles)`)
    )
  }
  if (measured.length === 0) line('  (BENCH_FANOUT_TARGETS: no two brokers to compare, nothing reported)')
  const mainUs = (step: Step): number | null =>
    steps.includes(step) && rounds(step).every((r) => r.brokerMainCpuMs !== null) ? (med(step, (r) => r.brokerMainCpuMs!) * 1000) / DEVICES : null
  const floorMainUs = mainUs('floor')
  const hubMainUs = mainUs('hub')
  if (floorMainUs !== null && hubMainUs !== null) {
    // a fan-out's time is about its broker's main-thread cpu per push ÷ the share of the time its
    // event loop was busy (printed per round), so hub/floor ≤ t asks the hub's main thread for at
    // most t × the floor's cpu per push × (the hub's busy share ÷ the floor's)
    const durableMainUs = mainUs('durable')
    const floorBusy = med('floor', (r) => r.brokerElu)
    const hubBusy = med('hub', (r) => r.brokerElu)
    const left = HUB_FLOOR_TARGET * floorMainUs * (hubBusy / Math.max(0.01, floorBusy)) - floorMainUs
    line(
      `    what hub/floor ≤ ${fmt(HUB_FLOOR_TARGET, 2)} leaves the hub, estimated: ${left > 0 ? `≤ ${fmt(left, 1)} µs` : 'nothing'} of main-thread cpu per push beyond the floor's ${fmt(floorMainUs, 1)} µs` +
        ` — ${fmt(HUB_FLOOR_TARGET, 2)} × the floor's × (the hub's event loop busy ÷ the floor's: ${fmt(hubBusy * 100)}% ÷ ${fmt(floorBusy * 100)}%) − the floor's, since a fan-out's time follows its broker's main-thread cpu per push over its busy share;` +
        (durableMainUs === null ? '' : ` the durable floor's spends ${fmt(durableMainUs - floorMainUs, 1)} µs beyond it,`) +
        ` the hub's ${fmt(hubMainUs - floorMainUs, 1)} µs (medians)`
    )
  }
  const runs = [...warms, ...results.map((r) => r.fanout)]
  const faultTotal = runs.reduce((n, f) => n + faults(f), 0)
  const exact = faultTotal === 0 && entityFaults === 0
  line(
    `  delivery check: ${exact ? `every device received exactly its own push in all ${runs.length} fan-outs (warm-ups included)` : `MISMATCH: ${fmt(faultTotal)} faulty pushes in ${runs.filter((f) => faults(f) > 0).length} of ${runs.length} fan-outs, ${fmt(entityFaults)} devices without their subscription entity`}`
  )
  if (measured.length === 0) return

  const latency = (step: Step) => `p50 ${fmt(med(step, (r) => r.fanout.latency.p50), 1)} / p99 ${fmt(med(step, (r) => r.fanout.latency.p99), 1)} ms`
  const hubAndBare = steps.includes('hub') && steps.includes('bare')
  await report('fanout', [
    ...measured.map((x) => ({
      bench: 'fanout',
      metric: x.metric,
      value: `${fmt(wall(x.of))} ms`,
      baseline: `${fmt(wall(x.to))} ms (${x.to === 'bare' ? 'bare Aedes' : x.to === 'durable' ? 'durable floor' : x.to})`,
      ratio: fmt(median(x.fanouts), 2),
      target:
        x.target !== null
          ? `${x.of}/${x.to} ≤ ${fmt(x.target, 2)}`
          : x.of === 'durable' && median(x.fanouts) > HUB_FLOOR_TARGET
            ? `> ${fmt(HUB_FLOOR_TARGET, 2)}: hub/floor out of reach`
            : '',
      met: x.target === null ? null : median(x.fanouts) <= x.target
    })),
    ...(hubAndBare
      ? [
          {
            bench: 'fanout',
            metric: 'per-push latency (send → device)',
            value: latency('hub'),
            baseline: `${latency('bare')} (bare Aedes)`,
            ratio: `${fmt(median(perCycle('hub', 'bare', (r) => r.fanout.latency.p99)), 2)} (p99)`,
            target: '',
            met: null
          }
        ]
      : []),
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
