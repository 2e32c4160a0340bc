/**
 * What a consumer of GET /v1/events rebuilds from the stream alone — sessions and subscription
 * entities — and how it differs from what the API lists.
 */
import assert from 'node:assert/strict'
import type { ApiCall } from './api-client.js'

interface Topic {
  topic: string
  brokerTopic: string
  qos: number
}
export interface ApiSession {
  id: string
  deviceId: string
  connected: boolean
  topics: Topic[]
  [field: string]: unknown
}
export interface ApiSubscription {
  id: string
  sessionId: string
  [field: string]: unknown
}
export interface StreamEvent {
  seq: number
  type: string
  deviceId: string
  owner: string
  session?: ApiSession | null
  subscription?: ApiSubscription | null
  subscriptionId?: string
}

/** What a consumer knows after applying every event it got: sessions and subscription entities. */
export function rebuild(events: readonly StreamEvent[]): { sessions: Map<string, ApiSession>; subscriptions: Map<string, ApiSubscription> } {
  const sessions = new Map<string, ApiSession>()
  const subscriptions = new Map<string, ApiSubscription>()
  for (const e of events) {
    switch (e.type) {
      case 'session.connected':
      case 'session.disconnected':
      case 'session.subscribed':
      case 'session.unsubscribed':
        sessions.set(e.session!.id, e.session!)
        break
      case 'session.ended':
        sessions.delete(e.session!.id)
        break
      case 'subscription.created':
        subscriptions.set(e.subscription!.id, e.subscription!)
        break
      case 'subscription.deleted':
        subscriptions.delete(e.subscriptionId!)
        break
    }
  }
  return { sessions, subscriptions }
}

export async function listAll<T extends { id: string }>(api: ApiCall, path: string): Promise<T[]> {
  const all: T[] = []
  let cursor: string | null = null
  do {
    const { status, body }: { status: number; body: { data: T[]; next: string | null } } = await api('GET', `${path}?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    assert.equal(status, 200)
    all.push(...body.data)
    cursor = body.next
  } while (cursor)
  return all
}

const sortedTopics = (s: ApiSession) => ({ ...s, topics: [...s.topics].sort((a, b) => (a.brokerTopic < b.brokerTopic ? -1 : 1)) })

/** The differences between what the stream rebuilt and what the API lists, one line each. */
export function mismatches(rebuilt: ReturnType<typeof rebuild>, sessions: ApiSession[], subscriptions: ApiSubscription[]): string[] {
  const out: string[] = []
  const listed = new Map(sessions.map((s) => [s.id, s]))
  for (const [id, s] of rebuilt.sessions) {
    const l = listed.get(id)
    if (!l) out.push(`session ${id}: in the stream, not listed`)
    else if (JSON.stringify(sortedTopics(s)) !== JSON.stringify(sortedTopics(l))) out.push(`session ${id}: stream ${JSON.stringify(s)} ≠ listed ${JSON.stringify(l)}`)
  }
  for (const id of listed.keys()) if (!rebuilt.sessions.has(id)) out.push(`session ${id}: listed, not in the stream`)
  const listedSubs = new Map(subscriptions.map((s) => [s.id, s]))
  for (const [id, s] of rebuilt.subscriptions) {
    const l = listedSubs.get(id)
    if (!l) out.push(`subscription ${id}: in the stream, not listed`)
    else if (JSON.stringify(s) !== JSON.stringify(l)) out.push(`subscription ${id}: stream ${JSON.stringify(s)} ≠ listed ${JSON.stringify(l)}`)
  }
  for (const id of listedSubs.keys()) if (!rebuilt.subscriptions.has(id)) out.push(`subscription ${id}: listed, not in the stream`)
  return out
}

