/**
 * The rows a batch's decisions read, as a StoredView — and, as each decision's changes are
 * folded in, what the next decision of the same batch reads: so two decisions about one client
 * in one batch see each other, as they would one transaction apart.
 */
import type { Device } from '../domain/device.js'
import type { SessionRecord } from '../domain/session.js'
import type { SubscriptionEntity } from '../domain/subscription.js'
import type { LoggedChange } from './change-log.js'
import { isChange } from './change-log.js'
import { NO_ENTITIES, NO_TOPICS, type StoredProperty, type StoredSession, type StoredTopicEntry, type StoredView } from './decision.js'
import type { Mutation } from './store.js'

export interface MutableSession {
  session: StoredSession['session']
  topics: Map<string, StoredTopicEntry>
  entities: Map<string, SubscriptionEntity>
  lastIncarnation: string | undefined
  lastEndedAt?: number
}

const propertyKey = (deviceId: string, name: string): string => JSON.stringify([deviceId, name])

export class StoredState implements StoredView {
  private readonly sessions = new Map<string, MutableSession>()
  private readonly devices = new Map<string, Device | undefined>()
  private readonly properties = new Map<string, StoredProperty | undefined>()
  /** deviceId → its sessions by id, for the devices a decision named in `deviceSessions`. */
  private readonly deviceSessions = new Map<string, Map<string, SessionRecord>>()

  /** Records what is stored of a client id (all of it: a client with no rows is given with none). */
  putSession(clientId: string, stored: MutableSession): void {
    this.sessions.set(clientId, stored)
  }

  putDevice(id: string, device: Device | undefined): void {
    this.devices.set(id, device)
  }

  putProperty(deviceId: string, name: string, property: StoredProperty | undefined): void {
    this.properties.set(propertyKey(deviceId, name), property)
  }

  putDeviceSessions(deviceId: string, sessions: readonly SessionRecord[]): void {
    this.deviceSessions.set(deviceId, new Map(sessions.map((s) => [s.id, s])))
  }

  sessionsOfDevice(deviceId: string): readonly SessionRecord[] {
    const sessions = this.deviceSessions.get(deviceId)
    if (!sessions) throw new Error(`decision read the sessions of device ${JSON.stringify(deviceId)} without naming it in its reads`)
    return [...sessions.values()]
  }

  session(clientId: string): StoredSession {
    const stored = this.sessions.get(clientId)
    if (!stored) throw new Error(`decision read session ${JSON.stringify(clientId)} without naming it in its reads`)
    return stored
  }

  device(id: string): Device | undefined {
    if (!this.devices.has(id)) throw new Error(`decision read device ${JSON.stringify(id)} without naming it in its reads`)
    return this.devices.get(id)
  }

  property(deviceId: string, name: string): StoredProperty | undefined {
    const key = propertyKey(deviceId, name)
    if (!this.properties.has(key)) throw new Error(`decision read property ${name} of ${JSON.stringify(deviceId)} without naming it in its reads`)
    return this.properties.get(key)
  }

  /** Folds a decision's mutations in, for the decisions after it in the batch. */
  apply(mutations: readonly Mutation[]): void {
    for (const m of mutations) if (isChange(m)) this.applyChange(m)
  }

  private applyChange(m: LoggedChange): void {
    switch (m.op) {
      case 'device.put':
        if (this.devices.has(m.device.id)) this.devices.set(m.device.id, m.device)
        return
      case 'device.delete':
        if (this.devices.has(m.id)) this.devices.set(m.id, undefined)
        // its properties go with it
        for (const key of this.properties.keys()) if ((JSON.parse(key) as [string, string])[0] === m.id) this.properties.set(key, undefined)
        return
      case 'device.property': {
        const key = propertyKey(m.deviceId, m.name)
        if (this.properties.has(key)) this.properties.set(key, { value: m.value, updatedAt: m.updatedAt })
        return
      }
      case 'session.put':
        this.foldDeviceSession(m.session.id, m.session)
        return this.withSession(m.session.id, (s) => (s.session = m.session))
      case 'session.version':
        return this.withSession(m.id, (s) => {
          if (s.session) s.session = { ...s.session, version: m.version }
        })
      case 'session.delete':
        this.foldDeviceSession(m.id, undefined)
        return this.withSession(m.id, (s) => {
          s.session = undefined
          if (m.incarnation !== undefined) {
            s.lastIncarnation = m.incarnation
            s.lastEndedAt = Date.now()
          }
        })
      case 'topic.put':
        return this.withSession(m.sessionId, (s) => s.topics.set(m.subscription.topic, { subscription: m.subscription, persistent: m.persistent }))
      case 'topic.delete':
        return this.withSession(m.sessionId, (s) => s.topics.delete(m.topic))
      case 'topic.clear':
        return this.withSession(m.sessionId, (s) => s.topics.clear())
      case 'subscription.put':
        return this.withSession(m.subscription.sessionId, (s) => s.entities.set(m.subscription.brokerTopic, m.subscription))
      case 'subscription.delete':
        return this.sessions.forEach((s) => {
          for (const [topic, e] of s.entities) if (e.id === m.id) s.entities.delete(topic)
        })
      case 'subscription.clear':
        return this.withSession(m.sessionId, (s) => s.entities.clear())
    }
  }

  /** A session put or ended: the device lists read in this batch follow it. */
  private foldDeviceSession(sessionId: string, session: SessionRecord | undefined): void {
    for (const [deviceId, sessions] of this.deviceSessions) {
      if (session?.deviceId === deviceId) sessions.set(sessionId, session)
      else sessions.delete(sessionId)
    }
  }

  private withSession(clientId: string, change: (s: MutableSession) => void): void {
    const s = this.sessions.get(clientId)
    if (s) change(s)
  }
}

/** A client id with nothing stored. */
export function nothingStored(lastIncarnation?: string): StoredSession {
  return { session: undefined, topics: NO_TOPICS, entities: NO_ENTITIES, lastIncarnation }
}
