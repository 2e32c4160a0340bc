/**
 * Noisy neighbour: while one hostile device runs an abuse, do the other devices notice?
 *
 * The hub (embedded broker, token auth, SQLite, as `npm start` runs it) serves
 * BENCH_NOISY_DEVICES well-behaved devices, each subscribed (QoS 1) to its attributes. A probe
 * measures what they feel: BENCH_NOISY_PUSHES attribute changes through the API, each timed
 * from the request until its device has the push (4 in flight), and BENCH_NOISY_CONNECTS
 * connects of those devices on fresh client ids, timed to the CONNACK. The probe runs on the
 * idle hub before and after the abuses (the baseline of the same run is the better of the two),
 * and once during each abuse, which a hostile device runs from its own process and its own
 * address, 127.0.0.2 (bench/lib/abuser.ts), for as long as the probe takes:
 *
 *   cpu-floor      sends the hub nothing: burns a third of one cpu beside it, about what the
 *                  busiest abusers burn; on 2 cpus this is the slowdown no hub could avoid
 *   subscriptions  subscribes 100 new topics at a time, forever
 *   sessions       opens persistent sessions on new client ids, forever
 *   slow-consumer  subscribes, stops reading, and publishes 400 × 64 KiB to itself from a second connection
 *   retained       publishes 1 KiB retained messages on new topics, forever
 *   deep-json      publishes JSON nested 10,000 deep on its attributes topic
 *   publish-flood  publishes QoS 0 on a topic of its own as fast as its socket takes them, forever
 *                  (held to IOTHUB_MAX_MESSAGE_RATE, 1,000/s by default)
 *   connections    opens TCP connections that never send CONNECT and holds them (backing off
 *                  once refused: a connect-and-drop flood is the kernel's to stop)
 *   wrong-logins   connects with a wrong token, forever
 *
 * Reported per abuse: push p99 and connect p99 against the idle probe's, as ratios (target
 * ≤ 1.5×), and against the cpu floor's (what a third of a cpu taken from the hub and the probe
 * costs on this machine, with no abuse at all); how often the hub refused or closed the abuser,
 * and the cpu the abuser burnt.
 *
 *   BENCH_NOISY_DEVICES   well-behaved devices                      (default 50)
 *   BENCH_NOISY_PUSHES    pushes per probe                          (default 1,000)
 *   BENCH_NOISY_CONNECTS  connects per probe                        (default 200)
 *   BENCH_NOISY_ABUSES    which abuses, comma separated             (default all)
 */
import type { MqttClient } from 'mqtt'
import { ABUSES, type Abuse, type AbuserCommand, type AbuserReply } from './lib/abuser.js'
import { ChildLink, connectOne, pool } from './lib/child-fleet.js'
import { startHub } from './lib/targets.js'
import { envInt, fmt, line, nowMs, percentiles, report, runMain, type SummaryRow } from './lib/util.js'

const DEVICES = envInt('BENCH_NOISY_DEVICES', 50)
const PUSHES = envInt('BENCH_NOISY_PUSHES', 1000)
const CONNECTS = envInt('BENCH_NOISY_CONNECTS', 200)
const IN_FLIGHT = 4
const TARGET_RATIO = 1.5
const REQUESTED = (process.env.BENCH_NOISY_ABUSES ?? ABUSES.join(',')).split(',')
for (const a of REQUESTED) if (!ABUSES.includes(a as Abuse)) throw new Error(`BENCH_NOISY_ABUSES lists ${ABUSES.join(', ')}; got "${a}"`)
// always in ABUSES' order: wrong-logins last, since it leaves the abuser's address throttled
const SELECTED = ABUSES.filter((a) => REQUESTED.includes(a))
const API_AUTH = `Basic ${Buffer.from('admin:public').toString('base64')}`

interface Device {
  id: string
  token: string
  client: MqttClient
  waiting: Map<string, () => void>
}

interface Probe {
  push: { p50: number; p99: number; max: number }
  connect: { p50: number; p99: number; max: number }
}

async function api<T>(httpUrl: string, method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${httpUrl}${path}`, {
    method,
    headers: { authorization: API_AUTH, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
  return (await response.json()) as T
}

async function probe(httpUrl: string, mqttUrl: string, devices: Device[], round: string): Promise<Probe> {
  const pushMs: number[] = []
  await pool(PUSHES, IN_FLIGHT, async (i) => {
    const device = devices[i % devices.length]!
    const mark = `${round}-${i}`
    const started = nowMs()
    const delivered = new Promise<void>((resolve) => device.waiting.set(mark, resolve))
    await api(httpUrl, 'PATCH', `/v1/devices/${device.id}/attributes`, { mark })
    await delivered
    pushMs.push(nowMs() - started)
  })
  const connectMs: number[] = []
  await pool(CONNECTS, IN_FLIGHT, async (i) => {
    const device = devices[i % devices.length]!
    const started = nowMs()
    const client = await connectOne(mqttUrl, `probe-${round}-${i}`, { username: device.id, password: device.token })
    connectMs.push(nowMs() - started)
    await client.endAsync()
  })
  return { push: percentiles(pushMs), connect: percentiles(connectMs) }
}

async function main(): Promise<void> {
  const target = await startHub({ auth: 'token' })
  const httpUrl = target.httpUrl!
  line(`noisy neighbour: ${DEVICES} devices, ${PUSHES} pushes and ${CONNECTS} connects per probe; abuses: ${SELECTED.join(', ')}`)
  const created = await api<{ id: string; token: string }[]>(httpUrl, 'POST', '/v1/devices', Array.from({ length: DEVICES + SELECTED.length }, () => ({})))
  const devices: Device[] = []
  for (const d of created.slice(0, DEVICES)) {
    const client = await connectOne(target.url, `neighbour-${d.id}`, { username: d.id, password: d.token })
    const device: Device = { ...d, client, waiting: new Map() }
    client.on('message', (_topic, payload) => {
      const { mark } = JSON.parse(payload.toString()) as { mark: string }
      device.waiting.get(mark)?.()
      device.waiting.delete(mark)
    })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    devices.push(device)
  }
  const abuser = await ChildLink.start<AbuserCommand, AbuserReply>('lib/abuser.ts', 'abuser')
  const rows: SummaryRow[] = []
  try {
    await probe(httpUrl, target.url, devices, 'warmup')
    const idleBefore = await probe(httpUrl, target.url, devices, 'idle-before')
    const measured: { abuse: Abuse; during: Probe; stopped: Extract<AbuserReply, { type: 'stopped' }> }[] = []
    for (const [n, abuse] of SELECTED.entries()) {
      const hostile = created[DEVICES + n]!
      await abuser.request({ cmd: 'start', abuse, target: { mqttUrl: target.url, device: hostile } }, 'started')
      const during = await probe(httpUrl, target.url, devices, abuse)
      measured.push({ abuse, during, stopped: await abuser.request({ cmd: 'stop' }, 'stopped') })
    }
    const idleAfter = await probe(httpUrl, target.url, devices, 'idle-after')
    // the baseline is the better of the two idle probes: an abuse is not excused by a slow idle one
    const idle = { push: Math.min(idleBefore.push.p99, idleAfter.push.p99), connect: Math.min(idleBefore.connect.p99, idleAfter.connect.p99) }
    for (const [name, p] of [['idle hub, before', idleBefore], ['idle hub, after', idleAfter]] as const) {
      line(`${name.padEnd(17)} push p50 ${fmt(p.push.p50, 1)} / p99 ${fmt(p.push.p99, 1)} ms; connect p50 ${fmt(p.connect.p50, 1)} / p99 ${fmt(p.connect.p99, 1)} ms`)
    }
    const floor = measured.find((m) => m.abuse === 'cpu-floor')?.during
    for (const { abuse, during, stopped } of measured) {
      const pushRatio = during.push.p99 / idle.push
      const connectRatio = during.connect.p99 / idle.connect
      const overFloor = (p99: number, of: 'push' | 'connect') => (floor && abuse !== 'cpu-floor' ? `, ${fmt(p99 / floor[of].p99, 2)}× the cpu floor` : '')
      line(
        `${abuse.padEnd(17)} push p99 ${fmt(during.push.p99, 1)} ms (${fmt(pushRatio, 2)}× idle${overFloor(during.push.p99, 'push')}), ` +
          `connect p99 ${fmt(during.connect.p99, 1)} ms (${fmt(connectRatio, 2)}× idle${overFloor(during.connect.p99, 'connect')}); ` +
          `abuser: ${fmt(stopped.attempts)} ${abuse === 'cpu-floor' ? 'spins' : 'attempts'}, ${fmt(stopped.refused)} refused or closed, ${fmt(stopped.cpuMs)} ms cpu`
      )
      const baseline = (of: 'push' | 'connect') => `idle ${fmt(idle[of], 1)} ms${floor && abuse !== 'cpu-floor' ? `; cpu floor ${fmt(floor[of].p99, 1)} ms` : ''}`
      rows.push(
        { bench: 'noisy-neighbour', metric: `${abuse}: push p99`, value: `${fmt(during.push.p99, 1)} ms`, baseline: baseline('push'), ratio: `${fmt(pushRatio, 2)}×`, target: `≤ ${TARGET_RATIO}× idle`, met: pushRatio <= TARGET_RATIO },
        { bench: 'noisy-neighbour', metric: `${abuse}: connect p99`, value: `${fmt(during.connect.p99, 1)} ms`, baseline: baseline('connect'), ratio: `${fmt(connectRatio, 2)}×`, target: `≤ ${TARGET_RATIO}× idle`, met: connectRatio <= TARGET_RATIO }
      )
    }
    const health = await fetch(`${httpUrl}/healthz`)
    line(`after every abuse: /healthz ${health.status}, ${devices.filter((d) => d.client.connected).length}/${DEVICES} neighbours still connected`)
  } finally {
    await abuser.stop()
    for (const d of devices) d.client.end(true)
    await target.stop()
  }
  await report('noisy-neighbour', rows)
}

runMain(main)
