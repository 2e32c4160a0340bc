/**
 * What a connection that comes with its broker's topics writes (src/registry/session-mutations.ts,
 * TopicChange `replace`): over a session holding topics and subscription entities — a clean-start
 * takeover the reconcile records — the old topics and entities go and the new ones come in the one
 * batch, the clear first, and the session's entry shows the new topics.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { newIncarnation } from '../../src/domain/incarnation.js'
import type { ConnectedEvent } from '../../src/domain/lifecycle-event.js'
import type { SessionRecord, TopicSubscription } from '../../src/domain/session.js'
import { subscriptionEntityOf, type SubscriptionEntity } from '../../src/domain/subscription.js'
import { transition } from '../../src/domain/transitions.js'
import { sessionMutations } from '../../src/registry/session-mutations.js'
import type { StoredSession } from '../../src/store/decision.js'

const connect = (at: number, subscriptions?: TopicSubscription[]): ConnectedEvent => ({
  kind: 'connected',
  clientId: 'c1',
  incarnation: newIncarnation('emqx@n1', at),
  at,
  protocol: 'mqtt',
  deviceId: 'd1',
  username: 'd1',
  mountpoint: 'd1/',
  node: 'emqx@n1',
  peerHost: '10.0.0.4',
  peerPort: at,
  sockPort: null,
  keepalive: 60,
  protoVer: 4,
  cleanStart: true,
  expiryInterval: 0,
  ...(subscriptions ? { subscriptions } : {})
})

describe("a connection with its broker's topics", () => {
  it('replaces the topics and entities a session held in one batch, the clear first', () => {
    const first = transition(undefined, connect(1000))
    assert.equal(first.outcome, 'applied')
    const held = (first.outcome === 'applied' ? first.session : null) as SessionRecord
    const attributes: TopicSubscription = { topic: 'd1/v1/devices/me/attributes', qos: 1 }
    const commands: TopicSubscription = { topic: 'd1/v1/devices/me/commands', qos: 1 }
    const entity = subscriptionEntityOf(held, 'alice', attributes.topic, 1000) as SubscriptionEntity
    const stored: StoredSession = {
      session: held,
      topics: new Map([[attributes.topic, { subscription: attributes, persistent: false }]]),
      entities: new Map([[attributes.topic, entity]]),
      lastIncarnation: undefined
    }

    const takeover = transition(held, connect(2000, [attributes, commands]))
    assert.ok(takeover.outcome === 'applied' && takeover.topics.kind === 'replace')
    const mutations = sessionMutations('c1', takeover, stored, () => 'alice', 2000)
    assert.deepEqual(
      mutations.map((m) => m.op),
      ['session.put', 'topic.clear', 'subscription.delete', 'topic.put', 'topic.put', 'subscription.put', 'subscription.put']
    )
    const [row] = mutations
    assert.deepEqual(row?.op === 'session.put' ? row.topics : undefined, [attributes, commands], 'the entry shows the topics after the change')
    assert.deepEqual(
      mutations.flatMap((m) => (m.op === 'subscription.put' ? [[m.subscription.id, m.subscription.owner, m.subscription.sessionId]] : [])),
      [
        [entity.id, 'alice', 'c1'],
        [subscriptionEntityOf(held, 'alice', commands.topic, 2000)!.id, 'alice', 'c1']
      ],
      "an entity for each topic, the attributes one under its id again: deleted, then put, in the batch's order"
    )
  })
})
