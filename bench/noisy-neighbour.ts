/**
 * Noisy neighbour: while one hostile device runs an abuse, do the other devices notice?
 *
 * The hub (embedded broker, token auth, SQLite, as `npm start` runs it) serves
 * BENCH_NOISY_DEVICES well-behaved devices, each subscribed (QoS 1) to its attributes. A probe
 * measures what they feel: BENCH_NOISY_PUSHES attribute changes through the API, each timed
 * from the request until its device has the push (4 in flight), and BENCH_NOISY_CONNECTS
 * connects of those devices on fresh client ids, timed to the CONNACK. The probe runs once on
 * the idle hub (the baseline of the same run), then once during each abuse, which a hostile
 * device runs from its own process (bench/lib/abuser.ts) for as long as the probe takes:
 *
 *   subscriptions  subscribes 100 new topics at a time, forever
 *   sessions       opens persistent sessions on new client ids, forever
 *   slow-consumer  subscribes, stops reading, and publishes 400 × 64 KiB to itself from a second connection
 *   retained       publishes 1 KiB retained messages on new topics, forever
 *   deep-json      publishes JSON nested 10,000 deep on its attributes topic
 *   connections    opens TCP connections that never send CONNECT
 *   wrong-logins   connects with a wrong token, forever
 *
 * Reported per abuse: push p99 and connect p99 against the idle probe's, as ratios (target
 * ≤ 1.5×), how often the hub refused or closed the abuser, and the cpu the abuser burnt (the
 * machine has 2 cpus: an abuser that takes one leaves the hub and the probe the other).
 *
 *   BENCH_NOISY_DEVICES   well-behaved devices                      (default 50)
 *   BENCH_NOISY_PUSHES    pushes per probe                          (default 400)
 *   BENCH_NOISY_CONNECTS  connects per probe                        (default 100)
 *   BENCH_NOISY_ABUSES    which abuses, comma separated             (default all)
 */
import type { MqttClient } from 'mqtt'
import { ABUSES, type Abuse, type AbuserCommand, type AbuserReply } from './lib/abuser.js'
import { ChildLink, connectOne, pool } from './lib/child-fleet.js'
import { startHub } from './lib/targets.js'
import { envInt, fmt, line, nowMs, percentiles, report, runMain, type SummaryRow } from './lib/util.js'

const DEVICES = envInt('BENCH_NOISY_DEVICES', 50)
const PUSHES = envInt('BENCH_NOISY_PUSHES', 400)
const CONNECTS = envInt('BENCH_NOISY_CONNECTS', 100)
const IN_FLIGHT = 4
const TARGET_RATIO = 1.5
const SELECTED = (process.env.BENCH_NOISY_ABUSES ?? ABUSES.join(',')).split(',').map((a) => {
  if (!ABUSES.includes(a as Abuse)) throw new Error(`BENCH_NOISY_ABUSES lists ${ABUSES.join(', ')}; got "${a}"`)
  return a as Abuse
})
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
    const idle = await probe(httpUrl, target.url, devices, 'idle')
    line(`idle hub: push p50 ${fmt(idle.push.p50, 1)} / p99 ${fmt(idle.push.p99, 1)} ms; connect p50 ${fmt(idle.connect.p50, 1)} / p99 ${fmt(idle.connect.p99, 1)} ms`)
    for (const [n, abuse] of SELECTED.entries()) {
      const hostile = created[DEVICES + n]!
      await abuser.request({ cmd: 'start', abuse, target: { mqttUrl: target.url, device: hostile } }, 'started')
      const during = await probe(httpUrl, target.url, devices, abuse)
      const stopped = await abuser.request({ cmd: 'stop' }, 'stopped')
      const pushRatio = during.push.p99 / idle.push.p99
      const connectRatio = during.connect.p99 / idle.connect.p99
      line(
        `${abuse.padEnd(14)} push p99 ${fmt(during.push.p99, 1)} ms (${fmt(pushRatio, 2)}× idle), connect p99 ${fmt(during.connect.p99, 1)} ms (${fmt(connectRatio, 2)}× idle); ` +
          `abuser: ${fmt(stopped.attempts)} attempts, ${fmt(stopped.refused)} refused or closed, ${fmt(stopped.cpuMs)} ms cpu`
      )
      rows.push(
        { bench: 'noisy-neighbour', metric: `${abuse}: push p99`, value: `${fmt(during.push.p99, 1)} ms`, baseline: `idle ${fmt(idle.push.p99, 1)} ms`, ratio: `${fmt(pushRatio, 2)}×`, target: `≤ ${TARGET_RATIO}×`, met: pushRatio <= TARGET_RATIO },
        { bench: 'noisy-neighbour', metric: `${abuse}: connect p99`, value: `${fmt(during.connect.p99, 1)} ms`, baseline: `idle ${fmt(idle.connect.p99, 1)} ms`, ratio: `${fmt(connectRatio, 2)}×`, target: `≤ ${TARGET_RATIO}×`, met: connectRatio <= TARGET_RATIO }
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
