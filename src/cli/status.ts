/**
 * `iothub status`: a running hub's readiness, the fleet's counts, this replica's rates, its store,
 * the replicas and the last reconcile (GET /v1/status). It exits 0 when the hub is ready and
 * NOT_READY when it answered but is not ready, after printing why, so a script or a probe can
 * tell the two apart from a hub it could not reach (1).
 */
import { Command } from 'commander'
import { call, connectionOf, withConnection } from './connection.js'
import { CliError, jsonOption, table, type Io } from './output.js'

/** The exit status of a hub that answered and is not ready (as `systemctl is-active` says inactive). */
export const NOT_READY = 3

interface Status {
  node: string
  ready: boolean
  checks: Record<string, { ok: boolean; detail?: string }>
  counts: { devices: number; sessions: number; connected: number; subscriptions: number; connectedByProtocol: Record<string, number>; connectedByNode: Record<string, number> } | null
  rates: { lifecycleEventsPerSecond: number; pushesPerSecond: number }
  store: { kind: string; healthy: boolean; commitSecondsP50: number | null; commitSecondsP99: number | null }
  replicas: { node: string; address: string | null; lastSeen: string; logPosition: number; live: boolean; self: boolean }[]
  reconcile: { trigger: string; startedAt: number; durationMs: number; ghostsEnded: number; sessionsAdded: number; error: string | null } | null
}

const byKey = (counts: Record<string, number>): string =>
  Object.entries(counts)
    .map(([key, n]) => `${key} ${n}`)
    .join(', ') || '-'

const ms = (seconds: number | null): string => (seconds === null ? '-' : `${(seconds * 1000).toFixed(1)} ms`)

export function statusCommand(io: Io): Command {
  return withConnection(new Command('status').description("a running hub's readiness, counts, rates, store and replicas").addOption(jsonOption())).action(
    async (o: { url?: string; api?: string; apiUser: string; apiPassword: string; json?: boolean }) => {
      const s = await call<Status>(connectionOf(o), 'GET', '/v1/status')
      if (o.json) io.out(JSON.stringify(s))
      else printStatus(io, s)
      if (!s.ready) {
        const failing = Object.entries(s.checks).filter(([, check]) => !check.ok)
        throw new CliError(`the hub is not ready (failing: ${failing.map(([name]) => name).join(', ') || 'unknown'})`, NOT_READY)
      }
    }
  )
}

function printStatus(io: Io, s: Status): void {
  const c = s.counts
  const rows: [string, string][] = [
    ['node', s.node],
    ['ready', s.ready ? 'yes' : 'no'],
    ...Object.entries(s.checks).map(([name, check]): [string, string] => [`  ${name}`, `${check.ok ? 'ok' : 'FAILING'}${check.detail ? ` (${check.detail})` : ''}`]),
    ['devices', c ? String(c.devices) : 'not counted (the store did not answer)'],
    ['sessions', c ? String(c.sessions) : '-'],
    ['connected', c ? `${c.connected} (${byKey(c.connectedByProtocol)}; by node: ${byKey(c.connectedByNode)})` : '-'],
    ['subscriptions', c ? String(c.subscriptions) : '-'],
    ['lifecycle events', `${s.rates.lifecycleEventsPerSecond}/s (this replica, last 10 s)`],
    ['pushes', `${s.rates.pushesPerSecond}/s`],
    ['store', `${s.store.kind}, ${s.store.healthy ? 'healthy' : 'FAILING'}; commit p50 ${ms(s.store.commitSecondsP50)}, p99 ${ms(s.store.commitSecondsP99)}`],
    ['reconcile', s.reconcile ? `${s.reconcile.trigger} at ${new Date(s.reconcile.startedAt).toISOString()}, ${s.reconcile.durationMs} ms, ${s.reconcile.ghostsEnded} ghost(s) ended, ${s.reconcile.sessionsAdded} session(s) added${s.reconcile.error ? `, error: ${s.reconcile.error}` : ''}` : '-']
  ]
  for (const line of table(['STATUS', ''], rows).slice(1)) io.out(line)
  io.out('')
  const replicas = s.replicas.map((r) => [r.node + (r.self ? ' (this)' : ''), r.address, r.live ? 'yes' : 'no', r.logPosition, r.lastSeen])
  for (const line of table(['REPLICA', 'ADDRESS', 'LIVE', 'LOG POSITION', 'LAST SEEN'], replicas)) io.out(line)
}
