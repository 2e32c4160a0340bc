/**
 * A stand-in for EMQX's ExHook gRPC client: calls a HookProvider server the way EMQX does, for tests
 * that cannot run EMQX. One instance speaks one protocol version (v1 = EMQX 4.3/4.4, v2 = 5.0-5.8,
 * v3 = 5.9+; see proto/exhook/<v>/exhook.proto and src/emqx/exhook/protos.ts).
 *
 * How EMQX fills each request, from its source (emqx/emqx):
 *  - apps/emqx_exhook/src/emqx_exhook_handler.erl builds the requests: conninfo/1, clientinfo/1,
 *    message/1, stringfy/1 (reasons, result codes and proto_ver become strings), `maybe`/`option`
 *    (an undefined username/password/mountpoint/cn/dn is sent as ""). Read at 4.x (main-v4.3/4.4,
 *    on_client_check_acl, on_session_takeovered) and at the 5.9+ version (on_client_authorize,
 *    on_session_takenover, peerport from the peername, user_props split from props).
 *  - apps/emqx_exhook/src/emqx_exhook.erl request_meta/0 (4.3.14+ and 5.x): RequestMeta
 *    {node, version, sysdescr, cluster_name}, added to every request.
 *  - apps/emqx_exhook/src/emqx_exhook_server.erl: OnProviderLoaded carries BrokerInfo from
 *    emqx_sys:info() (version, sysdescr, uptime, datetime); OnProviderUnloaded carries only meta.
 *    4.x's uptime is emqx_sys:uptime()'s text ("4 hours, 21 minutes, 19 seconds", also what
 *    GET /api/v4/brokers shows); 5.x's is milliseconds (int64).
 *
 * Per-call deadline: `deadlineMs` (default 5000, EMQX's default exhook request_timeout of 5s).
 */
import * as grpc from '@grpc/grpc-js'
import { randomBytes } from 'node:crypto'
import {
  exhookProtocol,
  type ExhookBrokerInfo,
  type ExhookClientInfo,
  type ExhookConnInfo,
  type ExhookLoadedResponse,
  type ExhookMessage,
  type ExhookProperty,
  type ExhookRequestMeta,
  type ExhookSubOpts,
  type ExhookTopicFilter,
  type ExhookValuedResponse,
  type ExhookVersion
} from '../../src/emqx/exhook/protos.js'

export interface EmqxExhookClientOptions {
  /** 'host:port' of the HookProvider server. */
  address: string
  version: ExhookVersion
  /** Default per-call deadline in milliseconds (default 5000). */
  deadlineMs?: number
  /** Erlang node name EMQX puts in node fields (default 'emqx@127.0.0.1'). */
  node?: string
  /** EMQX release in BrokerInfo/RequestMeta.version (default per version: 4.4.19, 5.8.0, 5.9.0). */
  emqxVersion?: string
  /** RequestMeta.cluster_name (default 'emqxcl', EMQX's default cluster.name). */
  clusterName?: string
  /** BrokerInfo/RequestMeta.sysdescr (default 'EMQX'). */
  sysdescr?: string
  /**
   * Send RequestMeta (default true). v1 before 4.3.14 did not: pass false to behave like 4.3.0-4.3.13.
   */
  sendMeta?: boolean
}

export interface CallOptions {
  deadlineMs?: number
}

/** A client as the connection layer knows it before authentication (ConnInfo). */
export interface ConnInput {
  clientid: string
  username?: string
  /** Peer IP (default '127.0.0.1'). */
  peerhost?: string
  /** Peer TCP port (v3 only on the wire; default 50000). */
  peerport?: number
  /** The listener's port (default 1883). */
  sockport?: number
  /** CONNECT protocol name (default 'MQTT'). */
  proto_name?: string
  /** CONNECT protocol level: 3, 4 or 5 (default 4); EMQX sends it as a string. */
  proto_ver?: number | string
  keepalive?: number
  node?: string
}

/** A client as the channel knows it (ClientInfo). */
export interface ClientInput {
  clientid: string
  username?: string
  password?: string
  peerhost?: string
  /** v3 only on the wire (default 50000). */
  peerport?: number
  sockport?: number
  /** 'mqtt' (default), 'mqtt-sn', 'coap', ... */
  protocol?: string
  mountpoint?: string
  is_superuser?: boolean
  /** EMQX defaults to true until authentication says otherwise. */
  anonymous?: boolean
  cn?: string
  dn?: string
  node?: string
}

export interface MessageInput {
  topic: string
  payload: Buffer | string
  qos?: 0 | 1 | 2
  /** Publisher's clientid (EMQX: stringfy(From)). */
  from?: string
  /** 32 hex characters (EMQX: emqx_guid:to_hexstr); random when omitted. */
  id?: string
  /** Milliseconds since the epoch (default now). */
  timestamp?: number | string
  /** username, protocol, peerhost, allow_publish; EMQX sends only those it has. */
  headers?: Record<string, string>
  node?: string
}

export interface SubOptsInput {
  qos?: 0 | 1 | 2
  rh?: number
  rap?: number
  nl?: number
  /** v1 only: shared subscription group. */
  share?: string
}

export interface TopicFilterInput extends SubOptsInput {
  name: string
}

export type Properties = Record<string, string | number | boolean>

const DEFAULT_EMQX_VERSION: Record<ExhookVersion, string> = { v1: '4.4.19', v2: '5.8.0', v3: '5.9.0' }

export class EmqxExhookClient {
  readonly version: ExhookVersion
  readonly node: string
  private readonly client: grpc.Client
  private readonly service: grpc.ServiceDefinition
  private readonly deadlineMs: number
  private readonly emqxVersion: string
  private readonly clusterName: string
  private readonly sysdescr: string
  private readonly sendMeta: boolean
  private readonly startedAt = Date.now()

  constructor(options: EmqxExhookClientOptions) {
    this.version = options.version
    this.node = options.node ?? 'emqx@127.0.0.1'
    this.deadlineMs = options.deadlineMs ?? 5000
    this.emqxVersion = options.emqxVersion ?? DEFAULT_EMQX_VERSION[options.version]
    this.clusterName = options.clusterName ?? 'emqxcl'
    this.sysdescr = options.sysdescr ?? 'EMQX'
    this.sendMeta = options.sendMeta ?? true
    const protocol = exhookProtocol(options.version)
    this.service = protocol.service
    this.client = new protocol.Client(options.address, grpc.credentials.createInsecure())
  }

  /** Resolves once the channel is connected (or rejects at the deadline). */
  waitForReady(deadlineMs = this.deadlineMs): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + deadlineMs, (error) => (error ? reject(error) : resolve()))
    })
  }

  close(): void {
    this.client.close()
  }

  // ------------------------------------------------------------------ requests' common parts

  /** RequestMeta as emqx_exhook:request_meta/0 builds it. */
  requestMeta(): ExhookRequestMeta {
    return { node: this.node, version: this.emqxVersion, sysdescr: this.sysdescr, cluster_name: this.clusterName }
  }

  /** BrokerInfo from emqx_sys:info(): the uptime is text in 4.x, milliseconds in 5.x. */
  brokerInfo(): ExhookBrokerInfo {
    const uptimeMs = Date.now() - this.startedAt
    return {
      version: this.emqxVersion,
      sysdescr: this.sysdescr,
      uptime: this.version === 'v1' ? uptimeText(uptimeMs) : uptimeMs,
      datetime: localDatetime(new Date())
    }
  }

  /** ConnInfo as emqx_exhook_handler:conninfo/1 fills it. */
  connInfo(input: ConnInput): ExhookConnInfo {
    const info: ExhookConnInfo = {
      node: input.node ?? this.node, // stringfy(node())
      clientid: input.clientid,
      username: input.username ?? '', // option(Username): undefined -> ""
      peerhost: input.peerhost ?? '127.0.0.1', // ntoa(PeerHost), IPv4-mapped IPv6 shown as IPv4
      sockport: input.sockport ?? 1883, // the port of sockname
      proto_name: input.proto_name ?? 'MQTT',
      proto_ver: String(input.proto_ver ?? 4), // stringfy(ProtoVer)
      keepalive: input.keepalive ?? 60
    }
    if (this.version === 'v3') info.peerport = input.peerport ?? 50000 // from peername, 5.9+
    return info
  }

  /** ClientInfo as emqx_exhook_handler:clientinfo/1 fills it. */
  clientInfo(input: ClientInput): ExhookClientInfo {
    const info: ExhookClientInfo = {
      node: input.node ?? this.node,
      clientid: input.clientid,
      username: input.username ?? '',
      password: input.password ?? '', // maps:get(password, ClientInfo, undefined) -> ""
      peerhost: input.peerhost ?? '127.0.0.1',
      sockport: input.sockport ?? 1883,
      protocol: input.protocol ?? 'mqtt', // stringfy(Protocol)
      mountpoint: input.mountpoint ?? '',
      is_superuser: input.is_superuser ?? false, // maps:get(is_superuser, ClientInfo, false)
      anonymous: input.anonymous ?? true, // maps:get(anonymous, ClientInfo, true)
      cn: input.cn ?? '',
      dn: input.dn ?? ''
    }
    if (this.version === 'v3') info.peerport = input.peerport ?? 50000
    return info
  }

  /** Message as emqx_exhook_handler:message/1 fills it. */
  message(input: MessageInput): ExhookMessage {
    return {
      node: input.node ?? this.node,
      id: input.id ?? randomBytes(16).toString('hex').toUpperCase(), // emqx_guid:to_hexstr(Id)
      qos: input.qos ?? 0,
      from: input.from ?? '', // stringfy(From): the publisher's clientid
      topic: input.topic,
      payload: typeof input.payload === 'string' ? Buffer.from(input.payload) : input.payload,
      timestamp: input.timestamp ?? Date.now(), // milliseconds
      headers: input.headers ?? {}
    }
  }

  /** SubOpts: v1 sends qos/share/rh/rap/nl (maps:with), v2 (5.4+)/v3 qos/rh/rap/nl. */
  subOpts(input: SubOptsInput = {}): ExhookSubOpts {
    const opts: ExhookSubOpts = { qos: input.qos ?? 0, rh: input.rh ?? 0, rap: input.rap ?? 0, nl: input.nl ?? 0 }
    if (this.version === 'v1') opts.share = input.share ?? ''
    return opts
  }

  /** TopicFilter: v1 {name, qos}; v2 (5.4+)/v3 {name, subopts}. */
  topicFilter(input: TopicFilterInput): ExhookTopicFilter {
    if (this.version === 'v1') return { name: input.name, qos: input.qos ?? 0 }
    return { name: input.name, subopts: this.subOpts(input) }
  }

  /** Properties: EMQX stringifies every name and value; v3 splits User-Property into user_props. */
  private props(props: Properties | undefined, userProps: Record<string, string> | undefined): { props: ExhookProperty[]; user_props?: ExhookProperty[] } {
    const system = Object.entries(props ?? {}).map(([name, value]) => ({ name, value: String(value) }))
    const user = Object.entries(userProps ?? {}).map(([name, value]) => ({ name, value }))
    if (this.version === 'v3') return { props: system, user_props: user }
    // before 5.9 the User-Property pairs were not forwarded at all
    return { props: system }
  }

  private withMeta<T extends object>(request: T): T & { meta?: ExhookRequestMeta } {
    return this.sendMeta ? { ...request, meta: this.requestMeta() } : request
  }

  // ------------------------------------------------------------------ rpcs, as EMQX calls them

  onProviderLoaded(options: CallOptions & { broker?: Partial<ExhookBrokerInfo> } = {}): Promise<ExhookLoadedResponse> {
    return this.call('OnProviderLoaded', this.withMeta({ broker: { ...this.brokerInfo(), ...options.broker } }), options)
  }

  onProviderUnloaded(options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnProviderUnloaded', this.withMeta({}), options)
  }

  /** client.connect: after the CONNECT packet, before authentication. */
  onClientConnect(conn: ConnInput, extra: CallOptions & { props?: Properties; userProps?: Record<string, string> } = {}): Promise<Record<string, never>> {
    return this.call('OnClientConnect', this.withMeta({ conninfo: this.connInfo(conn), ...this.props(extra.props, extra.userProps) }), extra)
  }

  /** client.connack: result_code is the reason name, e.g. 'success', 'not_authorized'. */
  onClientConnack(conn: ConnInput, resultCode: string, extra: CallOptions & { props?: Properties; userProps?: Record<string, string> } = {}): Promise<Record<string, never>> {
    return this.call(
      'OnClientConnack',
      this.withMeta({ conninfo: this.connInfo(conn), result_code: resultCode, ...this.props(extra.props, extra.userProps) }),
      extra
    )
  }

  onClientConnected(client: ClientInput, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnClientConnected', this.withMeta({ clientinfo: this.clientInfo(client) }), options)
  }

  /** reason: stringfy(Reason), e.g. 'normal', 'kicked', 'takenover' (4.x 'takeovered'), 'discarded', 'keepalive_timeout', 'sock_closed'. */
  onClientDisconnected(client: ClientInput, reason: string, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnClientDisconnected', this.withMeta({ clientinfo: this.clientInfo(client), reason }), options)
  }

  /** result: the chain's result so far (EMQX: AuthResult == success / ok). */
  onClientAuthenticate(client: ClientInput, result: boolean, options: CallOptions = {}): Promise<ExhookValuedResponse> {
    return this.call('OnClientAuthenticate', this.withMeta({ clientinfo: this.clientInfo(client), result }), options)
  }

  /**
   * client.authorize (v2/v3: OnClientAuthorize) or client.check_acl (v1: OnClientCheckAcl).
   * result: the chain's result so far (allow = true).
   */
  onClientAuthorize(
    client: ClientInput,
    type: 'PUBLISH' | 'SUBSCRIBE',
    topic: string,
    result: boolean,
    options: CallOptions = {}
  ): Promise<ExhookValuedResponse> {
    const rpc = this.version === 'v1' ? 'OnClientCheckAcl' : 'OnClientAuthorize'
    return this.call(rpc, this.withMeta({ clientinfo: this.clientInfo(client), type, topic, result }), options)
  }

  /** The v1 name of onClientAuthorize. */
  onClientCheckAcl(client: ClientInput, type: 'PUBLISH' | 'SUBSCRIBE', topic: string, result: boolean, options: CallOptions = {}): Promise<ExhookValuedResponse> {
    return this.onClientAuthorize(client, type, topic, result, options)
  }

  onClientSubscribe(
    client: ClientInput,
    topicFilters: TopicFilterInput[],
    extra: CallOptions & { props?: Properties; userProps?: Record<string, string> } = {}
  ): Promise<Record<string, never>> {
    return this.call(
      'OnClientSubscribe',
      this.withMeta({
        clientinfo: this.clientInfo(client),
        ...this.props(extra.props, extra.userProps),
        topic_filters: topicFilters.map((tf) => this.topicFilter(tf))
      }),
      extra
    )
  }

  onClientUnsubscribe(
    client: ClientInput,
    topicFilters: TopicFilterInput[],
    extra: CallOptions & { props?: Properties; userProps?: Record<string, string> } = {}
  ): Promise<Record<string, never>> {
    return this.call(
      'OnClientUnsubscribe',
      this.withMeta({
        clientinfo: this.clientInfo(client),
        ...this.props(extra.props, extra.userProps),
        topic_filters: topicFilters.map((tf) => this.topicFilter(tf))
      }),
      extra
    )
  }

  onSessionCreated(client: ClientInput, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnSessionCreated', this.withMeta({ clientinfo: this.clientInfo(client) }), options)
  }

  /** v2 (5.4+)/v3: a shared subscription arrives whole, '$share/group/topic'. */
  onSessionSubscribed(client: ClientInput, topic: string, subopts: SubOptsInput = {}, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnSessionSubscribed', this.withMeta({ clientinfo: this.clientInfo(client), topic, subopts: this.subOpts(subopts) }), options)
  }

  onSessionUnsubscribed(client: ClientInput, topic: string, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnSessionUnsubscribed', this.withMeta({ clientinfo: this.clientInfo(client), topic }), options)
  }

  onSessionResumed(client: ClientInput, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnSessionResumed', this.withMeta({ clientinfo: this.clientInfo(client) }), options)
  }

  onSessionDiscarded(client: ClientInput, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnSessionDiscarded', this.withMeta({ clientinfo: this.clientInfo(client) }), options)
  }

  /** session.takenover (v2/v3: OnSessionTakenover) or session.takeovered (v1: OnSessionTakeovered). */
  onSessionTakenover(client: ClientInput, options: CallOptions = {}): Promise<Record<string, never>> {
    const rpc = this.version === 'v1' ? 'OnSessionTakeovered' : 'OnSessionTakenover'
    return this.call(rpc, this.withMeta({ clientinfo: this.clientInfo(client) }), options)
  }

  /** reason: stringfy(Reason), e.g. 'normal', 'takenover', 'kicked', 'discarded', 'expired'. */
  onSessionTerminated(client: ClientInput, reason: string, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnSessionTerminated', this.withMeta({ clientinfo: this.clientInfo(client), reason }), options)
  }

  /**
   * message.publish. EMQX never calls it for '$SYS/' topics. The answer's `message` (when the value is
   * 'message') replaces qos/topic/payload; headers.allow_publish "false" drops the message.
   */
  onMessagePublish(
    message: MessageInput,
    extra: CallOptions & { props?: Properties; userProps?: Record<string, string> } = {}
  ): Promise<ExhookValuedResponse> {
    const request: Record<string, unknown> = { message: this.message(message) }
    if (this.version === 'v3') Object.assign(request, this.props(extra.props, extra.userProps))
    return this.call('OnMessagePublish', this.withMeta(request), extra)
  }

  onMessageDelivered(client: ClientInput, message: MessageInput, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnMessageDelivered', this.withMeta({ clientinfo: this.clientInfo(client), message: this.message(message) }), options)
  }

  onMessageAcked(client: ClientInput, message: MessageInput, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnMessageAcked', this.withMeta({ clientinfo: this.clientInfo(client), message: this.message(message) }), options)
  }

  /** reason: stringfy(Reason), e.g. 'no_subscribers'. */
  onMessageDropped(message: MessageInput, reason: string, options: CallOptions = {}): Promise<Record<string, never>> {
    return this.call('OnMessageDropped', this.withMeta({ message: this.message(message), reason }), options)
  }

  /** Any rpc of this version with a request built by hand. */
  call<Response>(rpc: string, request: object, options: CallOptions = {}): Promise<Response> {
    const method = this.service[rpc]
    if (!method) return Promise.reject(new Error(`ExHook ${this.version} has no rpc ${rpc}`))
    const deadline = Date.now() + (options.deadlineMs ?? this.deadlineMs)
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        (buffer: Buffer) => method.responseDeserialize(buffer) as Response,
        request,
        new grpc.Metadata(),
        { deadline },
        (error, response) => {
          if (error) reject(error)
          else resolve(response as Response)
        }
      )
    })
  }
}

/** emqx_sys:uptime() in 4.x: "H hours, M minutes, S seconds", leading zero units omitted. */
function uptimeText(ms: number): string {
  let seconds = Math.floor(ms / 1000)
  const days = Math.floor(seconds / 86400)
  seconds -= days * 86400
  const hours = Math.floor(seconds / 3600)
  seconds -= hours * 3600
  const minutes = Math.floor(seconds / 60)
  seconds -= minutes * 60
  const parts: string[] = []
  if (days) parts.push(`${days} days`)
  if (days || hours) parts.push(`${hours} hours`)
  if (days || hours || minutes) parts.push(`${minutes} minutes`)
  parts.push(`${seconds} seconds`)
  return parts.join(', ')
}

/** emqx_sys:datetime(): the node's local time, "YYYY-MM-DD HH:MM:SS" (UTC here). */
function localDatetime(date: Date): string {
  return date.toISOString().slice(0, 19).replace('T', ' ')
}
