/**
 * One broker of the fan-out benchmark (bench/fanout.ts) — the hub, bare Aedes, the floor or its durable floor — in a
 * process of its own, with its devices and load generator in a child process of it
 * (fanout-fleet.ts). bench/fanout.ts keeps all its brokers up at once and alternates their timed
 * fan-outs; in one process they would share one heap (a round paying for the garbage another
 * broker's round left) and one open-files limit (four brokers' 10,000 device sockets are more
 * than this machine's 20,000). Here each broker's process is as it was when they ran one after
 * the other, only idle between its rounds.
 *
 * Protocol over IPC: the child says `ready`; then
 *   - `setup`: starts the broker (the hub with a fresh data dir and token auth), has the fleet
 *     connect and subscribe the devices, checks that Aedes counts them all and, for the hub, that
 *     each device holds exactly one attributes subscription entity; → `setup-done`;
 *   - `fanout`: one fan-out (fanout-fleet.ts' `fanout`), measured: the broker process' cpu (and
 *     its main thread's), its event loop, the hub store's transactions, the cpu other processes
 *     used meanwhile; with `profile`, a cpu and/or heap profile of this process named after it;
 *     → `fanout-done`;
 *   - `exit`: ends the devices, stops the broker and the fleet, exits.
 */
import { performance } from 'node:perf_hooks'
import type { Hub } from '../../src/hub.js'
import { ChildLink, cpuMsSince, forkedToRun } from './child-fleet.js'
import { deviceId, FanoutFleet, type FanoutCommand, type FanoutReport, type FanoutTarget, type SetupCommand, type SetupReport } from './fanout-fleet.js'
import { heapProfiled, machineTimes, mainThreadCpuMs, profiled } from './process-cpu.js'
import { commitTotals, startBareAedes, startHttpFloor, startHub, type CommitTotals, type Target } from './targets.js'
import { waitFor } from './util.js'

const SETTLE_TIMEOUT_MS = 60_000

export interface BrokerSetupCommand {
  cmd: 'setup'
  target: FanoutTarget
  /** What the fleet is asked to set up (fanout-fleet.ts), less the broker's addresses. */
  fleet: Omit<SetupCommand, 'cmd' | 'target' | 'mqttUrl' | 'httpUrl'>
}

export interface BrokerFanoutCommand {
  cmd: 'fanout'
  fanout: Omit<FanoutCommand, 'cmd'>
  /** Set: cpu and heap profiles of this process during the fan-out, `<cpuDir>/<profile>.cpuprofile`, `<heapDir>/<profile>.heapprofile`. */
  profile?: { name: string; cpuDir: string; heapDir: string }
}

export type BrokerCommand = BrokerSetupCommand | BrokerFanoutCommand | { cmd: 'exit' }

export interface BrokerSetupReport extends SetupReport {
  /** CPU of the broker's process while the devices connected and subscribed, ms. */
  brokerCpuMs: number
  /** Hub only: devices without exactly one attributes subscription entity after setup. */
  entityMismatches: number | null
}

export interface MeasuredFanout {
  fanout: FanoutReport
  /** CPU (user + system) of the broker's process — all its threads — during the fan-out, ms. */
  brokerCpuMs: number
  /** Of brokerCpuMs, the main thread's (Linux only; null elsewhere). */
  brokerMainCpuMs: number | null
  /** Share of the fan-out the broker's event loop was busy (0..1). */
  brokerElu: number
  /** Hub only: its store's transactions during the fan-out. */
  commits: CommitTotals | null
  /** CPU the whole machine spent meanwhile beyond the broker's and its clients' processes, ms: other load (the idle brokers' too). */
  othersCpuMs: number
  /** The machine's cpu capacity over the same time (cpus × wall), ms. */
  machineMs: number
}

export type BrokerReply = { type: 'ready' } | ({ type: 'setup-done' } & BrokerSetupReport) | ({ type: 'fanout-done' } & MeasuredFanout)

/** Every device holds exactly one subscription entity for its attributes (the hub's view). */
function entityMismatches(hub: Hub, devices: number): number {
  let bad = 0
  for (let i = 0; i < devices; i++) if (hub.registry.subscriptions.receiving(deviceId(i), 'attributes').length !== 1) bad++
  return bad
}

function child(): void {
  const send = (reply: BrokerReply) => process.send!(reply)
  let target: Target | undefined
  let fleet: FanoutFleet | undefined

  const setup = async (c: BrokerSetupCommand) => {
    target =
      c.target === 'hub'
        ? await startHub({ auth: 'token' })
        : c.target === 'bare'
          ? await startBareAedes()
          : await startHttpFloor({ durable: c.target === 'durable' })
    fleet = await FanoutFleet.start()
    const cpu = process.cpuUsage()
    const report = await fleet.setup({ ...c.fleet, target: c.target, mqttUrl: target.url, httpUrl: target.httpUrl })
    const brokerCpuMs = cpuMsSince(cpu)
    if (report.failed > 0) throw new Error(`${c.target}: ${report.failed} of ${c.fleet.devices} devices failed to connect and subscribe: ${report.errors.join('; ')}`)
    const clients = c.fleet.devices + (c.target === 'bare' ? c.fleet.publishers : 0)
    const t = target
    if (!(await waitFor(() => t.brokerClients() === clients, SETTLE_TIMEOUT_MS))) {
      throw new Error(`${c.target}: Aedes counts ${t.brokerClients()} clients, ${clients} are connected`)
    }
    send({ type: 'setup-done', ...report, brokerCpuMs, entityMismatches: t.hub ? entityMismatches(t.hub, c.fleet.devices) : null })
  }

  const fanout = async (c: BrokerFanoutCommand) => {
    const hub = target!.hub
    if (hub) await hub.properties.settled()
    const commits0 = await commitTotals(hub)
    const cpu0 = process.cpuUsage()
    const main0 = mainThreadCpuMs()
    const machine0 = machineTimes()
    const elu0 = performance.eventLoopUtilization()
    const p = c.profile ?? { name: '', cpuDir: '', heapDir: '' }
    const report = await heapProfiled(p.heapDir, `${p.name}.heapprofile`, () => profiled(p.cpuDir, `${p.name}.cpuprofile`, () => fleet!.fanout(c.fanout)))
    // busy time over the fan-out's own wall time: the grace period after it is idle
    const brokerElu = Math.min(1, performance.eventLoopUtilization(elu0).active / Math.max(report.wallMs, report.acksMs))
    const brokerCpuMs = cpuMsSince(cpu0)
    const main1 = mainThreadCpuMs()
    const machine1 = machineTimes()
    const commits1 = await commitTotals(hub)
    send({
      type: 'fanout-done',
      fanout: report,
      brokerCpuMs,
      brokerMainCpuMs: main0 === null || main1 === null ? null : main1 - main0,
      brokerElu,
      commits:
        commits0 && commits1
          ? { transactions: commits1.transactions - commits0.transactions, commits: commits1.commits - commits0.commits, seconds: commits1.seconds - commits0.seconds }
          : null,
      // the clients' cpu is counted until the last push arrived; the broker's and the machine's include the idle grace period
      othersCpuMs: Math.max(0, machine1.busy - machine0.busy - brokerCpuMs - report.cpuMs),
      machineMs: machine1.total - machine0.total
    })
  }

  const exit = async () => {
    if (fleet) {
      await fleet.teardown()
      await fleet.stop()
    }
    await target?.stop()
    process.exit(0)
  }

  const fail = (error: unknown) => {
    process.stderr.write(`fan-out broker: ${(error as Error).stack ?? String(error)}\n`)
    process.exit(1)
  }
  process.on('message', (message: BrokerCommand) => {
    if (message.cmd === 'setup') setup(message).catch(fail)
    else if (message.cmd === 'fanout') fanout(message).catch(fail)
    else exit().catch(fail)
  })
  process.on('disconnect', () => process.exit(0))
  send({ type: 'ready' })
}

/** The parent's handle on one broker's process. */
export class FanoutBroker {
  private constructor(
    private readonly link: ChildLink<BrokerCommand, BrokerReply>,
    readonly target: FanoutTarget
  ) {}

  static async start(target: FanoutTarget): Promise<FanoutBroker> {
    return new FanoutBroker(await ChildLink.start<BrokerCommand, BrokerReply>('lib/fanout-broker.ts', `fan-out broker (${target})`), target)
  }

  setup(fleet: BrokerSetupCommand['fleet']): Promise<BrokerSetupReport> {
    return this.link.request({ cmd: 'setup', target: this.target, fleet }, 'setup-done')
  }

  fanout(fanout: BrokerFanoutCommand['fanout'], profile?: BrokerFanoutCommand['profile']): Promise<MeasuredFanout> {
    return this.link.request({ cmd: 'fanout', fanout, ...(profile ? { profile } : {}) }, 'fanout-done')
  }

  stop(): Promise<void> {
    return this.link.stop()
  }
}

if (forkedToRun(import.meta.url)) child()
