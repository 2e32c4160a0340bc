/**
 * How every command that talks to a running hub finds it: `--url`, `--api-user`,
 * `--api-password`, each also an environment variable (IOTHUB_URL, else
 * http://127.0.0.1:$IOTHUB_HTTP_PORT; IOTHUB_API_USER; IOTHUB_API_PASSWORD), the same flags on
 * every command; and the calls themselves, whose failures become one line for the user.
 */
import { Option, type Command } from 'commander'
import { DEFAULT_API_PASSWORD, DEFAULT_API_USER } from '../config.js'
import { CliError } from './output.js'

export interface Connection {
  url: string
  apiUser: string
  apiPassword: string
}

const defaultUrl = (): string => process.env.IOTHUB_URL || `http://127.0.0.1:${process.env.IOTHUB_HTTP_PORT || '8081'}`

/** Adds the connection flags to a command (shown in its help, under their own heading). */
export function withConnection(command: Command): Command {
  return command
    .addOption(new Option('--url <url>', "the hub's HTTP API (default: http://127.0.0.1:$IOTHUB_HTTP_PORT, port 8081)").env('IOTHUB_URL').helpGroup('Connection:'))
    // the flag's earlier name, still taken so scripts that used it keep working
    .addOption(new Option('--api <url>').hideHelp())
    .addOption(new Option('--api-user <user>', 'API user').env('IOTHUB_API_USER').default(DEFAULT_API_USER).helpGroup('Connection:'))
    .addOption(new Option('--api-password <password>', 'API password').env('IOTHUB_API_PASSWORD').default(DEFAULT_API_PASSWORD, 'public').helpGroup('Connection:'))
}

/** The connection a command's parsed options name. */
export function connectionOf(options: { url?: string; api?: string; apiUser: string; apiPassword: string }): Connection {
  return { url: (options.api ?? options.url ?? defaultUrl()).replace(/\/+$/, ''), apiUser: options.apiUser, apiPassword: options.apiPassword }
}

export function authorization(connection: Connection): string {
  return `Basic ${Buffer.from(`${connection.apiUser}:${connection.apiPassword}`).toString('base64')}`
}

/** The one line said when the hub cannot be reached. */
export function unreachable(connection: Connection, error: unknown): CliError {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause
  const why = cause?.code ?? cause?.message ?? (error as Error).message
  return new CliError(`no hub answers at ${connection.url} (${why}); start one with "npm start" or pass --url`, 1)
}

/** A JSON call to the hub; anything but the expected answer is a CliError saying what the hub said. */
export async function call<T>(connection: Connection, method: string, path: string, options: { body?: unknown; expect?: number } = {}): Promise<T> {
  let response: Response
  try {
    response = await fetch(`${connection.url}${path}`, {
      method,
      headers: { authorization: authorization(connection), ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {})
    })
  } catch (error) {
    throw unreachable(connection, error)
  }
  const text = await response.text()
  if (response.status !== (options.expect ?? 200)) {
    let message = text
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? text
    } catch {
      // not JSON: the text as it came
    }
    throw new CliError(`the hub refused: HTTP ${response.status} ${message}`.trim(), 1)
  }
  return (text === '' ? undefined : JSON.parse(text)) as T
}

/** A querystring of the options given (undefined ones left out). */
export function query(params: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) if (value !== undefined) q.set(key, String(value))
  return q.size > 0 ? `?${q}` : ''
}
