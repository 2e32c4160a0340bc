/**
 * The PostgreSQL schema: the same tables as the SQLite store's (../sqlite/schema.ts), placed in
 * a PostgreSQL schema of the operator's choosing (`public` unless told), so several hubs — or
 * test runs — can share one database without seeing each other's rows.
 *
 * Types are picked to give back exactly what was stored:
 * - documents (devices, sessions, subscription entities, property values) are `json`, not
 *   `jsonb`: `json` keeps the text JSON.stringify wrote — key order included — whereas `jsonb`
 *   reorders keys and refuses strings holding `\u0000` or a lone surrogate, which a device's
 *   telemetry may well contain and which the SQLite store keeps;
 * - packets are `bytea`; sequence numbers and epoch milliseconds `bigint`;
 * - key columns compare and sort in the "C" collation, byte by byte like SQLite's BINARY, so
 *   `load()` orders rows as the SQLite store does whatever the database's locale.
 *
 * `schema_version` holds one row: the version below, which `open()` checks and records.
 */
import pg from 'pg'
import { IN_ORDER_PUSHES } from '../in-order-pushes.js'

/**
 * 1: the first PostgreSQL schema; its tables hold what SQLite schema version 2 holds (the two
 * backends number their versions apart, as their migrations are their own).
 * 2: the change log (`change_log`, numbered through `log_head`), the incarnations of ended
 * sessions (`session_tombstones`), the replicas' own rows (`replicas`) and their leases, for several replicas
 * on one database. Version 1 databases gain the tables in place; their log starts empty.
 * 3: leases carry the reason a run was asked for and the holder's note of its last run; log
 * entries name the replica run that committed them;
 * tombstones are found by age (an index on ended_at). Earlier versions gain them in place.
 * 4: what the fleet is listed and searched by are columns of their own, indexed (see
 * fleet-queries.ts): a session's device, protocol, state, node, username, peer address, clean
 * start, protocol version, creation and connection times, and when it expires; a subscription
 * entity's device. Version 3 tables gain them in place, filled from each row's `doc`.
 * 5: `log_head` also holds how many sessions and topic rows are stored as of its entry (see
 * fleetCountColumns): the fleet's totals are one row's read. Version 4 stores count them once,
 * in place.
 * 6: device tokens stored as keyed hashes (`tokenHash`, src/domain/secret.ts) under a key of the
 * store's own (`store_keys`), never in plain text. Earlier stores gain the key, and the tokens in
 * their devices and their change log are hashed in place (token-upgrade.ts). Devices gain the
 * columns they are listed by (owner, group, name), owner and group indexed (fleet-queries.ts).
 * 7: the rest of the fleet's totals are stored like the sessions' (see fleetCountColumns):
 * `log_head.devices` and `log_head.subscriptions`, and connected sessions by protocol and node
 * (`connected_totals`). Version 6 stores count them once, in place.
 * 8: pushes stored with their change until the broker routed them (`push_journal`, see
 * devices/push-journal.ts). Version 7 stores gain the table, empty.
 * 9: the journal's pushes a device takes in order indexed by topic (`push_journal_in_order`,
 * ../in-order-pushes.ts). Version 8 stores gain the index.
 */
export const SCHEMA_VERSION = 9

export const TABLE_NAMES = [
  'schema_version',
  'devices',
  'device_properties',
  'sessions',
  'subscriptions',
  'topics',
  'retained',
  'outgoing',
  'incoming',
  'wills',
  'publish_journal',
  'push_journal',
  'session_tombstones',
  'change_log',
  'log_head',
  'connected_totals',
  'replicas',
  'leases',
  'store_keys'
] as const

export type TableName = (typeof TABLE_NAMES)[number]

/** Each table's name, schema-qualified and quoted, ready to put in SQL. */
export type QualifiedTables = Record<TableName, string>

export function qualifiedTables(schema: string): QualifiedTables {
  const prefix = `${pg.escapeIdentifier(schema)}.`
  return Object.fromEntries(TABLE_NAMES.map((name) => [name, prefix + pg.escapeIdentifier(name)])) as QualifiedTables
}

/** The DDL of every table, each statement idempotent; run by `open()` in one transaction. */
export function createTableStatements(t: QualifiedTables): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t.schema_version} (
       singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
       version   integer NOT NULL
     )`,

    `CREATE TABLE IF NOT EXISTS ${t.devices} (
       id  text COLLATE "C" PRIMARY KEY,
       doc json NOT NULL
     )`,
    // What devices are listed by (version 6): copies of the document's fields, written with it
    // (batch-statements.ts) and filled by the upgrade (token-upgrade.ts) — not expressions on
    // `doc`, which PostgreSQL cannot read as text once it holds a \u0000 anywhere. NOT NULL
    // once filled (token-upgrade.ts). By owner and by group, each one index range in id order.
    `ALTER TABLE ${t.devices} ADD COLUMN IF NOT EXISTS owner text COLLATE "C"`,
    `ALTER TABLE ${t.devices} ADD COLUMN IF NOT EXISTS group_name text COLLATE "C"`,
    `ALTER TABLE ${t.devices} ADD COLUMN IF NOT EXISTS name text COLLATE "C"`,
    `CREATE INDEX IF NOT EXISTS devices_by_owner ON ${t.devices} (owner, id)`,
    `CREATE INDEX IF NOT EXISTS devices_by_group ON ${t.devices} (group_name, id)`,

    // A session's version changes on every subscribe and unsubscribe: it is a column of its
    // own, written alone, and overrides the (then stale) `version` inside `doc` at load.
    `CREATE TABLE IF NOT EXISTS ${t.sessions} (
       id      text COLLATE "C" PRIMARY KEY,
       doc     json NOT NULL,
       version bigint NOT NULL
     )`,
    ...sessionListingColumns(t),


    // One row per device property (attributes, telemetry, connectinfo, …), so writers of
    // different properties never overwrite each other's.
    `CREATE TABLE IF NOT EXISTS ${t.device_properties} (
       device_id  text COLLATE "C" NOT NULL,
       name       text COLLATE "C" NOT NULL,
       value      json NOT NULL,
       updated_at bigint NOT NULL,
       PRIMARY KEY (device_id, name)
     )`,

    `CREATE TABLE IF NOT EXISTS ${t.subscriptions} (
       id         text COLLATE "C" PRIMARY KEY,
       session_id text COLLATE "C" NOT NULL,
       doc        json NOT NULL
     )`,
    `CREATE INDEX IF NOT EXISTS subscriptions_by_session ON ${t.subscriptions} (session_id)`,
    // whom a push reaches: the entities of one device, one index range
    `ALTER TABLE ${t.subscriptions} ADD COLUMN IF NOT EXISTS device_id text COLLATE "C"`,
    `UPDATE ${t.subscriptions} SET device_id = doc->>'deviceId' WHERE device_id IS NULL`,
    `ALTER TABLE ${t.subscriptions} ALTER COLUMN device_id SET NOT NULL`,
    `CREATE INDEX IF NOT EXISTS subscriptions_by_device ON ${t.subscriptions} (device_id, id)`,

    // A session's topics and the embedded broker's subscriptions are these same rows.
    `CREATE TABLE IF NOT EXISTS ${t.topics} (
       session_id text COLLATE "C" NOT NULL,
       topic      text COLLATE "C" NOT NULL,
       qos        integer NOT NULL,
       rh         integer,
       rap        boolean,
       nl         boolean,
       sub_id     integer,
       persistent boolean NOT NULL,
       PRIMARY KEY (session_id, topic)
     )`,
    // held until the schema is recorded: the totals of versions 5 and 7 (fleetCountColumns)
    // count what is stored with no batch under way; taken before any lock a batch waits on at
    // its end (change_log, log_head), so a batch of an older replica still running finishes first
    `LOCK TABLE ${t.devices}, ${t.sessions}, ${t.subscriptions}, ${t.topics} IN SHARE MODE`,

    `CREATE TABLE IF NOT EXISTS ${t.retained} (
       topic  text COLLATE "C" PRIMARY KEY,
       packet bytea NOT NULL
     )`,

    `CREATE TABLE IF NOT EXISTS ${t.outgoing} (
       client_id text COLLATE "C" NOT NULL,
       seq       bigint NOT NULL,
       packet    bytea NOT NULL,
       PRIMARY KEY (client_id, seq)
     )`,

    `CREATE TABLE IF NOT EXISTS ${t.incoming} (
       client_id  text COLLATE "C" NOT NULL,
       message_id integer NOT NULL,
       packet     bytea NOT NULL,
       PRIMARY KEY (client_id, message_id)
     )`,

    `CREATE TABLE IF NOT EXISTS ${t.wills} (
       client_id text COLLATE "C" PRIMARY KEY,
       packet    bytea NOT NULL
     )`,

    `CREATE TABLE IF NOT EXISTS ${t.publish_journal} (
       seq    bigint PRIMARY KEY,
       packet bytea NOT NULL
     )`,

    // Pushes stored with their change until the broker routed them (src/devices/push-journal.ts),
    // keyed by the run of the replica that stored them.
    `CREATE TABLE IF NOT EXISTS ${t.push_journal} (
       run     text COLLATE "C" NOT NULL,
       seq     bigint NOT NULL,
       topic   text NOT NULL,
       payload bytea NOT NULL,
       qos     smallint NOT NULL,
       at      bigint NOT NULL,
       PRIMARY KEY (run, seq)
     )`,
    // The pushes a device takes in order, by topic and age (../in-order-pushes.ts)
    `CREATE INDEX IF NOT EXISTS push_journal_in_order ON ${t.push_journal} (topic, at) WHERE ${IN_ORDER_PUSHES}`,

    // The incarnation of the last session of a client id that ended, so a late connect of an
    // older connection is refused by whichever replica it reaches. Pruned by age.
    `CREATE TABLE IF NOT EXISTS ${t.session_tombstones} (
       client_id   text COLLATE "C" PRIMARY KEY,
       incarnation text NOT NULL,
       ended_at    bigint NOT NULL
     )`,
    `CREATE INDEX IF NOT EXISTS session_tombstones_by_age ON ${t.session_tombstones} (ended_at)`,

    // Every committed change, in commit order: a batch takes the next numbers from log_head's
    // one row, whose lock it holds until it commits, so numbers are handed out in commit order
    // and without gaps (see change-log.ts).
    `CREATE TABLE IF NOT EXISTS ${t.change_log} (
       seq     bigint PRIMARY KEY,
       at      bigint NOT NULL,
       change  json NOT NULL,
       replica text
     )`,
    `ALTER TABLE ${t.change_log} ADD COLUMN IF NOT EXISTS replica text`,
    `CREATE TABLE IF NOT EXISTS ${t.log_head} (
       singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
       seq       bigint NOT NULL
     )`,
    // not ON CONFLICT: the row is formed before the conflict is found, and version 5's totals
    // (NOT NULL, filled below) would refuse it
    `INSERT INTO ${t.log_head} (seq) SELECT 0 WHERE NOT EXISTS (SELECT FROM ${t.log_head})`,
    ...fleetCountColumns(t),

    // Each running replica: who it is and how far it has followed the log.
    `CREATE TABLE IF NOT EXISTS ${t.replicas} (
       node         text COLLATE "C" PRIMARY KEY,
       address      text,
       started_at   bigint NOT NULL,
       last_seen    bigint NOT NULL,
       log_position bigint NOT NULL
     )`,

    // Work that one replica at a time runs (see ../coordination.ts).
    `CREATE TABLE IF NOT EXISTS ${t.leases} (
       name         text COLLATE "C" PRIMARY KEY,
       holder       text NOT NULL,
       expires_at   bigint NOT NULL,
       done_at      bigint,
       requested_at   bigint,
       request_reason text,
       note           json
     )`,
    `ALTER TABLE ${t.leases} ADD COLUMN IF NOT EXISTS request_reason text`,
    `ALTER TABLE ${t.leases} ADD COLUMN IF NOT EXISTS note json`,

    // The key of the device tokens' hashes: one row, 'token', made by the first replica to open
    // the store (token-upgrade.ts), read by every one.
    `CREATE TABLE IF NOT EXISTS ${t.store_keys} (
       name text COLLATE "C" PRIMARY KEY,
       key  bytea NOT NULL
     )`
  ]
}

/**
 * Schema version 4's columns of `sessions`: copies of what its `doc` says, written with it
 * (batch-statements.ts), which listings filter on. Added to version 3 tables and filled from
 * `doc` in place. `expires_at` is when an offline persistent session is due to end
 * (disconnectedAt + expiryInterval s, as domain/session.ts `expiresAt`), NULL for the others.
 *
 * Indexes: a selective filter (device, node, username, peer address) is one range of its index,
 * walked in id order, so a keyset page reads about as many entries as it returns. The
 * expiry sweep reads the partial index of sessions that can expire. Unselective filters
 * (connected, protocol, clean start, protocol version) and the time ranges walk the primary key
 * and skip what does not match: with half the fleet connected a page reads about two rows per
 * row listed (1.4–9 ms a page at a million, fleet-queries.ts); more indexes would cost every
 * connect and disconnect. A filter matching few rows that no index serves (a substring, a rare
 * protocol version) walks far: measured there too.
 */
function sessionListingColumns(t: QualifiedTables): string[] {
  const columns: [string, string, boolean, string][] = [
    // name, type, NOT NULL, its value in doc
    ['device_id', 'text COLLATE "C"', true, `doc->>'deviceId'`],
    ['protocol', 'text COLLATE "C"', true, `doc->>'protocol'`],
    ['connected', 'boolean', true, `(doc->>'connected')::boolean`],
    ['node', 'text COLLATE "C"', true, `doc->>'node'`],
    ['username', 'text COLLATE "C"', false, `doc->>'username'`],
    ['peer_host', 'text COLLATE "C"', false, `doc->>'peerHost'`],
    ['clean_start', 'boolean', true, `(doc->>'cleanStart')::boolean`],
    ['proto_ver', 'integer', true, `(doc->>'protoVer')::integer`],
    ['created_at', 'bigint', true, `(doc->>'createdAt')::bigint`],
    ['connected_at', 'bigint', true, `(doc->>'connectedAt')::bigint`],
    [
      'expires_at',
      'bigint',
      false,
      `CASE WHEN NOT (doc->>'connected')::boolean AND NOT (doc->>'cleanStart')::boolean AND doc->>'disconnectedAt' IS NOT NULL
         THEN (doc->>'disconnectedAt')::bigint + (doc->>'expiryInterval')::bigint * 1000 END`
    ]
  ]
  return [
    ...columns.map(([name, type]) => `ALTER TABLE ${t.sessions} ADD COLUMN IF NOT EXISTS ${name} ${type}`),
    // rows written before version 4 (every one of them has a device; no row since lacks one)
    `UPDATE ${t.sessions} SET ${columns.map(([name, , , value]) => `${name} = ${value}`).join(', ')} WHERE device_id IS NULL`,
    ...columns.filter(([, , notNull]) => notNull).map(([name]) => `ALTER TABLE ${t.sessions} ALTER COLUMN ${name} SET NOT NULL`),
    `CREATE INDEX IF NOT EXISTS sessions_by_device ON ${t.sessions} (device_id, id)`,
    `CREATE INDEX IF NOT EXISTS sessions_by_node ON ${t.sessions} (node, id)`,
    `CREATE INDEX IF NOT EXISTS sessions_by_username ON ${t.sessions} (username, id)`,
    `CREATE INDEX IF NOT EXISTS sessions_by_peer_host ON ${t.sessions} (peer_host, id)`,
    `CREATE INDEX IF NOT EXISTS sessions_due ON ${t.sessions} (expires_at, id) WHERE expires_at IS NOT NULL`
  ]
}

/**
 * The fleet's stored totals: how many rows `sessions`, `topics` (version 5), `devices` and
 * `subscriptions` (version 7) hold as of the log's last entry, in `log_head`, and how many stored
 * sessions are connected, by protocol and node (version 7), in `connected_totals`. Every batch
 * that adds or removes such rows, or connects or disconnects a session, logs it, so it already
 * takes `log_head`'s row lock to append its entries (log-statements.ts), and moves the totals by
 * what its own statements did in that same statement (batch-statements.ts counts it from their
 * results): exact under any number of replicas, at no extra lock or round trip. Reading them is
 * one row and a few (fleet-queries.ts), where counting reads the fleet — a second of PostgreSQL's
 * work at a million.
 *
 * `connected_totals` has a row per (protocol, node) ever seen connected since the last recount,
 * kept at 0 once none is: its rows are locked only after `log_head`'s, so batches never wait on
 * each other there.
 *
 * An older store counts its rows once, here, with the tables locked against writers (SHARE,
 * taken earlier in createTableStatements: a batch under way commits first, none starts until the
 * upgrade commits), so a replica of the older build still writing then is counted exactly; one
 * still writing *after* the upgrade does not move the totals, so stop older replicas before
 * starting this build (docs/emqx-mode.md, "Running several replicas"). Offset pages rely on the
 * totals too (fleet-queries.ts walks from the nearer end). `recountFleet` puts them right again,
 * with writers held off.
 */
function fleetCountColumns(t: QualifiedTables): string[] {
  const totals = ['sessions', 'topics', 'devices', 'subscriptions']
  const missing = totals.map((c) => `${c} IS NULL`).join(' OR ')
  return [
    ...totals.map((c) => `ALTER TABLE ${t.log_head} ADD COLUMN IF NOT EXISTS ${c} bigint`),
    `CREATE TABLE IF NOT EXISTS ${t.connected_totals} (
       protocol text COLLATE "C" NOT NULL,
       node     text COLLATE "C" NOT NULL,
       sessions bigint NOT NULL,
       PRIMARY KEY (protocol, node)
     )`,
    // counted when log_head's are (an upgrade that adds any of them), before they are filled below
    recountConnected(t, `EXISTS (SELECT FROM ${t.log_head} WHERE ${missing})`),
    `${recountRows(t)} WHERE ${missing}`,
    ...totals.map((c) => `ALTER TABLE ${t.log_head} ALTER COLUMN ${c} SET NOT NULL`)
  ]
}

/** log_head's totals set to what the tables hold; a WHERE may follow. */
function recountRows(t: QualifiedTables): string {
  return (
    `UPDATE ${t.log_head} SET sessions = (SELECT count(*) FROM ${t.sessions}), topics = (SELECT count(*) FROM ${t.topics}), ` +
    `devices = (SELECT count(*) FROM ${t.devices}), subscriptions = (SELECT count(*) FROM ${t.subscriptions})`
  )
}

/**
 * `connected_totals` set to what `sessions` holds, when `when` holds: rows of protocols and nodes
 * no longer connected go.
 */
function recountConnected(t: QualifiedTables, when = 'true'): string {
  const counted = `SELECT protocol, node, count(*) AS n FROM ${t.sessions} WHERE connected AND ${when} GROUP BY protocol, node`
  return (
    `WITH counted AS MATERIALIZED (${counted}), ` +
    `gone AS (DELETE FROM ${t.connected_totals} c WHERE ${when} AND NOT EXISTS (SELECT FROM counted WHERE counted.protocol = c.protocol AND counted.node = c.node)) ` +
    `INSERT INTO ${t.connected_totals} (protocol, node, sessions) SELECT protocol, node, n FROM counted ` +
    'ON CONFLICT (protocol, node) DO UPDATE SET sessions = excluded.sessions'
  )
}

/**
 * Sets every stored total to what the tables hold (reading all of them): for rows written other
 * than by the store's batches, such as the scale bench's fill, or to repair them. Concurrent
 * batches must be held off (a lock, or none running) for the count to be exact. Two statements,
 * to run in this order in one transaction (log_head's row first, as batches lock it).
 */
export function recountFleet(t: QualifiedTables): string[] {
  return [recountRows(t), recountConnected(t)]
}
