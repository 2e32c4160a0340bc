/**
 * `iothub events tail [--types T,…] [--device ID] [--owner O] [--after SEQ] [--json] [--url URL]`:
 * prints a running hub's events (`GET /v1/events`) as they come, one line each — or, with
 * `--json`, each event's JSON as the hub sent it. When the hub closes the stream (it stops, the
 * reader fell behind) or the connection drops, it reconnects after the last event printed, so
 * nothing is missed or printed twice; `--after SEQ` starts after that event (0: the oldest kept).
 */
import { Command, InvalidArgumentError } from 'commander'
import { authorization, connectionOf, unreachable, withConnection, type Connection } from './connection.js'
import { CliError, type Io } from './output.js'

interface TailOptions {
  types?: string
  device?: string
  owner?: string
  after?: string
  json?: boolean
}

export function eventsCommands(io: Io): Command {
  const events = new Command('events').description("a running hub's events (GET /v1/events)")
  withConnection(
    events
      .command('tail')
      .description("print a running hub's events as they happen, one line each: seq, time, type, device, client, detail")
      .option('--types <types>', 'only these event types, a comma list (session.connected, session.ended, device.property, ...)')
      .option('--device <id>', 'only the events of this device')
      .option('--owner <owner>', "only the events of this owner's devices")
      .option('--after <seq>', 'start after this event (0: the oldest the hub keeps; default: from now)', (raw: string) => {
        if (!/^[0-9]{1,15}$/.test(raw)) throw new InvalidArgumentError(`--after must be the seq of an event (digits), got "${raw}"`)
        return raw
      })
      .option('--json', "print each event's JSON instead")
      .addHelpText('after', '\nIt reconnects after the last event printed when the stream ends; stop it with Ctrl-C.')
  ).action((o: TailOptions & { url?: string; api?: string; apiUser: string; apiPassword: string }) => tail(connectionOf(o), o, io))
  return events
}

/** Longest wait between reconnects, ms. */
const RECONNECT_MAX_MS = 5000

interface TailEvent {
  seq: number
  time: string
  type: string
  deviceId: string
  clientId?: string | null
  reason?: string | null
  topics?: { topic: string }[]
  name?: string
  tookOver?: string
}

/** Follows the stream until the process is stopped; throws (a CliError) only when it cannot begin. */
async function tail(connection: Connection, values: TailOptions, io: Io): Promise<void> {
  const query = new URLSearchParams()
  if (values.types !== undefined) query.set('types', values.types)
  if (values.device !== undefined) query.set('deviceId', values.device)
  if (values.owner !== undefined) query.set('owner', values.owner)
  const print = values.json ? (data: string) => io.out(data) : (data: string) => io.out(line(JSON.parse(data) as TailEvent))

  let lastId = values.after
  let connectedOnce = false
  for (let failures = 0; ; ) {
    let response: Response
    try {
      response = await fetch(`${connection.url}/v1/events${query.size > 0 ? `?${query}` : ''}`, {
        headers: {
          accept: 'text/event-stream',
          authorization: authorization(connection),
          ...(lastId !== undefined ? { 'last-event-id': lastId } : {})
        }
      })
    } catch (error) {
      if (!connectedOnce) throw unreachable(connection, error)
      await wait(Math.min(RECONNECT_MAX_MS, 250 * 2 ** failures++))
      continue
    }
    if (response.status !== 200) {
      const body = (await response.json().catch(() => ({}))) as { message?: string }
      throw new CliError(`the hub refused: HTTP ${response.status} ${body.message ?? ''}`.trim(), 1)
    }
    connectedOnce = true
    failures = 0
    try {
      for await (const block of sseBlocks(response.body!)) {
        if (block.id !== undefined) lastId = block.id
        if (block.event === 'error') {
          const closing = JSON.parse(block.data) as { error: string; message: string }
          io.err(`the hub closed the stream (${closing.error}: ${closing.message}); resuming after ${lastId}`)
        } else if (block.data !== '') print(block.data)
      }
    } catch {
      // the connection dropped: resumed below, after the last id
    }
    await wait(Math.min(RECONNECT_MAX_MS, 250 * 2 ** failures++))
  }
}

/** One event as a line: seq, time, type, device, client, and what the type adds. */
function line(e: TailEvent): string {
  const detail =
    e.reason != null ? `reason=${e.reason}` : e.topics ? e.topics.map((t) => t.topic).join(',') : e.name !== undefined ? e.name : e.tookOver ? `tookOver=${e.tookOver}` : ''
  return [e.seq, e.time, e.type, e.deviceId || '-', e.clientId ?? '-', detail].join('  ').trimEnd()
}

interface SseBlock {
  id?: string
  event: string
  data: string
}

/** The blocks of a server-sent events body (WHATWG HTML's fields; comments skipped). */
async function* sseBlocks(body: ReadableStream<Uint8Array>): AsyncGenerator<SseBlock> {
  const decoder = new TextDecoder()
  let buffer = ''
  let block: SseBlock = { event: 'message', data: '' }
  let hasData = false
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true })
    let newline: number
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const text = buffer.slice(0, newline).replace(/\r$/, '')
      buffer = buffer.slice(newline + 1)
      if (text === '') {
        if (hasData || block.id !== undefined) yield block
        block = { event: 'message', data: '' }
        hasData = false
        continue
      }
      if (text.startsWith(':')) continue
      const colon = text.indexOf(':')
      const field = colon < 0 ? text : text.slice(0, colon)
      const value = colon < 0 ? '' : text.slice(colon + 1).replace(/^ /, '')
      if (field === 'id') block.id = value
      else if (field === 'event') block.event = value
      else if (field === 'data') {
        block.data = hasData ? `${block.data}\n${value}` : value
        hasData = true
      }
    }
  }
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
