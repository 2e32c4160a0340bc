/**
 * The SQLite schema. Entities whose shape grows with the product (devices, sessions) are kept
 * as JSON documents beside their key; the broker's state, read at start and written often, as
 * plain columns and blobs. `user_version` says which version a file has.
 */
/** 2: subscription entities and device properties (tables added; version 1 files upgrade in place). */
export const SCHEMA_VERSION = 2

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (
  id  TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS sessions (
  id  TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) STRICT;

-- One row per device property (attributes, telemetry, connectinfo, …), so writers of
-- different properties never overwrite each other's.
CREATE TABLE IF NOT EXISTS device_properties (
  device_id  TEXT NOT NULL,
  name       TEXT NOT NULL,
  value      TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (device_id, name)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS subscriptions (
  id         TEXT PRIMARY KEY,
  session_id TEXT NOT NULL,
  doc        TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS subscriptions_by_session ON subscriptions (session_id);

-- A session's topics and the embedded broker's subscriptions are these same rows.
CREATE TABLE IF NOT EXISTS topics (
  session_id TEXT NOT NULL,
  topic      TEXT NOT NULL,
  qos        INTEGER NOT NULL,
  rh         INTEGER,
  rap        INTEGER,
  nl         INTEGER,
  sub_id     INTEGER,
  persistent INTEGER NOT NULL,
  PRIMARY KEY (session_id, topic)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS retained (
  topic  TEXT PRIMARY KEY,
  packet BLOB NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS outgoing (
  client_id TEXT NOT NULL,
  seq       INTEGER NOT NULL,
  packet    BLOB NOT NULL,
  PRIMARY KEY (client_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS incoming (
  client_id  TEXT NOT NULL,
  message_id INTEGER NOT NULL,
  packet     BLOB NOT NULL,
  PRIMARY KEY (client_id, message_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS wills (
  client_id TEXT PRIMARY KEY,
  packet    BLOB NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS publish_journal (
  seq    INTEGER PRIMARY KEY,
  packet BLOB NOT NULL
) STRICT;
`
