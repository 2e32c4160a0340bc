/**
 * The `iothub` command line (commander): `start` (the default) runs the hub; the other commands
 * talk to a running hub's API with the same connection flags. Help on every command, `--version`,
 * and a wrong command line is one line on stderr and exit status 2 — never a stack trace.
 */
import { PACKAGE_VERSION } from '../package-version.js'
import { Command, CommanderError } from 'commander'
import { ConfigError } from '../config.js'
import { devicesCommands } from './devices.js'
import { eventsCommands } from './events.js'
import { CliError, consoleIo, type Io } from './output.js'
import { sessionsCommands, subscriptionsCommands } from './sessions.js'
import { startCommand } from './start.js'
import { statusCommand } from './status.js'

/** package.json's version. */
export const VERSION = PACKAGE_VERSION

function program(io: Io): Command {
  const root = new Command('iothub')
    .description('IoT hub: run it (iothub start), or look at and change a running one')
    .version(VERSION, '-v, --version', 'print the version')
    .helpOption('-h, --help', 'show this help')
    .helpCommand('help [command]', 'show the help of a command')
    // commander's own messages (help, errors) go where the command's do
    .configureOutput({ writeOut: (text) => io.out(text.replace(/\n$/, '')), writeErr: (text) => io.err(text.replace(/\n$/, '')) })
    .showSuggestionAfterError()
    .addHelpText(
      'after',
      "\n`iothub start --help` lists the hub's options (each also an IOTHUB_* variable). The other commands talk to a running hub:\n" +
        'each takes --url, --api-user and --api-password (or IOTHUB_URL, IOTHUB_API_USER, IOTHUB_API_PASSWORD); --json prints what the hub answered.'
    )
    // errors come back as exceptions (below) rather than commander exiting the process
    .exitOverride()
  root.addCommand(startCommand(), { isDefault: true })
  for (const command of [devicesCommands(io), sessionsCommands(io), subscriptionsCommands(io), eventsCommands(io), statusCommand(io)]) root.addCommand(command)
  // settings the subcommands were made without: inherited only by commands made from root
  const inherit = (command: Command): void => {
    command.exitOverride().configureOutput(root.configureOutput()).showSuggestionAfterError()
    command.commands.forEach(inherit)
  }
  root.commands.forEach(inherit)
  return root
}

/** Runs a command line; answers the exit status. A hub started by `start` keeps running after. */
export async function runCli(argv: readonly string[], io: Io = consoleIo): Promise<number> {
  try {
    await program(io).parseAsync([...argv], { from: 'user' })
    return 0
  } catch (error) {
    if (error instanceof CommanderError) {
      // help and version exit 0; commander has already printed the message of any other
      return error.exitCode === 0 ? 0 : 2
    }
    if (error instanceof CliError) {
      io.err(`iothub: ${error.message}`)
      return error.exitCode
    }
    if (error instanceof ConfigError) {
      io.err(`iothub: ${error.message}`)
      return 2
    }
    throw error
  }
}
