/**
 * What commands print: tables for people, the API's JSON for scripts (`--json`), and errors as
 * one line with an exit status (2: the command line was wrong; 1: the hub refused or is not there).
 */
import { InvalidArgumentError, Option } from 'commander'

export class CliError extends Error {
  override name = 'CliError'
  constructor(
    message: string,
    readonly exitCode: number
  ) {
    super(message)
  }
}

/** Where a command writes: stdout and stderr, or what a test collects. */
export interface Io {
  out(line: string): void
  err(line: string): void
}

export const consoleIo: Io = { out: (line) => console.log(line), err: (line) => console.error(line) }

export const jsonOption = () => new Option('--json', "print the hub's JSON answer instead of a table")

/** Columns padded to their widest cell; the last one unpadded. */
export function table(headers: readonly string[], rows: readonly (readonly unknown[])[]): string[] {
  const cells = [headers, ...rows.map((row) => row.map(cell))]
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i]?.length ?? 0)))
  return cells.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd())
}

/** One entity as two columns, field and value. */
export function fields(entity: Record<string, unknown>): string[] {
  return table(
    ['FIELD', 'VALUE'],
    Object.entries(entity).map(([key, value]) => [key, value])
  )
}

function cell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-'
  if (typeof value === 'string') return value
  if (typeof value === 'number' || typeof value === 'boolean') return String(value)
  return JSON.stringify(value)
}

/** `--limit`'s parser: a whole number in range, else the command line is wrong. */
export function wholeNumber(min: number, max: number) {
  return (raw: string): number => {
    const n = Number(raw)
    if (!/^\d+$/.test(raw) || n < min || n > max) throw new InvalidArgumentError(`a whole number from ${min} to ${max}`)
    return n
  }
}
