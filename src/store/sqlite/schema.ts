/**
 * The SQLite schema. Entities whose shape grows with the product (devices, sessions) are kept
 * as JSON documents beside their key; the broker's state, read at start and written often, as
 * plain columns and blobs. `user_version` says which version a file has.
 */
export const SCHEMA_VERSION = 1

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (
  id  TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS sessions (
  id  TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) STRICT;

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
