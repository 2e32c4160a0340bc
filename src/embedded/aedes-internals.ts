/**
 * Every reach into Aedes past its documented API, in one place: the hub needs a few of its
 * fields that are public in its JavaScript but absent from (or private in) its types. aedes is
 * pinned to an exact version in package.json, and test/embedded/aedes-internals.test.ts pins
 * each behaviour relied on here against a real broker, so an upgrade that changes one fails
 * there, naming the function, rather than somewhere in a lifecycle test.
 *
 * Only this file touches these fields; everything else calls the functions below.
 */
import type { EventEmitter } from 'node:events'
import type { Aedes, Client, PublishPacket } from 'aedes'
import mqemitter, { type MQEmitter } from 'mqemitter'

/** Aedes' table of connected clients by id (`aedes.clients`): a client is in it from its CONNACK to its close. */
export function connectedClient(aedes: Aedes, clientId: string): Client | undefined {
  return (aedes as Aedes & { clients: Record<string, Client | undefined> }).clients[clientId]
}

/** Whether the client sent DISCONNECT (`client._disconnected`, set by Aedes' disconnect handler before the socket closes). */
export function sentDisconnect(client: Client): boolean {
  return (client as Client & { _disconnected?: boolean })._disconnected === true
}

/**
 * The client's subscriptions as Aedes holds them (`client.subscriptions`): broker topic →
 * granted QoS. Aedes adds a topic once its SUBSCRIBE is handled and deletes it on UNSUBSCRIBE.
 */
export function subscriptionsOf(client: Client): Record<string, { qos: number } | undefined> {
  return (client as Client & { subscriptions: Record<string, { qos: number } | undefined> }).subscriptions
}

/**
 * The client's MQTT parser (`client._parser`, an mqtt-packet parser): it emits `packet` for each
 * packet read, before Aedes handles it, so a listener prepended there sees (and may rewrite)
 * every packet first.
 */
export function packetParser(client: Client): EventEmitter {
  return (client as Client & { _parser: EventEmitter })._parser
}

/**
 * Resolves when Aedes' persistence already holds this incoming QoS 2 PUBLISH (same client and
 * message id: a re-send with DUP), rejects when it does not (`aedes.persistence.incomingGetPacket`).
 */
export function heldIncomingPacket(aedes: Aedes, client: Client, packet: PublishPacket): Promise<unknown> {
  const { persistence } = aedes as unknown as { persistence: { incomingGetPacket(c: Client, p: PublishPacket): Promise<unknown> } }
  return persistence.incomingGetPacket(client, packet)
}

/** How Aedes' own handlers call `aedes.publish`: with the sending client (null for the broker), unlike its typed `(packet, done)`. */
type RoutePublish = (packet: PublishPacket, client: Client | null, done: (error?: Error) => void) => void

/**
 * Makes `aedes.publish` — which every PUBLISH Aedes routes goes through, its clients' (called
 * with the client) and the broker's own (called with the callback second) — acknowledge without
 * routing each packet `skip` picks.
 */
export function skipRouting(aedes: Aedes, skip: (packet: PublishPacket) => boolean): void {
  const live = aedes as unknown as { publish: RoutePublish }
  const route = live.publish.bind(aedes)
  live.publish = (packet, client, done) => {
    if (!skip(packet)) return route(packet, client, done)
    const callback = typeof client === 'function' ? (client as (error?: Error) => void) : done
    callback?.()
  }
}

/** What mqemitter asks of its matcher (`mq._matcher`, a qlobber): the three calls it makes. */
export interface RouterMatcher {
  add(filter: string, value: unknown): void
  remove(filter: string, value?: unknown): void
  match(topic: string): unknown[]
}

/**
 * The router Aedes would make for itself (`opts.mq`: mqemitter with Aedes' concurrency, `+`
 * matching empty levels), with `matcher` in place of its qlobber (`_matcher`). mqemitter is the
 * version Aedes depends on, pinned with it; only `add`, `remove` and `match` are called on it.
 */
export function routerWith(matcher: RouterMatcher, concurrency = AEDES_CONCURRENCY): MQEmitter {
  const router = mqemitter({ concurrency, matchEmptyLevels: true })
  ;(router as MQEmitter & { _matcher: RouterMatcher })._matcher = matcher
  return router
}

/** Aedes' default `concurrency`, which it gives the router it makes. */
const AEDES_CONCURRENCY = 100
