/**
 * `iothub events tail` run as the command it is (a child process of `src/main.ts`) against a
 * running hub: one line per event, filtered by type and device; `--json` prints the events the
 * stream has; `--after` resumes exactly after an event; bad options and refused filters exit
 * non-zero with a message.
 *
 * Real parts: a hub on a SQLite file, real mqtt.js clients, the CLI as a child process.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { BASIC_ADMIN } from './helpers/api-client.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'
import { SseStream } from './helpers/sse.js'

interface Tail {
  child: ChildProcess
  lines: string[]
  stderr: () => string
  exited: Promise<number | null>
}

function tail(args: readonly string[]): Tail {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'events', 'tail', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let partial = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n')
    partial = parts.pop()!
    lines.push(...parts)
  })
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, lines, stderr: () => stderr, exited }
}

async function stopped(t: Tail): Promise<void> {
  t.child.kill('SIGTERM')
  await t.exited
}

describe('iothub events tail', () => {
  let hub: TestHub
  let device: { id: string; token: string }
  let expected: { seq: number; type: string; deviceId: string; clientId?: string }[]
  before(async () => {
    hub = await startTestHub({ eventsHeartbeat: 1 })
    device = await hub.createDevice({ owner: 'dave' })
    const other = await hub.createDevice({ owner: 'erin' })
    for (const d of [device, other, device]) {
      const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token })
      await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
      await client.endAsync()
      await hub.hub.registry.settled()
    }
    await hub.hub.properties.settled()
    const head = hub.hub.store.following().applied
    const { stream } = await SseStream.open(`${hub.httpUrl}/v1/events?after=0`, { authorization: BASIC_ADMIN })
    await stream!.until((s) => Number(s.lastEventId) >= head, 20_000, 'the stream at the head')
    expected = stream!.events()
    stream!.close()
  })
  after(() => hub.stop())

  it('prints one line per event the filters take, and with --json the events themselves', async () => {
    const types = 'session.connected,session.subscribed,session.ended'
    const mine = expected.filter((e) => e.deviceId === device.id && types.split(',').includes(e.type))
    assert.equal(mine.length, 6)
    const lines = tail(['--api', hub.httpUrl, '--after', '0', '--types', types, '--device', device.id])
    const json = tail(['--api', hub.httpUrl, '--after', '0', '--json'])
    await eventually(() => lines.lines.length >= mine.length && json.lines.length >= expected.length, 30_000, 'the lines')
    await stopped(lines)
    await stopped(json)
    assert.deepEqual(
      lines.lines.map((l) => l.split('  ').slice(0, 5)),
      mine.map((e) => [String(e.seq), (e as unknown as { time: string }).time, e.type, device.id, device.id])
    )
    assert.ok(lines.lines.filter((l) => l.includes('session.ended')).every((l) => l.endsWith('reason=client_disconnect')))
    assert.ok(lines.lines.filter((l) => l.includes('session.subscribed')).every((l) => l.endsWith('v1/devices/me/attributes')))
    assert.deepEqual(
      json.lines.map((l) => JSON.parse(l) as unknown),
      expected
    )
  })

  it('resumes with --after exactly after an event', async () => {
    const middle = expected[Math.floor(expected.length / 2)]!.seq
    const t = tail(['--api', hub.httpUrl, '--after', String(middle), '--json'])
    const want = expected.filter((e) => e.seq > middle)
    await eventually(() => t.lines.length >= want.length, 30_000, 'the lines after the middle')
    // a new event arrives live, after what was read back
    const probe = await hub.createDevice()
    await eventually(() => t.lines.some((l) => l.includes(probe.id)), 30_000, 'the live event')
    await stopped(t)
    const seqs = t.lines.map((l) => (JSON.parse(l) as { seq: number }).seq)
    assert.deepEqual(seqs.slice(0, want.length), want.map((e) => e.seq))
    assert.equal(new Set(seqs).size, seqs.length, 'no event twice')
  })

  it('exits non-zero with a message on a bad option, a filter the hub refuses, or no hub', async () => {
    const badAfter = tail(['--api', hub.httpUrl, '--after', '1.5'])
    assert.equal(await badAfter.exited, 2)
    assert.match(badAfter.stderr(), /--after must be the seq of an event/)
    const unknown = tail(['--api', hub.httpUrl, '--bogus'])
    assert.equal(await unknown.exited, 2)
    const badType = tail(['--api', hub.httpUrl, '--types', 'session.bogus'])
    assert.equal(await badType.exited, 1)
    assert.match(badType.stderr(), /HTTP 400 .*session\.bogus/)
    const noHub = tail(['--api', 'http://127.0.0.1:1'])
    assert.equal(await noHub.exited, 1)
    assert.match(noHub.stderr(), /no hub answers at http:\/\/127\.0\.0\.1:1/)
  })
})
