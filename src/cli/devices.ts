/**
 * `iothub devices list|get|create|update|delete|rotate-token`: the device routes of a running
 * hub (the hub keeps devices in memory, so writing its store behind its back would not be seen).
 * `create` prints each new device's token — the only time a token is shown.
 */
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

  return devices
}

/** After a table of one page: how to get the next (on stderr, so stdout stays the table). */
export function moreHint(page: Page<unknown>, io: Io): void {
  if (page.next) io.err(`more: --cursor ${page.next} (or --all)`)
}
