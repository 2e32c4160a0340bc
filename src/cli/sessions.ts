/** `iothub sessions list|get|kick` and `iothub subscriptions list`: a running hub's session and subscription entities. */
import { Command, Option } from 'commander'
import { call, connectionOf, withConnection } from './connection.js'
import { fields, jsonOption, table, type Io } from './output.js'
import { listPages, pagingOptions } from './paging.js'
import { moreHint } from './devices.js'

interface Session {
  id: string
  protocol: string
  clientId: string
  deviceId: string
  node: string
  peerHost: string | null
  connected: boolean
  connectedAt: string
  disconnectedAt: string | null
  topics: { topic: string }[]
}

interface Subscription {
  id: string
  deviceId: string
  sessionId: string
  topic: string
  properties: string[]
  createdAt: string
}

type Options = { url?: string; api?: string; apiUser: string; apiPassword: string; json?: boolean }
type Paging = { limit: number; cursor?: string; all?: boolean }

export function sessionsCommands(io: Io): Command {
  const sessions = new Command('sessions').description('list, show and kick the session entities of a running hub')

  withConnection(
    pagingOptions(sessions.command('list').description('list session entities, paged by client id'))
      .option('--device <id>', 'only the sessions of this device')
      .option('--client <clientId>', 'only the session of this client id')
      .addOption(new Option('--protocol <protocol>', 'only sessions over this protocol').choices(['mqtt', 'coap']))
      .addOption(new Option('--connected <true|false>', 'only connected (true) or offline (false) sessions').choices(['true', 'false']))
      .addOption(jsonOption())
  ).action(async (o: Options & Paging & { device?: string; client?: string; protocol?: string; connected?: string }) => {
    const page = await listPages<Session>(connectionOf(o), '/v1/sessions', { deviceId: o.device, clientId: o.client, protocol: o.protocol, connected: o.connected }, o)
    if (o.json) return io.out(JSON.stringify(page))
    const rows = page.data.map((s) => [s.clientId, s.deviceId, s.protocol, s.node, s.connected ? 'yes' : 'no', s.peerHost, s.topics.length, s.connected ? s.connectedAt : s.disconnectedAt])
    for (const line of table(['CLIENT ID', 'DEVICE', 'PROTOCOL', 'NODE', 'CONNECTED', 'PEER', 'TOPICS', 'SINCE'], rows)) io.out(line)
    moreHint(page, io)
  })

  withConnection(sessions.command('get').description('show one session entity, with its topics').argument('<clientId>', 'the session id: its client id').addOption(jsonOption())).action(
    async (clientId: string, o: Options) => {
      const session = await call<Session>(connectionOf(o), 'GET', `/v1/sessions/${encodeURIComponent(clientId)}`)
      if (o.json) return io.out(JSON.stringify(session))
      for (const line of fields({ ...session })) io.out(line)
    }
  )

  withConnection(sessions.command('kick').description('disconnect a connected session').argument('<clientId>', 'its client id')).action(async (clientId: string, o: Options) => {
    await call(connectionOf(o), 'DELETE', `/v1/sessions/${encodeURIComponent(clientId)}`, { expect: 204 })
    io.out(`kicked ${clientId}`)
  })

  return sessions
}

export function subscriptionsCommands(io: Io): Command {
  const subscriptions = new Command('subscriptions').description("a running hub's subscription entities")
  withConnection(
    pagingOptions(subscriptions.command('list').description('list subscription entities, paged by id'))
      .option('--device <id>', 'only the subscriptions of this device')
      .option('--session <clientId>', 'only the subscriptions of this session')
      .addOption(jsonOption())
  ).action(async (o: Options & Paging & { device?: string; session?: string }) => {
    const page = await listPages<Subscription>(connectionOf(o), '/v1/subscriptions', { deviceId: o.device, sessionId: o.session }, o)
    if (o.json) return io.out(JSON.stringify(page))
    const rows = page.data.map((s) => [s.id, s.deviceId, s.sessionId, s.topic, s.properties.join(','), s.createdAt])
    for (const line of table(['ID', 'DEVICE', 'SESSION', 'TOPIC', 'PROPERTIES', 'CREATED'], rows)) io.out(line)
    moreHint(page, io)
  })
  return subscriptions
}
