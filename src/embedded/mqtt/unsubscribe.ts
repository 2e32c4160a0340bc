/**
 * A client's UNSUBSCRIBE, recorded as an `unsubscribed` event: a persistent session's through
 * Aedes' persistence (before the UNSUBACK), a clean session's from Aedes' `unsubscribe` event.
 * Either way through the registry, so it is incarnation-checked: a late UNSUBSCRIBE of a
 * taken-over connection changes nothing.
 */
import type { Client } from 'aedes'
import type { SubscriptionWriter } from '../aedes-persistence.js'
import { subscriptionsOf } from '../aedes-internals.js'
import { countDown, countUp } from './client-state.js'
import type { MqttContext } from './mqtt-context.js'
import type { SubscribeHandler } from './subscribe.js'

export class UnsubscribeHandler {
  constructor(
    private readonly ctx: MqttContext,
    private readonly subscribe: SubscribeHandler
  ) {}

  /** Aedes' `unsubscribe` event. */
  removed(topics: string[], client: Client): void {
    // Persistent clients' UNSUBSCRIBEs were recorded before the UNSUBACK, by the writer below.
    // Aedes also "unsubscribes" everything of a closing client; the close itself ends those.
    if (!client.clean || client.closed) return
    // Aedes handles the packets of one read concurrently: an UNSUBSCRIBE can be done before
    // a SUBSCRIBE sent earlier (or later) in the same read adds its topic. Only what Aedes no
    // longer holds, and will not add, was unsubscribed.
    const inFlight = this.ctx.clients.get(client)?.subscribing
    const held = subscriptionsOf(client)
    const removed = topics.filter((t) => held[t] === undefined && !inFlight?.has(t))
    if (removed.length === 0) return
    this.record(client, removed).catch((error: Error) => this.ctx.deps.log.error({ clientId: client.id, err: error.message }, 'unsubscribe not stored'))
  }

  /** The Aedes persistence's subscription writes, routed through the registry. */
  writer(): SubscriptionWriter {
    return {
      // Already recorded topic by topic in subscribe.ts. Aedes passes the whole SUBSCRIBE
      // packet here, topics we refused included, so writing it would store those.
      add: async () => undefined,
      remove: (client, topics) => this.record(client as Client, topics),
      // A clean start: the `connected` event already discarded the old session's topics.
      clean: async () => undefined
    }
  }

  private async record(client: Client, topics: string[]): Promise<void> {
    const state = this.ctx.clients.get(client)
    const incarnation = state?.incarnation
    if (!incarnation) return
    this.subscribe.record(client) // a SUBSCRIBE that came first is recorded first
    // until recorded, these topics do not count against the session's limit (see subscribe.ts)
    const leaving = (state.unsubscribing ??= new Map<string, number>())
    for (const topic of topics) countUp(leaving, topic)
    try {
      await this.ctx.track(this.ctx.deps.registry.apply({ kind: 'unsubscribed', clientId: client.id, incarnation, at: Date.now(), topics }))
    } finally {
      for (const topic of topics) countDown(leaving, topic)
    }
  }
}
