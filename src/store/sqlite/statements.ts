/**
 * The SQL behind each store mutation and each load query, prepared once per connection. Both
 * the main thread (load) and the writer thread (commits) use these.
 */
import type Database from 'better-sqlite3'
import type { Mutation } from '../store.js'

export type Statements = ReturnType<typeof prepareStatements>

export function prepareStatements(db: Database.Database) {
  return {
    putDevice: db.prepare('INSERT INTO devices (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc'),
    putSession: db.prepare('INSERT INTO sessions (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc'),
    deleteSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    putTopic: db.prepare(
      `INSERT INTO topics (session_id, topic, qos, rh, rap, nl, sub_id, persistent) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT(session_id, topic) DO UPDATE SET qos = excluded.qos, rh = excluded.rh, rap = excluded.rap,
         nl = excluded.nl, sub_id = excluded.sub_id, persistent = excluded.persistent`
    ),
    deleteTopic: db.prepare('DELETE FROM topics WHERE session_id = ? AND topic = ?'),
    clearTopics: db.prepare('DELETE FROM topics WHERE session_id = ?'),
    putRetained: db.prepare('INSERT INTO retained (topic, packet) VALUES (?, ?) ON CONFLICT(topic) DO UPDATE SET packet = excluded.packet'),
    deleteRetained: db.prepare('DELETE FROM retained WHERE topic = ?'),
    putOutgoing: db.prepare(
      'INSERT INTO outgoing (client_id, seq, packet) VALUES (?, ?, ?) ON CONFLICT(client_id, seq) DO UPDATE SET packet = excluded.packet'
    ),
    deleteOutgoing: db.prepare('DELETE FROM outgoing WHERE client_id = ? AND seq = ?'),
    clearOutgoing: db.prepare('DELETE FROM outgoing WHERE client_id = ?'),
    putIncoming: db.prepare(
      'INSERT INTO incoming (client_id, message_id, packet) VALUES (?, ?, ?) ON CONFLICT(client_id, message_id) DO UPDATE SET packet = excluded.packet'
    ),
    deleteIncoming: db.prepare('DELETE FROM incoming WHERE client_id = ? AND message_id = ?'),
    clearIncoming: db.prepare('DELETE FROM incoming WHERE client_id = ?'),
    putWill: db.prepare('INSERT INTO wills (client_id, packet) VALUES (?, ?) ON CONFLICT(client_id) DO UPDATE SET packet = excluded.packet'),
    deleteWill: db.prepare('DELETE FROM wills WHERE client_id = ?'),
    putJournal: db.prepare('INSERT INTO publish_journal (seq, packet) VALUES (?, ?) ON CONFLICT(seq) DO UPDATE SET packet = excluded.packet'),
    deleteJournal: db.prepare('DELETE FROM publish_journal WHERE seq = ?'),
    allDevices: db.prepare('SELECT doc FROM devices'),
    allSessions: db.prepare('SELECT doc FROM sessions'),
    allTopics: db.prepare('SELECT * FROM topics'),
    allRetained: db.prepare('SELECT topic, packet FROM retained'),
    allOutgoing: db.prepare('SELECT client_id, seq, packet FROM outgoing ORDER BY client_id, seq'),
    allIncoming: db.prepare('SELECT client_id, message_id, packet FROM incoming'),
    allWills: db.prepare('SELECT client_id, packet FROM wills'),
    allJournal: db.prepare('SELECT seq, packet FROM publish_journal ORDER BY seq')
  }
}

const flag = (value: boolean | undefined): number | null => (value === undefined ? null : value ? 1 : 0)

export function applyMutation(s: Statements, m: Mutation): void {
  switch (m.op) {
    case 'device.put':
      s.putDevice.run(m.device.id, JSON.stringify(m.device))
      return
    case 'session.put':
      s.putSession.run(m.session.id, JSON.stringify(m.session))
      return
    case 'session.delete':
      s.deleteSession.run(m.id)
      return
    case 'topic.put': {
      const sub = m.subscription
      s.putTopic.run(
        m.sessionId, sub.topic, sub.qos, sub.rh ?? null, flag(sub.rap), flag(sub.nl), sub.subscriptionIdentifier ?? null, m.persistent ? 1 : 0
      )
      return
    }
    case 'topic.delete':
      s.deleteTopic.run(m.sessionId, m.topic)
      return
    case 'topic.clear':
      s.clearTopics.run(m.sessionId)
      return
    case 'retained.put':
      s.putRetained.run(m.topic, m.packet)
      return
    case 'retained.delete':
      s.deleteRetained.run(m.topic)
      return
    case 'outgoing.put':
      s.putOutgoing.run(m.clientId, m.seq, m.packet)
      return
    case 'outgoing.delete':
      s.deleteOutgoing.run(m.clientId, m.seq)
      return
    case 'outgoing.clear':
      s.clearOutgoing.run(m.clientId)
      return
    case 'incoming.put':
      s.putIncoming.run(m.clientId, m.messageId, m.packet)
      return
    case 'incoming.delete':
      s.deleteIncoming.run(m.clientId, m.messageId)
      return
    case 'incoming.clear':
      s.clearIncoming.run(m.clientId)
      return
    case 'will.put':
      s.putWill.run(m.clientId, m.packet)
      return
    case 'will.delete':
      s.deleteWill.run(m.clientId)
      return
    case 'journal.put':
      s.putJournal.run(m.seq, m.packet)
      return
    case 'journal.delete':
      s.deleteJournal.run(m.seq)
      return
  }
}
