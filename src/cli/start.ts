/** `iothub` / `iothub start`: runs the hub until SIGINT or SIGTERM, then stops it gracefully. */
import { Command } from 'commander'
import { configHelp, ConfigError, loadConfig } from '../config.js'
import type { Hub } from '../hub.js'
import { markWhereCpusAllow } from './gc-marking.js'
import { boundHeapGrowth } from './heap-growth.js'

/**
 * The hub's flags are config.ts's (each also an IOTHUB_* variable), parsed and checked there:
 * commander only hands them over, and shows them in the help.
 */
export function startCommand(): Command {
  return new Command('start')
    .description('run the hub (the default command: `iothub [options]` does the same)')
    .helpOption('-h, --help', 'show this help')
    .allowUnknownOption()
    .allowExcessArguments()
    .addHelpText('after', `\nOptions (each also an environment variable; a flag wins):\n${configHelp()}`)
    .action(async (_options: unknown, command: Command) => runHub(command.args))
}

export async function runHub(argv: readonly string[]): Promise<void> {
  const config = loadConfig(process.env, argv)
  // a process-wide setting, so it is the command's to make, not the Hub's (tests run many in one process)
  const heapGrowingPercent = boundHeapGrowth(config)
  // loaded here, not at the top: every other command (help, --version, devices, status …) talks to
  // a running hub over HTTP, and would otherwise wait for the broker, the stores and gRPC to load
  // (0.86 → 0.14 s for `iothub --version`, compiled)
  const { Hub } = await import('../hub.js')
  let hub: Hub
  try {
    hub = await Hub.open(config)
  } catch (error) {
    if (error instanceof ConfigError) throw error // unusable TLS files: told as any other bad setting
    // the store could not be opened (PostgreSQL unreachable, say): one line, not a stack
    console.error(`iothub: ${(error as Error).message}`)
    process.exit(1)
  }
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) return
    stopping = true
    hub.log.info({ signal }, 'stopping')
    hub.stop().then(
      () => process.exit(0),
      (error: Error) => {
        hub.log.error({ err: error.message }, 'stop failed')
        process.exit(1)
      }
    )
  }
  if (heapGrowingPercent !== null) hub.log.info({ heapGrowingPercent }, 'V8 old generation bounded to grow by this share of its live heap (memory is a cache here)')
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
  try {
    await hub.start()
  } catch (error) {
    hub.log.fatal({ err: (error as Error).message }, 'iothub could not start')
    await hub.stop().catch(() => undefined)
    process.exit(1)
  }
  // once serving, not before: loading a large fleet marks faster, and peaks lower, concurrently
  const markingFlags = markWhereCpusAllow()
  if (markingFlags.length > 0) hub.log.info({ v8Flags: markingFlags }, 'V8 now marks the old generation on the main thread: this machine has no cpu to spare for it beside the store\'s writer thread')
}
