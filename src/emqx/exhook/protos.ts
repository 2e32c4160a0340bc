/**
 * EMQX ExHook gRPC definitions, loaded from proto/exhook/{v1,v2,v3}/exhook.proto at the repo root.
 *
 * One protocol version per EMQX line (see each .proto's header for the source it follows):
 *   v1  emqx.exhook.v1  EMQX 4.3, 4.4   (OnClientCheckAcl, OnSessionTakeovered, BrokerInfo.uptime string)
 *   v2  emqx.exhook.v2  EMQX 5.0 - 5.8  (OnClientAuthorize, OnSessionTakenover)
 *   v3  emqx.exhook.v3  EMQX 5.9+       (v2 plus peerport and user_props)
 *
 * EMQX is the gRPC client and the hub the HookProvider server: a server registers
 * `exhookProtocol(v).service` with `server.addService`, a client (our tests' stand-in for EMQX)
 * instantiates `exhookProtocol(v).Client`.
 *
 * Loader options, and what the decoded JavaScript objects look like:
 *   keepCase: true   field names exactly as in the .proto (clientinfo, is_superuser, bool_result, ...)
 *   longs: String    64-bit integers (Message.timestamp uint64 and, in v2/v3, BrokerInfo.uptime int64,
 *                    both milliseconds) decode to decimal strings. They are lossless that way, and the
 *                    number type cannot silently round: protobufjs would turn a value above 2^53 into the
 *                    nearest double. EMQX's millisecond clocks do fit in a double, so a reader that wants
 *                    a number converts explicitly with `uint64ToNumber`, which refuses anything that
 *                    would round. Encoding accepts a number or a decimal string.
 *                    (ExHook's ClientInfo/ConnInfo carry no connected_at: those 64-bit times exist only in
 *                    the REST API, where they are JSON strings/numbers, not protobuf.)
 *   enums: String    enums decode to their names ('CONTINUE', 'STOP_AND_RETURN', 'PUBLISH', ...);
 *                    encoding accepts the name or the number.
 *   defaults: true   absent scalar fields decode to their proto3 default ('' / 0 / false / []), as
 *                    EMQX itself fills unset strings with '' (emqx_exhook_handler's maybe/option).
 *                    Fields inside a oneof are not defaulted.
 *   oneofs: true     ValuedResponse gets a virtual `value` key naming the member that is set
 *                    ('bool_result' or 'message').
 *   bytes            decode to Buffer (Message.payload).
 *
 * Paths are resolved from this module's own location up to the directory that holds proto/exhook, so
 * the same code works from src/ (tsx), from dist/ (tsconfig.build.json: rootDir src, outDir dist) and
 * from dist-bench/src/ (tsconfig.bench.json: rootDir ., outDir dist-bench). The proto/ directory has to
 * ship next to dist/ when the hub is deployed.
 */

import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'

export type ExhookVersion = 'v1' | 'v2' | 'v3'

export const EXHOOK_VERSIONS: readonly ExhookVersion[] = ['v1', 'v2', 'v3']

export const EXHOOK_PACKAGES: Readonly<Record<ExhookVersion, string>> = {
  v1: 'emqx.exhook.v1',
  v2: 'emqx.exhook.v2',
  v3: 'emqx.exhook.v3'
}

/** The EMQX lines that speak each version. */
export const EXHOOK_EMQX_RELEASES: Readonly<Record<ExhookVersion, string>> = {
  v1: '4.3.x, 4.4.x',
  v2: '5.0.x - 5.8.x',
  v3: '5.9.0 and later'
}

export const PROTO_LOADER_OPTIONS: Readonly<protoLoader.Options> = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true
}

/** The rpcs of a HookProvider, in the order the .proto declares them. */
export const EXHOOK_RPCS: Readonly<Record<ExhookVersion, readonly string[]>> = {
  v1: rpcList('OnClientCheckAcl', 'OnSessionTakeovered'),
  v2: rpcList('OnClientAuthorize', 'OnSessionTakenover'),
  v3: rpcList('OnClientAuthorize', 'OnSessionTakenover')
}

/**
 * Hook point name (as a LoadedResponse's HookSpec.name) to the rpc EMQX calls for it.
 * v1 names two hooks differently: client.check_acl and session.takeovered.
 */
export const EXHOOK_HOOK_RPCS: Readonly<Record<ExhookVersion, Readonly<Record<string, string>>>> = {
  v1: hookRpcs('client.check_acl', 'OnClientCheckAcl', 'session.takeovered', 'OnSessionTakeovered'),
  v2: hookRpcs('client.authorize', 'OnClientAuthorize', 'session.takenover', 'OnSessionTakenover'),
  v3: hookRpcs('client.authorize', 'OnClientAuthorize', 'session.takenover', 'OnSessionTakenover')
}

export interface ExhookProtocol {
  readonly version: ExhookVersion
  /** 'emqx.exhook.v1' ... */
  readonly packageName: string
  /** Absolute path of the .proto file. */
  readonly protoPath: string
  readonly packageDefinition: protoLoader.PackageDefinition
  /** For `server.addService(service, implementation)`. */
  readonly service: grpc.ServiceDefinition
  /** `new Client('host:port', grpc.credentials.createInsecure())`. */
  readonly Client: grpc.ServiceClientConstructor
  readonly rpcs: readonly string[]
}

const loaded = new Map<ExhookVersion, ExhookProtocol>()

/** The loaded definitions of one ExHook version (loaded once, then cached). */
export function exhookProtocol(version: ExhookVersion): ExhookProtocol {
  const cached = loaded.get(version)
  if (cached) return cached
  if (!EXHOOK_VERSIONS.includes(version)) throw new Error(`unknown ExHook version ${String(version)}`)
  const protoPath = path.join(exhookProtoRoot(), version, 'exhook.proto')
  const packageDefinition = protoLoader.loadSync(protoPath, { ...PROTO_LOADER_OPTIONS })
  const packageName = EXHOOK_PACKAGES[version]
  const Client = serviceConstructor(grpc.loadPackageDefinition(packageDefinition), `${packageName}.HookProvider`)
  const protocol: ExhookProtocol = {
    version,
    packageName,
    protoPath,
    packageDefinition,
    service: Client.service,
    Client,
    rpcs: Object.keys(Client.service)
  }
  loaded.set(version, protocol)
  return protocol
}

/** Service definition for `server.addService`. */
export function exhookServiceDefinition(version: ExhookVersion): grpc.ServiceDefinition {
  return exhookProtocol(version).service
}

/** Client constructor (as `grpc.loadPackageDefinition` builds it). */
export function exhookClientConstructor(version: ExhookVersion): grpc.ServiceClientConstructor {
  return exhookProtocol(version).Client
}

/**
 * A uint64/int64 as decoded with `longs: String` (or a number) to a JavaScript number; throws when the
 * value is not an integer that a double holds exactly.
 */
export function uint64ToNumber(value: string | number): number {
  const n = typeof value === 'number' ? value : Number(value)
  if (!Number.isSafeInteger(n) || (typeof value === 'string' && !/^-?\d+$/.test(value))) {
    throw new RangeError(`64-bit value ${String(value)} is not a safe integer`)
  }
  return n
}

/** Directory holding v1/, v2/ and v3/ (proto/exhook at the repo root). */
export function exhookProtoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = path.join(dir, 'proto', 'exhook')
    if (existsSync(path.join(candidate, 'v1', 'exhook.proto'))) return candidate
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error(`proto/exhook not found above ${path.dirname(fileURLToPath(import.meta.url))}`)
    dir = parent
  }
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (as decoded with PROTO_LOADER_OPTIONS). Fields a version lacks are optional here.

export interface ExhookProperty {
  name: string
  value: string
}

export interface ExhookRequestMeta {
  node: string
  version: string
  sysdescr: string
  cluster_name: string
}

export interface ExhookBrokerInfo {
  version: string
  sysdescr: string
  /** v1: human readable string; v2/v3: int64 milliseconds, as a decimal string once decoded. */
  uptime: string | number
  datetime: string
}

export interface ExhookConnInfo {
  node: string
  clientid: string
  username: string
  peerhost: string
  sockport: number
  proto_name: string
  proto_ver: string
  keepalive: number
  /** v3 only */
  peerport?: number
}

export interface ExhookClientInfo {
  node: string
  clientid: string
  username: string
  password: string
  peerhost: string
  sockport: number
  protocol: string
  mountpoint: string
  is_superuser: boolean
  anonymous: boolean
  cn: string
  dn: string
  /** v3 only */
  peerport?: number
}

export interface ExhookMessage {
  node: string
  id: string
  qos: number
  from: string
  topic: string
  payload: Buffer | Uint8Array
  /** uint64 milliseconds: a decimal string once decoded; a number or string when encoding. */
  timestamp: string | number
  headers: Record<string, string>
}

export interface ExhookSubOpts {
  qos: number
  /** v1 only (v2/v3 reserve field 2; the share group is in the topic) */
  share?: string
  rh: number
  rap: number
  nl: number
}

export interface ExhookTopicFilter {
  name: string
  /** v1 only (v2/v3 reserve field 2) */
  qos?: number
  /** v2/v3 only */
  subopts?: ExhookSubOpts
}

export interface ExhookHookSpec {
  name: string
  topics: string[]
}

export interface ExhookLoadedResponse {
  hooks: ExhookHookSpec[]
}

export type ExhookResponsedType = 'CONTINUE' | 'IGNORE' | 'STOP_AND_RETURN'

export interface ExhookValuedResponse {
  type: ExhookResponsedType
  /** Which member of the oneof is set (decoded responses only). */
  value?: 'bool_result' | 'message'
  bool_result?: boolean
  message?: ExhookMessage
}

// ---------------------------------------------------------------------------------------------

function rpcList(authorizeRpc: string, takenoverRpc: string): readonly string[] {
  return [
    'OnProviderLoaded',
    'OnProviderUnloaded',
    'OnClientConnect',
    'OnClientConnack',
    'OnClientConnected',
    'OnClientDisconnected',
    'OnClientAuthenticate',
    authorizeRpc,
    'OnClientSubscribe',
    'OnClientUnsubscribe',
    'OnSessionCreated',
    'OnSessionSubscribed',
    'OnSessionUnsubscribed',
    'OnSessionResumed',
    'OnSessionDiscarded',
    takenoverRpc,
    'OnSessionTerminated',
    'OnMessagePublish',
    'OnMessageDelivered',
    'OnMessageDropped',
    'OnMessageAcked'
  ]
}

function hookRpcs(authorizeHook: string, authorizeRpc: string, takenoverHook: string, takenoverRpc: string): Record<string, string> {
  return {
    'client.connect': 'OnClientConnect',
    'client.connack': 'OnClientConnack',
    'client.connected': 'OnClientConnected',
    'client.disconnected': 'OnClientDisconnected',
    'client.authenticate': 'OnClientAuthenticate',
    [authorizeHook]: authorizeRpc,
    'client.subscribe': 'OnClientSubscribe',
    'client.unsubscribe': 'OnClientUnsubscribe',
    'session.created': 'OnSessionCreated',
    'session.subscribed': 'OnSessionSubscribed',
    'session.unsubscribed': 'OnSessionUnsubscribed',
    'session.resumed': 'OnSessionResumed',
    'session.discarded': 'OnSessionDiscarded',
    [takenoverHook]: takenoverRpc,
    'session.terminated': 'OnSessionTerminated',
    'message.publish': 'OnMessagePublish',
    'message.delivered': 'OnMessageDelivered',
    'message.dropped': 'OnMessageDropped',
    'message.acked': 'OnMessageAcked'
  }
}

function serviceConstructor(root: grpc.GrpcObject, qualifiedName: string): grpc.ServiceClientConstructor {
  let node: grpc.GrpcObject | grpc.ServiceClientConstructor | grpc.ProtobufTypeDefinition | undefined = root
  for (const part of qualifiedName.split('.')) {
    if (node === undefined || typeof node === 'function' || isTypeDefinition(node)) break
    node = node[part]
  }
  if (typeof node !== 'function' || !('service' in node)) throw new Error(`service ${qualifiedName} missing from the loaded .proto`)
  return node
}

function isTypeDefinition(value: grpc.GrpcObject | grpc.ProtobufTypeDefinition): value is grpc.ProtobufTypeDefinition {
  return typeof value.format === 'string' && 'type' in value
}
