/**
 * `iothub devices list|get|create|update|delete|rotate-token|push-attributes|send-command`: the
 * device routes of a running hub (the hub keeps devices in memory, so writing its store behind
 * its back would not be seen). `create` prints each new device's token — the only time a token
 * is shown. `push-attributes` and `send-command` are fleet pushes: one call for many devices.
 */
import type { FleetPushReport } from '../devices/fleet-push.js'
import { Command, InvalidArgumentError, Option } from 'commander'
import { call, connectionOf, query, withConnection } from './connection.js'
import { CliError, fields, jsonOption, table, wholeNumber, type Io } from './output.js'
import { listPages, pagingOptions, type Page } from './paging.js'

interface Device {
  id: string
  name: string
  owner: string
  group: string
  desc: string
  ext: Record<string, unknown>
  token?: string
  createdAt: string
  updatedAt: string
  properties?: { connectinfo?: { _online?: boolean } }
}

/** Most devices `create --count` makes in one request (the API takes up to 10,000). */
const BATCH = 10_000

type Options = { url?: string; api?: string; apiUser: string; apiPassword: string; json?: boolean }

const online = (d: Device): string => (d.properties?.connectinfo?._online === true ? 'yes' : 'no')

function extOf(raw: string): Record<string, unknown> {
  let ext: unknown
  try {
    ext = JSON.parse(raw)
  } catch {
    throw new InvalidArgumentError('a JSON object, e.g. \'{"model":"T100"}\'')
  }
  if (typeof ext !== 'object' || ext === null || Array.isArray(ext)) throw new InvalidArgumentError('a JSON object')
  return ext as Record<string, unknown>
}

/** What a fleet push answers (routes/fleet-pushes.ts): its report, and the command it sent. */
type FleetAnswer = FleetPushReport & { command?: { id: string } }

type SelectorOptions = { ids?: string[]; owner?: string; group?: string; all?: boolean; after?: string }

/** The selector options of a fleet push: the hub refuses any but exactly one kind. */
function withSelector(command: Command): Command {
  return command
    .option('--ids <ids>', 'these devices, comma separated (at most 10000)', (raw: string) => raw.split(',').filter((id) => id !== ''))
    .option('--owner <owner>', "the devices of this owner (with --group: this owner's in that group)")
    .option('--group <group>', 'the devices of this group')
    .option('--all', 'every device of the hub')
    .option('--after <id>', 'a filter or --all from after this device id: where a stopped push said to carry on')
}

const selectorOf = (o: SelectorOptions) => Object.fromEntries(Object.entries({ ids: o.ids, owner: o.owner, group: o.group, all: o.all, after: o.after }).filter(([, v]) => v !== undefined))

/** A fleet push's answer as lines: the counts, then the ids it could not change (on stderr). */
function printFleetAnswer(answer: FleetAnswer, io: Io): void {
  const counts: Record<string, unknown> = { ...(answer.command ? { command: answer.command.id } : {}), matched: answer.matched, changed: answer.changed }
  if (answer.alreadySent !== undefined) counts.alreadySent = answer.alreadySent
  Object.assign(counts, { pushed: answer.pushed, sessions: answer.sessions, unknown: answer.unknownCount, failed: answer.failed, pushFailed: answer.pushFailed, tookMs: answer.tookMs })
  for (const line of fields(counts)) io.out(line)
  if (answer.unknownCount > 0) io.err(`unknown: ${answer.unknown.join(', ')}${answer.unknownCount > answer.unknown.length ? ` (and ${answer.unknownCount - answer.unknown.length} more)` : ''}`)
  for (const e of answer.errors) io.err(`${e.id}: ${e.message}`)
}

export function devicesCommands(io: Io): Command {
  const devices = new Command('devices').description('list, show, register, change and delete devices on a running hub')

  withConnection(
    pagingOptions(devices.command('list').description('list devices, paged by id (tokens are never listed)'))
      .option('--owner <owner>', 'only the devices of this owner')
      .option('--group <group>', 'only the devices of this group')
      .addOption(new Option('--connected <true|false>', 'only devices with (true) or without (false) a connected session').choices(['true', 'false']))
      .option('--q <text>', 'only devices whose id or name contains this (any case)')
      .addOption(jsonOption())
  ).action(async (o: Options & { owner?: string; group?: string; connected?: string; q?: string; limit: number; cursor?: string; all?: boolean }) => {
    const connection = connectionOf(o)
    const filters = { owner: o.owner, group: o.group, connected: o.connected, q: o.q }
    const page = await listPages<Device>(connection, '/v1/devices', filters, o)
    if (o.json) return io.out(JSON.stringify(page))
    for (const line of table(['ID', 'NAME', 'OWNER', 'GROUP', 'ONLINE', 'CREATED'], page.data.map((d) => [d.id, d.name, d.owner, d.group, online(d), d.createdAt]))) io.out(line)
    moreHint(page, io)
  })

  withConnection(devices.command('get').description('show one device, with its properties').argument('<id>', 'device id').addOption(jsonOption())).action(
    async (id: string, o: Options) => {
      const device = await call<Device>(connectionOf(o), 'GET', `/v1/devices/${encodeURIComponent(id)}`)
      if (o.json) return io.out(JSON.stringify(device))
      for (const line of fields({ ...device })) io.out(line)
    }
  )

  withConnection(
    devices
      .command('create')
      .description('register devices and print each one\'s token (shown this once)')
      .option('--id <id>', 'the id of the device (default: one the hub makes; not with --count)')
      .option('--name <name>', 'its name')
      .option('--owner <owner>', 'owner of the new devices')
      .option('--group <group>', 'group of the new devices')
      .option('--desc <text>', 'description')
      .option('--ext <json>', 'extra fields, a JSON object', extOf)
      .option('--count <n>', 'how many devices (at most 100000)', wholeNumber(1, 100_000), 1)
      .addOption(new Option('--json', 'print {"id","token"} per line instead of a table'))
  ).action(async (o: Options & { id?: string; name?: string; owner?: string; group?: string; desc?: string; ext?: Record<string, unknown>; count: number }) => {
    if (o.id !== undefined && o.count > 1) throw new CliError('--id names one device: it cannot go with --count', 2)
    const connection = connectionOf(o)
    const template = Object.fromEntries(Object.entries({ id: o.id, name: o.name, owner: o.owner, group: o.group, desc: o.desc, ext: o.ext }).filter(([, v]) => v !== undefined))
    const made: Device[] = []
    for (let done = 0; done < o.count; done += BATCH) {
      const body = Array.from({ length: Math.min(BATCH, o.count - done) }, () => template)
      const created = await call<Device[]>(connection, 'POST', '/v1/devices', { body, expect: 201 })
      if (o.json) for (const d of created) io.out(JSON.stringify({ id: d.id, token: d.token }))
      else made.push(...created)
    }
    if (!o.json) for (const line of table(['ID', 'TOKEN', 'OWNER', 'GROUP'], made.map((d) => [d.id, d.token, d.owner, d.group]))) io.out(line)
  })

  withConnection(
    devices
      .command('update')
      .description("change a device's name, description, group or ext (not its id or owner)")
      .argument('<id>', 'device id')
      .option('--name <name>', 'new name')
      .option('--desc <text>', 'new description')
      .option('--group <group>', 'new group')
      .option('--ext <json>', 'new extra fields, a JSON object', extOf)
      .addOption(jsonOption())
  ).action(async (id: string, o: Options & { name?: string; desc?: string; group?: string; ext?: Record<string, unknown> }) => {
    const body = Object.fromEntries(Object.entries({ name: o.name, desc: o.desc, group: o.group, ext: o.ext }).filter(([, v]) => v !== undefined))
    if (Object.keys(body).length === 0) throw new CliError('nothing to change: give --name, --desc, --group or --ext', 2)
    const device = await call<Device>(connectionOf(o), 'PATCH', `/v1/devices/${encodeURIComponent(id)}`, { body })
    if (o.json) return io.out(JSON.stringify(device))
    for (const line of fields({ ...device })) io.out(line)
  })

  withConnection(
    devices.command('delete').description('delete a device: its sessions are kicked, its subscriptions deleted, its token refused').argument('<id>', 'device id').addOption(jsonOption())
  ).action(async (id: string, o: Options) => {
    const done = await call<{ id: string; sessionsEnded: number; subscriptionsDeleted: number }>(connectionOf(o), 'DELETE', `/v1/devices/${encodeURIComponent(id)}`)
    if (o.json) return io.out(JSON.stringify(done))
    io.out(`deleted ${done.id}: ${done.sessionsEnded} session(s) ended, ${done.subscriptionsDeleted} subscription(s) deleted`)
  })

  withConnection(
    devices
      .command('rotate-token')
      .description('give a device a new token (shown this once); the old one is refused for new connections')
      .argument('<id>', 'device id')
      .option('--kick', 'also disconnect its live sessions')
      .addOption(jsonOption())
  ).action(async (id: string, o: Options & { kick?: boolean }) => {
    const done = await call<{ id: string; token: string; kicked: number }>(connectionOf(o), 'POST', `/v1/devices/${encodeURIComponent(id)}/token${query({ kick: o.kick === true })}`)
    if (o.json) return io.out(JSON.stringify(done))
    for (const line of table(['ID', 'TOKEN', 'KICKED'], [[done.id, done.token, done.kicked]])) io.out(line)
  })

  withConnection(
    withSelector(
      devices
        .command('push-attributes')
        .description('merge attributes into many devices and push them to their subscribed sessions, in one call')
        .requiredOption('--attributes <json>', 'the attributes, a JSON object, e.g. \'{"setpoint":21.5}\'', extOf)
    ).addOption(jsonOption())
  ).action(async (o: Options & SelectorOptions & { attributes: Record<string, unknown> }) => {
    const answer = await call<FleetAnswer>(connectionOf(o), 'PATCH', '/v1/devices/attributes', { body: { ...selectorOf(o), attributes: o.attributes } })
    if (o.json) return io.out(JSON.stringify(answer))
    printFleetAnswer(answer, io)
  })

  withConnection(
    withSelector(
      devices
        .command('send-command')
        .description('send one command (one id for every device) to many devices, in one call')
        .requiredOption('--name <name>', 'the command')
        .option('--params <json>', 'its parameters, JSON', (raw: string) => {
          try {
            return JSON.parse(raw) as unknown
          } catch {
            throw new InvalidArgumentError('JSON, e.g. \'{"delay":5}\'')
          }
        })
        .option('--command-id <id>', 'the command id (default: one the hub makes); the devices that already have it are skipped')
    ).addOption(jsonOption())
  ).action(async (o: Options & SelectorOptions & { name: string; params?: unknown; commandId?: string }) => {
    const command = { name: o.name, ...(o.params !== undefined ? { params: o.params } : {}), ...(o.commandId !== undefined ? { id: o.commandId } : {}) }
    const answer = await call<FleetAnswer>(connectionOf(o), 'POST', '/v1/devices/commands', { body: { ...selectorOf(o), command } })
    if (o.json) return io.out(JSON.stringify(answer))
    printFleetAnswer(answer, io)
  })

  return devices
}

/** After a table of one page: how to get the next (on stderr, so stdout stays the table). */
export function moreHint(page: Page<unknown>, io: Io): void {
  if (page.next) io.err(`more: --cursor ${page.next} (or --all)`)
}
