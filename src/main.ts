/** The `iothub` command. */
import { configHelp, ConfigError } from './config.js'
import { devicesCommand, DEVICES_HELP } from './cli/devices.js'
import { eventsCommand, EVENTS_HELP } from './cli/events.js'
import { startCommand } from './cli/start.js'

const HELP = `usage: iothub [start] [options]      run the hub
       iothub devices create ...      register devices on a running hub (iothub devices --help)
       iothub events tail ...         print a running hub's events as they happen (iothub events --help)

Options (each also an environment variable):
${configHelp()}`

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv
  if (command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP)
    return
  }
  if (command === 'devices') {
    if (rest.includes('--help')) console.log(DEVICES_HELP)
    else process.exitCode = await devicesCommand(rest)
    return
  }
  if (command === 'events') {
    if (rest.includes('--help')) console.log(EVENTS_HELP)
    else process.exitCode = await eventsCommand(rest)
    return
  }
  await startCommand(command === 'start' ? rest : argv)
}

main(process.argv.slice(2)).catch((error: Error) => {
  console.error(error instanceof ConfigError ? `iothub: ${error.message}` : error)
  process.exit(error instanceof ConfigError ? 2 : 1)
})
