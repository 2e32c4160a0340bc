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

/**
 * 1: the first PostgreSQL schema; its tables hold what SQLite schema version 2 holds (the two
 * backends number their versions apart, as their migrations are their own).
 */
export const SCHEMA_VERSION = 1

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
  'publish_journal'
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

    // A session's version changes on every subscribe and unsubscribe: it is a column of its
    // own, written alone, and overrides the (then stale) `version` inside `doc` at load.
    `CREATE TABLE IF NOT EXISTS ${t.sessions} (
       id      text COLLATE "C" PRIMARY KEY,
       doc     json NOT NULL,
       version bigint NOT NULL
     )`,

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
     )`
  ]
}
