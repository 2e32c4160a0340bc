/** The `iothub` command: src/cli/program.ts says what it takes. */
import { runCli } from './cli/program.js'

runCli(process.argv.slice(2)).then(
  (status) => {
    if (status !== 0) process.exitCode = status
  },
  (error: Error) => {
    // a bug, not a wrong command line: the stack helps whoever reports it
    console.error(error)
    process.exit(1)
  }
)
