/** Runs the `iothub` command as a user runs it: a child process of src/main.ts. */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'

export interface CliRun {
  code: number
  stdout: string
  stderr: string
}

/** `iothub ...args` with only the environment given (and PATH), so the caller's IOTHUB_* cannot leak in. */
export function iothub(args: readonly string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/main.ts', ...args],
      { env: { PATH: process.env.PATH ?? '', ...env }, timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr })
    )
  })
}

/** The lines of an output, without empty ones. */
export const lines = (text: string): string[] => text.split('\n').filter((l) => l !== '')

/** The command failed with `code` and one line on stderr matching `pattern`, no stack trace. */
export function assertOneLineError(run: CliRun, code: number, pattern: RegExp): void {
  assert.equal(run.code, code, `${run.stdout}\n${run.stderr}`)
  assert.match(run.stderr, pattern)
  assert.equal(lines(run.stderr).length, 1, run.stderr)
  assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace')
}
