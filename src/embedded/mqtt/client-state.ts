/**
 * What the MQTT source knows of each Aedes client, from its CONNECT to its close: the one
 * per-client state every packet's handler (connect.ts, subscribe.ts, …) reads and writes.
 */
import type { Identity } from '../../admission/admission-policy.js'
import type { DisconnectReason } from '../../domain/session.js'

/** Whose topics a connection uses, decided from its CONNECT as it is parsed (see connect.ts). */
export interface Namespace {
  /** Who the CONNECT claims to be (verified by `authenticate`), or why it cannot be anyone. */
  identity: Identity
  mountpoint: string
}

export interface ClientState {
  namespace: Namespace
  clientIdGiven: boolean
  keepalive: number
  protoVer: number
  peerHost: string | null
  peerPort: number | null
  sockPort: number | null
  /** Set once `connected` is recorded; events of this connection carry it. */
  incarnation?: string
  /** Why it ended, when something told us before the socket closed. */
  endReason?: DisconnectReason
  /** Lets the next connect of the same clientId proceed. */
  release?: () => void
  /** Settles once this connection's end is recorded. */
  ended?: Promise<void>
  /** Clean sessions: topics of SUBSCRIBEs authorized but not yet added by Aedes (see subscribe.ts). */
  subscribing?: Map<string, number>
  /** Topics of UNSUBSCRIBEs not yet recorded: no longer held, as far as the subscription limit goes. */
  unsubscribing?: Map<string, number>
  /** The will's broker topic, if the CONNECT carries a will. */
  willTopic?: string
  /** Whether the CONNACK says "session present": the hub kept this client's session for it. */
  sessionPresent?: boolean
}

/** Counts a key once more (topics in flight may repeat within one read). */
export function countUp(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1)
}

export function countDown(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 0) - 1
  if (left > 0) counts.set(key, left)
  else counts.delete(key)
}
