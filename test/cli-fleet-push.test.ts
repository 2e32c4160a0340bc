/**
 * `iothub devices push-attributes` and `iothub devices send-command`, as child processes
 * against a real hub with an mqtt.js device: what each prints, and that the hub did it (stored,
 * pushed, the command id reused), and how a selection the hub refuses is reported.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { iothub, lines } from './helpers/cli.js'
import { eventually, startTestHub, type TestHub } from './helpers/hub.js'

const cells = (line: string): string[] => line.split(/ {2,}/)
/** A FIELD/VALUE table as an object of its values. */
const valuesOf = (stdout: string): Record<string, string> => Object.fromEntries(lines(stdout).slice(1).map((l) => cells(l) as [string, string]))

describe('iothub devices push-attributes|send-command', () => {
  let hub: TestHub
  let url: string[]
  const received: { topic: string; payload: Record<string, unknown> }[] = []
  before(async () => {
    hub = await startTestHub()
    url = ['--url', hub.httpUrl]
    const d = await hub.createDevice({ id: 'cli-f1', owner: 'cli-owner' })
    await hub.createDevice({ id: 'cli-f2', owner: 'cli-owner' })
    await hub.createDevice({ id: 'cli-other', owner: 'someone' })
    const client = await hub.connect({ clientId: d.id, username: d.id, password: d.token })
    client.on('message', (topic, payload) => received.push({ topic, payload: JSON.parse(payload.toString()) as Record<string, unknown> }))
    await client.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/commands'], { qos: 1 })
  })
  after(async () => {
    await hub.stop()
  })

  it('push-attributes by owner: the counts, the change stored and pushed', async () => {
    const run = await iothub(['devices', 'push-attributes', '--owner', 'cli-owner', '--attributes', '{"setpoint":21.5}', ...url])
    assert.equal(run.code, 0, run.stderr)
    const shown = valuesOf(run.stdout)
    assert.deepEqual([shown.matched, shown.changed, shown.pushed, shown.sessions, shown.unknown], ['2', '2', '1', '1', '0'])
    await eventually(() => received.some((r) => r.topic === 'v1/devices/me/attributes'), 20_000, 'the push')
    assert.deepEqual(received.find((r) => r.topic === 'v1/devices/me/attributes')!.payload, { setpoint: 21.5 })
    const other = (await hub.api<{ properties: { attributes: unknown } }>('GET', '/v1/devices/cli-other')).body.properties.attributes
    assert.deepEqual(other, {})
  })

  it('send-command by ids: unknown ids on stderr, --json the answer, a repeated id skipped', async () => {
    const run = await iothub(['devices', 'send-command', '--ids', 'cli-f1,cli-none', '--name', 'reboot', '--params', '{"delay":5}', '--command-id', 'cmd-cli-1', ...url])
    assert.equal(run.code, 0, run.stderr)
    const shown = valuesOf(run.stdout)
    assert.deepEqual([shown.command, shown.changed, shown.alreadySent], ['cmd-cli-1', '1', '0'])
    assert.match(run.stderr, /unknown: cli-none/)
    await eventually(() => received.some((r) => r.topic === 'v1/devices/me/commands'), 20_000, 'the command')
    assert.deepEqual(received.find((r) => r.topic === 'v1/devices/me/commands')!.payload, { id: 'cmd-cli-1', name: 'reboot', params: { delay: 5 } })

    const again = await iothub(['devices', 'send-command', '--ids', 'cli-f1', '--name', 'reboot', '--command-id', 'cmd-cli-1', '--json', ...url])
    assert.equal(again.code, 0, again.stderr)
    const answer = JSON.parse(again.stdout) as { changed: number; alreadySent: number }
    assert.deepEqual([answer.changed, answer.alreadySent], [0, 1])
  })

  it('a selection the hub refuses: its message, exit 1; a wrong command line: exit 2', async () => {
    const none = await iothub(['devices', 'push-attributes', '--attributes', '{"a":1}', ...url])
    assert.equal(none.code, 1)
    assert.match(none.stderr, /HTTP 400 .*name the devices/)
    const both = await iothub(['devices', 'push-attributes', '--all', '--owner', 'x', '--attributes', '{"a":1}', ...url])
    assert.equal(both.code, 1)
    assert.match(both.stderr, /one way only/)
    const notJson = await iothub(['devices', 'push-attributes', '--all', '--attributes', 'nope', ...url])
    assert.equal(notJson.code, 2)
  })
})
