/**
 * One EMQX hook call in the hub's terms, whichever transport brought it (ExHook gRPC, WebHook
 * v4 or v5), and the one place that hands it to EmqxSource — so every transport applies the
 * same rules and answers only once the effect is durable.
 */
import type { TopicSubscription } from '../domain/session.js'
import type { ApplyResult } from '../registry/registry.js'
import type { EmqxClient } from './emqx-client.js'
import type { EmqxSource, PublishVerdict } from './emqx-source.js'

export type HookCall =
  | { hook: 'client.connected'; client: EmqxClient }
  | { hook: 'client.disconnected'; client: EmqxClient; reason: string }
  | { hook: 'session.subscribed'; client: EmqxClient; subscriptions: TopicSubscription[] }
  | { hook: 'session.unsubscribed'; client: EmqxClient; topics: string[] }
  | { hook: 'session.terminated'; client: EmqxClient; reason: string }
  | { hook: 'message.publish'; from: string; topic: string; payload: Buffer }

/** What the caller (EMQX) is answered: whether the call was applied and why not — not the session it left — or a publish's verdict. */
export type HookOutcome = { applied: true } | { applied: false; why: string } | { publish: PublishVerdict }

const APPLIED: HookOutcome = { applied: true }

function answer(result: ApplyResult): HookOutcome {
  return result.applied ? APPLIED : result
}

export async function applyHookCall(source: EmqxSource, call: HookCall): Promise<HookOutcome> {
  switch (call.hook) {
    case 'client.connected':
      return answer(await source.connected(call.client))
    case 'client.disconnected':
      return answer(await source.disconnected(call.client, call.reason))
    case 'session.subscribed':
      return answer(await source.subscribed(call.client, call.subscriptions))
    case 'session.unsubscribed':
      return answer(await source.unsubscribed(call.client, call.topics))
    case 'session.terminated': {
      const ended = await source.sessionTerminated(call.client, call.reason)
      return ended ? APPLIED : { applied: false, why: 'no offline session to end' }
    }
    case 'message.publish':
      return { publish: await source.published(call.from, call.topic, call.payload) }
  }
}
