/**
 * The `iothub` command line, run as it is run (a child process of src/main.ts): help on every
 * command, --version, a wrong command line (one line, exit 2, no stack), an unreachable hub (one
 * line, exit 1). test/cli-hub.test.ts runs the commands against a real hub.
 */
import assert from 'node:assert/strict'
import { assertOneLineError, iothub } from './helpers/cli.js'
import { readFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { describe, it } from 'node:test'




const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version

async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return port
}

describe('iothub: help, version, wrong command lines', () => {
  it('prints help for the program and every command, and exits 0', async () => {
    const root = await iothub(['--help'])
    assert.equal(root.code, 0)
    for (const command of ['start', 'devices', 'sessions', 'subscriptions', 'events', 'status']) assert.match(root.stdout, new RegExp(`^  ${command}\\b`, 'm'))
    // the hub's flags, from config.ts, and not a hub started
    const start = await iothub(['start', '--help'])
    assert.equal(start.code, 0, start.stderr)
    assert.match(start.stdout, /--mqtt-port\s+IOTHUB_MQTT_PORT/)
    assert.match(start.stdout, /--events-webhook-url/)
    assert.doesNotMatch(start.stdout + start.stderr, /iothub started/)
    for (const command of [['devices', 'create'], ['sessions', 'kick'], ['events', 'tail'], ['status']]) {
      const help = await iothub([...command, '--help'])
      assert.equal(help.code, 0, `${command.join(' ')}: ${help.stderr}`)
      assert.match(help.stdout, new RegExp(`Usage: iothub ${command.join(' ')}`))
      // the same connection flags on every command that talks to a hub
      for (const flag of ['--url <url>', '--api-user <user>', '--api-password <password>']) assert.ok(help.stdout.includes(flag), `${command.join(' ')} --help lacks ${flag}`)
    }
  })

  it('--version prints the package version', async () => {
    for (const flag of ['--version', '-v']) {
      const run = await iothub([flag])
      assert.equal(run.code, 0)
      assert.equal(run.stdout.trim(), VERSION)
    }
  })

  it('a wrong command line is one line on stderr and exit 2', async () => {
    assertOneLineError(await iothub(['devices', 'create', '--bogus']), 2, /unknown option '--bogus'/)
    assertOneLineError(await iothub(['devices', 'create', '--count', 'many']), 2, /--count <n>' argument 'many' is invalid/)
    assertOneLineError(await iothub(['sessions', 'list', '--connected', 'maybe']), 2, /Allowed choices are true, false/)
    assertOneLineError(await iothub(['devices', 'get']), 2, /missing required argument 'id'/)
    // the hub's own flags are still checked by config.ts, as before
    assertOneLineError(await iothub(['start', '--bogus', '1']), 2, /^iothub: unknown option --bogus/)
    assertOneLineError(await iothub(['--mqtt-port']), 2, /^iothub: --mqtt-port needs a value/)
  })

  it('an unreachable hub is one line and exit 1', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`
    for (const args of [['status'], ['events', 'tail']]) {
      assertOneLineError(await iothub([...args, '--url', url]), 1, new RegExp(`^iothub: no hub answers at ${url} \\(ECONNREFUSED\\)`))
    }
  })
})
