/**
 * A client's SUBSCRIBE: each topic is checked (inside the namespace, within the topic limits and
 * the session's subscription limit), and the topics of one packet are recorded as one
 * `subscribed` event — one durable write — before the SUBACK; a topic refused gets the SUBACK
 * failure code 0x80 while the others go on.
 */
import type { Client, Subscription } from 'aedes'
import { checkTopic } from '../../admission/topic-rules.js'
import { insideNamespace } from '../../domain/namespace.js'
import type { TopicSubscription } from '../../domain/session.js'
import type { TopicBook } from '../../registry/topic-book.js'
import { countDown, countUp } from './client-state.js'
import { isEmptyOnceUnmounted, type MqttContext } from './mqtt-context.js'

type Done = (error: Error | null, subscription?: Subscription | null) => void

/** One SUBSCRIBE's topics being gathered; `adding`: how many are new to the session. */
interface PendingSubscribe {
  subscriptions: TopicSubscription[]
  answers: ((stored: boolean) => void)[]
  adding: number
}

export class SubscribeHandler {
  private readonly pending = new Map<Client, PendingSubscribe>()

  constructor(private readonly ctx: MqttContext) {}

  /** Aedes' `authorizeSubscribe`, called topic by topic. */
  authorize(client: Client, sub: Subscription, done: Done): void {
    const { ctx } = this
    const { config, registry } = ctx.deps
    const state = ctx.clients.get(client)
    const namespace = state?.namespace
    if (namespace && isEmptyOnceUnmounted(namespace.mountpoint, sub.topic)) {
      ctx.reject('bad_topic', client, 'empty topic filter')
      return done(null, null)
    }
    if (namespace && !insideNamespace(namespace.mountpoint, sub.topic)) {
      ctx.reject('outside_namespace', client, `subscription to ${sub.topic} is outside the device's namespace`)
      return done(null, null)
    }
    const refusal = checkTopic(sub.topic, config)
    if (refusal) {
      ctx.reject(refusal.reason, client, refusal.message)
      return done(null, null) // SUBACK 0x80 for this topic; the others go on
    }
    if (!state?.incarnation) return done(null, null) // not (or no longer) a recorded connection
    // Aedes authorizes the topics of one SUBSCRIBE one by one, in one synchronous loop: they
    // are gathered here and recorded as one event, one durable write, before the SUBACK.
    let pending = this.pending.get(client)
    const leaving = state.unsubscribing
    const adds = !registry.topics.holds(client.id, sub.topic) || leaving?.has(sub.topic) === true
    if (adds) {
      const held = registry.topics.countOf(client.id) - countHeld(registry.topics, client.id, leaving) + (pending?.adding ?? 0)
      if (held >= config.maxSubscriptionsPerSession) {
        ctx.reject('too_many_subscriptions', client, `session holds ${held} topics, the most allowed is ${config.maxSubscriptionsPerSession}`)
        return done(null, null)
      }
    }
    if (!pending) {
      pending = { subscriptions: [], answers: [], adding: 0 }
      this.pending.set(client, pending)
      queueMicrotask(() => this.record(client))
    }
    const { topic, qos, rh, rap, nl } = sub
    // until Aedes has added it (its `subscribe` event): see unsubscribe.ts
    if (client.clean) countUp((state.subscribing ??= new Map<string, number>()), topic)
    if (adds) pending.adding++
    pending.subscriptions.push({ topic, qos, rh, rap, nl })
    pending.answers.push((stored) => done(null, stored ? sub : null))
  }

  /** Aedes' `subscribe` event: the topics are now in the client's subscriptions. */
  added(subscriptions: Subscription[], client: Client): void {
    const state = this.ctx.clients.get(client)
    const inFlight = state?.subscribing
    if (!inFlight) return
    for (const { topic } of subscriptions) countDown(inFlight, topic)
    // an empty map kept for the connection's life is heap every connected session pays for
    if (inFlight.size === 0) state.subscribing = undefined
  }

  /** Records the SUBSCRIBE gathered for `client` (at once, when an UNSUBSCRIBE must come after it). */
  record(client: Client): void {
    const pending = this.pending.get(client)
    if (!pending) return // already recorded (an UNSUBSCRIBE flushed it)
    const { subscriptions, answers } = pending
    this.pending.delete(client)
    const { ctx } = this
    const incarnation = ctx.clients.get(client)!.incarnation!
    ctx.track(ctx.deps.registry.apply({ kind: 'subscribed', clientId: client.id, incarnation, at: Date.now(), subscriptions })).then(
      (result) => answers.forEach((answer) => answer(result.applied)),
      (error: Error) => {
        ctx.deps.metrics.reject('store_unavailable')
        ctx.deps.log.error({ clientId: client.id, topics: subscriptions.map((s) => s.topic), err: error.message }, 'subscription refused: not stored')
        answers.forEach((answer) => answer(false))
      }
    )
  }
}

/** How many of `topics` the session holds. */
function countHeld(book: TopicBook, sessionId: string, topics: Map<string, number> | undefined): number {
  let n = 0
  if (topics) for (const topic of topics.keys()) if (book.holds(sessionId, topic)) n++
  return n
}
