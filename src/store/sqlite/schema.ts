/**
 * The SQLite schema. Entities whose shape grows with the product (devices, sessions) are kept
 * as JSON documents beside their key; the broker's state, read at start and written often, as
 * plain columns and blobs. `user_version` says which version a file has.
 */
/**
 * 2: subscription entities and device properties (tables added; version 1 files upgrade in place).
 * 3: the change log (`change_log`, numbered through `log_head`); version 2 files gain it empty.
 */
export const SCHEMA_VERSION = 3

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

-- Every committed change, in commit order (see src/store/change-log.ts). The one writer
-- numbers a batch's entries from log_head, in the batch's transaction.
CREATE TABLE IF NOT EXISTS change_log (
  seq    INTEGER PRIMARY KEY,
  at     INTEGER NOT NULL,
  change TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS log_head (
  singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
  seq       INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO log_head (singleton, seq) VALUES (1, 0);
`

/**
 * Version 1 → 2: device namespaces. Version 1 stored every session's topics as its client sent
 * them; version 2 stores the broker's, under the session's mountpoint `{deviceId}/` (see
 * src/domain/namespace.ts), so a persistent session resumed after the upgrade still matches
 * what its device publishes and is pushed. Topics beginning with `$` stay as they were.
 * (Retained messages, wills and queued messages keep their topics: nothing records whose
 * namespace a retained message was published in.) Only device ids that can name a namespace
 * (see DEVICE_ID_PATTERN) are mounted.
 */
export const MOUNT_VERSION_1_SESSIONS = `
CREATE TEMP TABLE mountable AS
  SELECT id, json_extract(doc, '$.deviceId') AS device_id FROM sessions
   WHERE json_extract(doc, '$.mountpoint') IS NULL
     AND length(json_extract(doc, '$.deviceId')) BETWEEN 1 AND 128
     AND json_extract(doc, '$.deviceId') NOT GLOB '*[^A-Za-z0-9._:@-]*';
UPDATE topics
   SET topic = (SELECT m.device_id FROM mountable m WHERE m.id = topics.session_id) || '/' || topic
 WHERE substr(topic, 1, 1) <> '$'
   AND session_id IN (SELECT id FROM mountable);
UPDATE sessions
   SET doc = json_set(doc, '$.mountpoint', (SELECT m.device_id FROM mountable m WHERE m.id = sessions.id) || '/')
 WHERE id IN (SELECT id FROM mountable);
-- a device id that cannot name a namespace (IOTHUB_AUTH=none let any username be one): left
-- unmounted; its client cannot log in under the new rules, so the session expires
UPDATE sessions SET doc = json_set(doc, '$.mountpoint', '') WHERE json_extract(doc, '$.mountpoint') IS NULL;
DROP TABLE mountable;
`
