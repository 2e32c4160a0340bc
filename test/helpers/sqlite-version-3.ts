/**
 * Turns a SQLite data file of today's schema back into what a version 3 hub wrote: sessions and
 * subscription entities as JSON documents beside their keys (the documents `JSON.stringify`
 * made of the records), `user_version` 3 — for the tests of the upgrades that start there.
 */
import type Database from 'better-sqlite3'
import { sessionOfRow, type ReadSessionRow } from '../../src/store/sqlite/session-columns.js'
import { FLEET_QUERIES } from '../../src/store/sqlite/statements.js'
import { subscriptionOfRow, type ReadSubscriptionRow } from '../../src/store/sqlite/subscription-columns.js'

export function rewriteAsVersion3(db: Database.Database): void {
  db.transaction(() => {
    // read as the hub's start reads them
    const rows = <Row>(sql: string) => (db.prepare(sql).pluck().all() as string[]).map((json) => JSON.parse(json) as Row)
    const sessions = rows<ReadSessionRow>(FLEET_QUERIES.sessions).map((r) => sessionOfRow(r))
    const entities = rows<ReadSubscriptionRow>(FLEET_QUERIES.subscriptions).map((r) => subscriptionOfRow(r))
    db.exec(`
      -- version 5's trigger (a device's properties deleted with it); its token key is kept, as
      -- the devices keep their hashed tokens (plain tokens upgraded: test/devices-tokens.test.ts)
      DROP TRIGGER device_properties_go_with_device;
      DROP TABLE sessions;
      CREATE TABLE sessions (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
      DROP TABLE subscriptions;
      CREATE TABLE subscriptions (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, doc TEXT NOT NULL) STRICT;
      CREATE INDEX subscriptions_by_session ON subscriptions (session_id);
    `)
    const session = db.prepare('INSERT INTO sessions (id, doc) VALUES (?, ?)')
    for (const s of sessions) session.run(s.id, JSON.stringify(s))
    const entity = db.prepare('INSERT INTO subscriptions (id, session_id, doc) VALUES (?, ?, ?)')
    for (const e of entities) entity.run(e.id, e.sessionId, JSON.stringify(e))
    db.pragma('user_version = 3')
  })()
}
