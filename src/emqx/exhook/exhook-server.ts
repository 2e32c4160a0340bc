/**
 * The ExHook gRPC server EMQX calls (`exhook.servers[].url = "http://hub:9000"`): one port
 * serving `emqx.exhook.v1.HookProvider` (EMQX 4.3/4.4), `v2` (5.0–5.8) and `v3` (5.9+), so one
 * hub serves a cluster in the middle of an upgrade too.
 *
 * `OnProviderLoaded` answers the hooks the hub uses — and, since EMQX loads the provider when it
 * starts or reconnects to the hub, asks for a reconcile. Each lifecycle hook is answered only
 * once its effect is durable. A message the hub cannot read answers INVALID_ARGUMENT (counted
 * as `bad_hook`); a store failure UNAVAILABLE, which EMQX logs (and, with its default
 * `failed_action = deny`, refuses the client's action, rather than let the hub's view drift).
 */
import type { AddressInfo } from 'node:net'
import * as grpc from '@grpc/grpc-js'
import type { Logger } from 'pino'
import type { HubConfig } from '../../config.js'
import { portInUse } from '../../port-in-use.js'
import {
  EXHOOK_HOOK_RPCS,
  EXHOOK_VERSIONS,
  exhookServiceDefinition,
  type ExhookClientInfo,
  type ExhookMessage,
  type ExhookSubOpts,
  type ExhookValuedResponse,
  type ExhookVersion
} from './protos.js'
import { RecentMarks } from '../../collections/recent-marks.js'
import type { QoS } from '../../domain/session.js'
import type { HubMetrics } from '../../observability/metrics.js'
import type { EmqxClient } from '../emqx-client.js'
import { HookInputError, type EmqxSource } from '../emqx-source.js'

/** The device property topics, as EMQX routes them under the `%u/` mountpoint. */
const UPSTREAM_TOPIC_FILTERS = ['+/v1/devices/me/attributes', '+/v1/devices/me/telemetry', '+/v1/devices/me/raw', '+/v1/devices/me/command/response']

/** How long a resumed session's mark waits for its `client.connected`, ms. */
const RESUMED_MARK_MS = 60_000

type Handler = (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, callback: grpc.sendUnaryData<unknown>) => void

export class ExhookServer {
  // channelz keeps per-call statistics for gRPC's debugging service, which the hub does not serve
  private readonly server = new grpc.Server({ 'grpc.enable_channelz': 0 })
  private port: number | undefined
  /**
   * ExHook's ClientInfo says nothing of clean_start. A `session.resumed` (which EMQX runs just
   * before `client.connected`) tells that the new connection asked to keep its session.
   */
  private readonly resumed = new RecentMarks<string>(RESUMED_MARK_MS)

  constructor(
    private readonly source: EmqxSource,
    private readonly config: HubConfig,
    private readonly metrics: HubMetrics,
    private readonly log: Logger,
    private readonly providerLoaded: () => void
  ) {
    for (const version of EXHOOK_VERSIONS) this.server.addService(this.countingBadMessages(exhookServiceDefinition(version)), this.handlers(version))
  }

  /**
   * The service definition with each request decoder counting what it cannot decode (bytes
   * that are not the rpc's protobuf message) as `bad_hook`; gRPC answers those INTERNAL itself.
   */
  private countingBadMessages(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
    const counted: Record<string, grpc.MethodDefinition<unknown, unknown>> = {}
    for (const [name, method] of Object.entries(service)) {
      counted[name] = {
        ...method,
        requestDeserialize: (bytes: Buffer) => {
          try {
            return method.requestDeserialize(bytes) as unknown
          } catch (error) {
            this.metrics.reject('bad_hook')
            this.log.warn({ rpc: method.path, err: (error as Error).message }, 'ExHook request that is not protobuf refused')
            throw error
          }
        }
      }
    }
    return counted
  }

  get listening(): boolean {
    return this.port !== undefined
  }

  listen(): Promise<AddressInfo> {
    const host = this.config.exhookHost
    return new Promise((resolve, reject) => {
      this.server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${this.config.exhookPort}`, grpc.ServerCredentials.createInsecure(), (error, port) => {
        if (error) {
          reject(/address already in use|EADDRINUSE/i.test(error.message) ? portInUse('ExHook gRPC', host, this.config.exhookPort, 'IOTHUB_EXHOOK_PORT / --exhook-port') : error)
          return
        }
        this.port = port
        resolve({ address: host, family: host.includes(':') ? 'IPv6' : 'IPv4', port })
      })
    })
  }

  /** Stops taking calls; calls in progress get a few seconds to finish. */
  async stop(): Promise<void> {
    if (this.port === undefined) return
    this.port = undefined
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown()
        resolve()
      }, 5000)
      this.server.tryShutdown(() => {
        clearTimeout(force)
        resolve()
      })
    })
  }

  private handlers(version: ExhookVersion): grpc.UntypedServiceImplementation {
    // a lifecycle call waits for its batch's commit: a promise chain, not a suspended async frame
    // per call in flight, which every scavenge until then would copy
    const empty = (work: (request: Record<string, unknown>) => Promise<unknown>): Handler => (call, callback) =>
      this.answer(version, call, callback, () => work(call.request).then(answeredEmpty))
    const authorize: Handler = (call, callback) =>
      this.answer(version, call, callback, async () => {
        const request = call.request
        // enums decode to their names (protos.ts): AuthorizeReqType / AclReqType PUBLISH, SUBSCRIBE
        const action = request.type === 'PUBLISH' ? 'publish' : request.type === 'SUBSCRIBE' ? 'subscribe' : undefined
        const allowed = this.source.authorize(this.clientOf(request.clientinfo, version), text(request.topic, 'topic'), action)
        return valued(allowed)
      })
    const noop: Handler = (_call, callback) => callback(null, {})
    const handlers: Record<string, Handler> = {
      OnProviderLoaded: (call, callback) => {
        const meta = call.request.meta as { node?: string; version?: string } | null
        const broker = call.request.broker as { version?: string } | null
        this.log.info({ exhook: version, node: meta?.node, emqx: broker?.version ?? meta?.version }, 'EMQX loaded the ExHook provider')
        callback(null, { hooks: this.hookSpecs(version) })
        this.providerLoaded()
      },
      OnProviderUnloaded: (call, callback) => {
        this.log.warn({ exhook: version, node: (call.request.meta as { node?: string } | null)?.node }, 'EMQX unloaded the ExHook provider')
        callback(null, {})
      },
      OnClientConnected: empty((request) => {
        const client = this.clientOf(request.clientinfo, version)
        const resumed = this.resumed.within(client.clientId)
        this.resumed.delete(client.clientId)
        if (resumed) client.cleanStart = false
        return this.source.connected(client)
      }),
      OnClientDisconnected: empty((request) => this.source.disconnected(this.clientOf(request.clientinfo, version), text(request.reason, 'reason'))),
      OnClientAuthenticate: (call, callback) =>
        this.answer(version, call, callback, async () => {
          const info = call.request.clientinfo as ExhookClientInfo | null
          const client = this.clientOf(info, version)
          return valued((await this.source.authenticate(client, info?.password || undefined)).ok)
        }),
      OnClientAuthorize: authorize,
      OnClientCheckAcl: authorize,
      OnSessionSubscribed: empty((request) => {
        const opts = (request.subopts ?? {}) as Partial<ExhookSubOpts>
        return this.source.subscribed(this.clientOf(request.clientinfo, version), [
          { topic: text(request.topic, 'topic'), qos: qosOf(opts.qos), rh: opts.rh ?? 0, rap: Boolean(opts.rap), nl: Boolean(opts.nl) }
        ])
      }),
      OnSessionUnsubscribed: empty((request) => this.source.unsubscribed(this.clientOf(request.clientinfo, version), [text(request.topic, 'topic')])),
      OnSessionResumed: empty((request) => {
        const client = this.clientOf(request.clientinfo, version)
        this.resumed.mark(client.clientId)
        return RESOLVED
      }),
      OnSessionTerminated: empty((request) => this.source.sessionTerminated(this.clientOf(request.clientinfo, version), text(request.reason, 'reason'))),
      OnMessagePublish: (call, callback) =>
        this.answer(version, call, callback, async () => {
          const message = call.request.message as ExhookMessage | null
          if (!message) throw new HookInputError('message.publish without a message')
          const verdict = await this.source.published(text(message.from, 'from'), text(message.topic, 'topic'), Buffer.from(message.payload))
          // a refused upstream payload is not routed: EMQX drops a message whose allow_publish is "false"
          if (verdict === 'refused') return { type: 'STOP_AND_RETURN', message: { ...message, headers: { ...message.headers, allow_publish: 'false' } } }
          return { type: 'IGNORE' }
        })
    }
    for (const rpc of Object.values(EXHOOK_HOOK_RPCS[version])) handlers[rpc] ??= noop
    return handlers
  }

  /** The hooks EMQX is to call, named as this version names them. */
  private hookSpecs(version: ExhookVersion): { name: string; topics: string[] }[] {
    const authorize = version === 'v1' ? 'client.check_acl' : 'client.authorize'
    return [
      'client.connected',
      'client.disconnected',
      'client.authenticate',
      authorize,
      'session.subscribed',
      'session.unsubscribed',
      'session.resumed',
      'session.terminated'
    ]
      .map((name) => ({ name, topics: [] as string[] }))
      .concat([{ name: 'message.publish', topics: UPSTREAM_TOPIC_FILTERS }])
  }

  /**
   * Runs one call, answering its result or the gRPC status its failure calls for — a failure
   * thrown before `work` has a promise (a ClientInfo it cannot read) as well as a rejection.
   */
  private answer(version: ExhookVersion, call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, callback: grpc.sendUnaryData<unknown>, work: () => Promise<unknown>): void {
    let working: Promise<unknown>
    try {
      working = work()
    } catch (error) {
      working = Promise.reject(error instanceof Error ? error : new Error(String(error)))
    }
    working.then(
      (response) => callback(null, response),
      (error: Error) => {
        if (error instanceof HookInputError) {
          if (!error.counted) this.metrics.reject('bad_hook')
          callback({ code: grpc.status.INVALID_ARGUMENT, details: error.message })
          return
        }
        this.log.error({ exhook: version, rpc: call.getPath(), err: error.message }, 'ExHook call not applied')
        callback({ code: grpc.status.UNAVAILABLE, details: `not recorded: ${error.message}` })
      }
    )
  }

  /** ClientInfo as EmqxClient facts: proto3 sends '' and 0 for what is unset. */
  private clientOf(value: unknown, version: ExhookVersion): EmqxClient {
    if (typeof value !== 'object' || value === null) throw new HookInputError('no clientinfo')
    const info = value as ExhookClientInfo
    return {
      node: info.node,
      clientId: info.clientid,
      username: info.username || null,
      protocol: info.protocol || undefined,
      peerHost: info.peerhost || null,
      // v3 (EMQX 5.9+) and later v2 releases name the peer port (0: not sent); v1 never does,
      // and without it connections are matched by node and host
      peerPort: version !== 'v1' && info.peerport ? info.peerport : undefined,
      sockPort: info.sockport || undefined,
      mountpoint: info.mountpoint || undefined,
      protoVer: undefined,
      keepalive: undefined,
      cleanStart: undefined,
      expiryInterval: undefined,
      connectedAt: undefined
    }
  }
}

const RESOLVED: Promise<void> = Promise.resolve()

/** The answer of a hook whose response says nothing (EmptySuccess). */
function answeredEmpty(): object {
  return {}
}

function valued(result: boolean): ExhookValuedResponse {
  return { type: 'STOP_AND_RETURN', bool_result: result }
}

function text(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0) throw new HookInputError(`no ${field}`)
  return value
}

function qosOf(value: unknown): QoS {
  return value === 1 || value === 2 ? value : 0
}
