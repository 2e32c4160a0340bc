/**
 * The registry's caches change their own records in place where an event changes nothing but a
 * version (a subscribe, an unsubscribe) or what an ended connection is remembered by (a
 * tombstone): fewer objects per event outlive the scavenges. What must not follow from it: a
 * record that anyone else holds — the change-log entry the event stream renders, possibly late,
 * or what the carrier was answered — changing after the fact. Here a real registry over a real
 * SQLite store, wired as the hub wires it (decisions from the caches, the caches following the
 * change log).
 */
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { pino } from 'pino'
import { newIncarnation } from '../../src/domain/incarnation.js'
import type { ConnectedEvent, LifecycleEvent } from '../../src/domain/lifecycle-event.js'
import { eventOf } from '../../src/events/from-log.js'
import { HubMetrics } from '../../src/observability/metrics.js'
import { cacheApplier } from '../../src/registry/cache-applier.js'
import { SessionRegistry } from '../../src/registry/registry.js'
import { SubscriptionBook } from '../../src/registry/subscription-book.js'
import { TopicBook } from '../../src/registry/topic-book.js'
import { cacheDecider } from '../../src/store/cache-decider.js'
import type { LogEntry } from '../../src/store/change-log.js'
import { openTestStore } from '../helpers/sqlite-store.js'

/** A registry on a fresh SQLite store as the hub composes it, and every change-log entry its caches were handed, as handed. */
async function registryOnStore(t: Parameters<typeof openTestStore>[0]) {
  const store = await openTestStore(t, 'iothub-cached-records-')
  const registry: SessionRegistry = new SessionRegistry(
    cacheDecider(store, { session: (id) => registry.cachedSession(id), device: () => undefined, property: () => undefined, sessionsOfDevice: () => [] }),
    new TopicBook(),
    new SubscriptionBook(),
    () => '',
    new HubMetrics({ processMetrics: false }),
    pino({ level: 'silent' })
  )
  const apply = cacheApplier({ registry, devices: { applyChange: () => undefined }, properties: { applyChange: () => undefined } })
  const entries: LogEntry[] = []
  store.follow(0, (batch, origin) => {
    entries.push(...batch)
    apply(batch, origin)
  })
  return { registry, entries }
}

function connected(clientId: string, incarnation: string): ConnectedEvent {
  return {
    kind: 'connected',
    clientId,
    incarnation,
    at: Date.now(),
    protocol: 'mqtt',
    deviceId: clientId,
    username: null,
    mountpoint: `${clientId}/`,
    node: 'n1',
    peerHost: '127.0.0.1',
    peerPort: 40_000,
    sockPort: 1883,
    keepalive: 60,
    protoVer: 4,
    cleanStart: true,
    expiryInterval: 0
  }
}

const subscribed = (clientId: string, incarnation: string): LifecycleEvent => ({
  kind: 'subscribed',
  clientId,
  incarnation,
  at: Date.now(),
  subscriptions: [{ topic: `${clientId}/v1/devices/me/attributes`, qos: 1 }]
})

const disconnected = (clientId: string, incarnation: string): LifecycleEvent => ({
  kind: 'disconnected',
  clientId,
  incarnation,
  at: Date.now(),
  reason: 'client_disconnect'
})

test('a subscribe bumps the cached record in place; the connect’s entry, its event rendered late, and its answer keep version 1', async (t) => {
  const { registry, entries } = await registryOnStore(t)
  const incarnation = newIncarnation('n1')
  const connect = await registry.apply(connected('c1', incarnation))
  assert.ok(connect.applied && connect.after)
  const cached = registry.record('c1')
  assert.equal(cached?.version, 1)

  const subscribe = await registry.apply(subscribed('c1', incarnation))
  assert.ok(subscribe.applied)
  assert.equal(registry.record('c1')?.version, 2, 'the caches show the version the subscribe stored')
  assert.equal(registry.record('c1'), cached, 'the cached record was changed in place, not replaced')

  // what others were handed before the subscribe is as it was then
  assert.equal(connect.after.version, 1, 'what the connect answered its carrier')
  const connectEntry = entries.find((e) => e.change.op === 'session.put')
  assert.ok(connectEntry)
  const event = eventOf(connectEntry, { node: 'n1', owner: () => '' })
  assert.equal(event?.type, 'session.connected')
  assert.equal((event as { session: { version: number } }).session.version, 1, 'a consumer rendering the connect after the subscribe sees the connect')
  // and a version change's own: one more change later, what the subscribe left is as it was
  const unsubscribe = await registry.apply({ kind: 'unsubscribed', clientId: 'c1', incarnation, at: Date.now(), topics: ['c1/v1/devices/me/attributes'] })
  assert.ok(unsubscribe.applied)
  assert.equal(registry.record('c1')?.version, 3)
  assert.ok(subscribe.applied && subscribe.after)
  assert.equal(subscribe.after.version, 2, 'what the subscribe answered its carrier')
  const versions = entries.filter((e) => e.change.op === 'session.version').map((e) => (eventOf(e, { node: 'n1', owner: () => '' }) as { session: { version: number } }).session.version)
  assert.deepEqual(versions, [2, 3], 'each version change rendered late shows its own version')
})

test('a client that comes and goes is remembered by its last connection: a late connect of an earlier one stays ended', async (t) => {
  const { registry } = await registryOnStore(t)
  const base = Date.now()
  // three connections in the order they were made; the middle one's connect arrives last of all
  const [first, middle, last] = [0, 1, 2].map((i) => newIncarnation('n1', base + i))
  for (const incarnation of [first!, last!]) {
    assert.ok((await registry.apply(connected('c2', incarnation))).applied)
    assert.ok((await registry.apply(disconnected('c2', incarnation))).applied)
  }
  assert.equal(registry.record('c2'), undefined)
  const late = await registry.apply(connected('c2', middle!))
  assert.equal(late.applied, false, 'a connect older than the last ended connection does not bring the session back')
  assert.equal(registry.record('c2'), undefined)
  // and the newest connection ended is the one a repeated end is told apart by
  const again = await registry.apply(connected('c2', newIncarnation('n1', base + 3)))
  assert.ok(again.applied, 'a newer connection is a session again')
})
