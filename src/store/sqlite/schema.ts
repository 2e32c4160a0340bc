/**
 * The SQLite schema. Devices, whose shape grows with the product, are kept as JSON documents
 * beside their key; sessions, subscription entities and the broker's state — a million rows
 * each, read whole at every start — as plain columns and blobs, which are read without parsing.
 * `user_version` says which version a file has.
 */
/**
 * 2: subscription entities and device properties (tables added; version 1 files upgrade in place).
 * 3: the change log (`change_log`, numbered through `log_head`); version 2 files gain it empty.
 * 4: sessions and subscription entities as columns (UPGRADE_TO_4), what a subscription entity
 *    derives from its other fields not stored.
 * 5: device tokens stored as keyed hashes (`tokenHash`, src/domain/secret.ts) under a key of the
 *    file's own (`store_keys`), never in plain text; a device's properties deleted with it.
 *    Older files gain the key, and their tokens — in `devices` and in the change log — are
 *    hashed in place (HASH_PLAIN_TOKENS), so their devices log in as before.
 * 6: the change log one row per committed batch, its entries counted in `entries` (log-rows.ts).
 *    Older files' rows hold one entry each and gain the column as 1 (LOG_ROW_ENTRIES).
 */
import { IN_ORDER_PUSHES } from '../in-order-pushes.js'

export const SCHEMA_VERSION = 6

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS devices (
  id  TEXT PRIMARY KEY,
  doc TEXT NOT NULL
) STRICT;

-- The key of the device tokens' hashes (src/domain/secret.ts), made with the file or at its
-- upgrade to version 5 (sqlite-store.ts): one row, 'token'.
CREATE TABLE IF NOT EXISTS store_keys (
  name TEXT PRIMARY KEY,
  key  BLOB NOT NULL
) STRICT;

-- A SessionRecord (src/domain/session.ts), a column a field; booleans 0 or 1.
CREATE TABLE IF NOT EXISTS sessions (
  id                TEXT PRIMARY KEY,
  protocol          TEXT NOT NULL,
  client_id         TEXT NOT NULL,
  device_id         TEXT NOT NULL,
  username          TEXT,
  mountpoint        TEXT NOT NULL,
  node              TEXT NOT NULL,
  peer_host         TEXT,
  peer_port         INTEGER,
  sock_port         INTEGER,
  keepalive         INTEGER NOT NULL,
  proto_ver         INTEGER NOT NULL,
  clean_start       INTEGER NOT NULL,
  expiry_interval   INTEGER NOT NULL,
  connected         INTEGER NOT NULL,
  created_at        INTEGER NOT NULL,
  connected_at      INTEGER NOT NULL,
  disconnected_at   INTEGER,
  disconnect_reason TEXT,
  incarnation       TEXT NOT NULL,
  version           INTEGER NOT NULL
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
-- a device's properties go with it (device.delete deletes only its row)
CREATE TRIGGER IF NOT EXISTS device_properties_go_with_device AFTER DELETE ON devices
BEGIN
  DELETE FROM device_properties WHERE device_id = old.id;
END;

-- A SubscriptionEntity (src/domain/subscription.ts) without its constant fields (type, source,
-- mode); properties comma separated. NULL broker_topic and filter: what subscription-columns.ts
-- derives from the other columns, as the entity was made.
CREATE TABLE IF NOT EXISTS subscriptions (
  id           TEXT PRIMARY KEY,
  session_id   TEXT NOT NULL,
  device_id    TEXT NOT NULL,
  owner        TEXT NOT NULL,
  topic        TEXT NOT NULL,
  broker_topic TEXT,
  properties   TEXT NOT NULL,
  filter       TEXT,
  created_at   INTEGER NOT NULL
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

-- Pushes stored with their change until the broker routed them (src/devices/push-journal.ts),
-- keyed by the run that stored them. Added without a new version: every open creates the tables
-- a file lacks, and an older hub leaves this one alone. WITHOUT ROWID: each push is written and
-- removed in one B-tree, not in a table and its key's index.
CREATE TABLE IF NOT EXISTS push_journal (
  run     TEXT NOT NULL,
  seq     INTEGER NOT NULL,
  topic   TEXT NOT NULL,
  payload BLOB NOT NULL,
  qos     INTEGER NOT NULL,
  at      INTEGER NOT NULL,
  PRIMARY KEY (run, seq)
) STRICT, WITHOUT ROWID;

-- The pushes a device takes in order, by topic and age (../in-order-pushes.ts).
CREATE INDEX IF NOT EXISTS push_journal_in_order ON push_journal (topic, at) WHERE ${IN_ORDER_PUSHES};

-- Every committed change, in commit order (see src/store/change-log.ts). The one writer
-- numbers a batch's entries from log_head, in the batch's transaction, and appends them as one
-- row (log-rows.ts), its entries numbered seq - entries + 1 … seq.
CREATE TABLE IF NOT EXISTS change_log (
  seq     INTEGER PRIMARY KEY,
  at      INTEGER NOT NULL,
  entries INTEGER NOT NULL DEFAULT 1,
  change  TEXT NOT NULL
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

/**
 * Version 3, 4 or 5 → 6: the change log's rows, one entry each until now, say so. (Version 1 and 2
 * files have no change log until SCHEMA makes it, with the column.)
 */
export const LOG_ROW_ENTRIES = 'ALTER TABLE change_log ADD COLUMN entries INTEGER NOT NULL DEFAULT 1;'

/**
 * Version 4 → 5 (and older ones on their way): every device token stored in plain text —
 * its document's `token`, and the `token` of each device put the change log holds — becomes
 * its keyed hash, `tokenHash`, through the SQL function `iothub_token_hash` the store
 * registers for the upgrade (the file's own key). A device logs in with the token it had.
 */
export const HASH_PLAIN_TOKENS = `
UPDATE devices
   SET doc = json_remove(json_set(doc, '$.tokenHash', iothub_token_hash(doc ->> '$.token')), '$.token')
 WHERE doc ->> '$.token' IS NOT NULL;
UPDATE change_log
   SET change = json_remove(json_set(change, '$.device.tokenHash', iothub_token_hash(change ->> '$.device.token')), '$.device.token')
 WHERE change ->> '$.op' = 'device.put' AND change ->> '$.device.token' IS NOT NULL;
`

/**
 * Version 3 → 4 (and 1, 2 on their way): sessions and subscription entities from JSON documents
 * to columns, in place. A field missing from a document — none in what a hub wrote — becomes
 * the column's zero (as JSON's `undefined` read falsy), so no old row stops the upgrade. An
 * entity's broker topic and filter are kept as they were stored, never derived here.
 * `withEntities`: the file has a subscriptions table (version 1 has none).
 */
export function upgradeTo4(withEntities: boolean): string {
  const sessions = `
ALTER TABLE sessions RENAME TO sessions_v3;
${createTable('sessions')}
INSERT INTO sessions (id, protocol, client_id, device_id, username, mountpoint, node, peer_host, peer_port, sock_port, keepalive,
                      proto_ver, clean_start, expiry_interval, connected, created_at, connected_at, disconnected_at, disconnect_reason,
                      incarnation, version)
SELECT id,
       coalesce(doc ->> '$.protocol', 'mqtt'),
       coalesce(doc ->> '$.clientId', id),
       coalesce(doc ->> '$.deviceId', doc ->> '$.clientId', id),
       doc ->> '$.username',
       coalesce(doc ->> '$.mountpoint', ''),
       coalesce(doc ->> '$.node', ''),
       doc ->> '$.peerHost',
       doc ->> '$.peerPort',
       doc ->> '$.sockPort',
       coalesce(doc ->> '$.keepalive', 0),
       coalesce(doc ->> '$.protoVer', 0),
       coalesce(doc ->> '$.cleanStart', 0),
       coalesce(doc ->> '$.expiryInterval', 0),
       coalesce(doc ->> '$.connected', 0),
       coalesce(doc ->> '$.createdAt', 0),
       coalesce(doc ->> '$.connectedAt', 0),
       doc ->> '$.disconnectedAt',
       doc ->> '$.disconnectReason',
       coalesce(doc ->> '$.incarnation', ''),
       coalesce(doc ->> '$.version', 0)
  FROM sessions_v3;
DROP TABLE sessions_v3;
`
  const entities = `
DROP INDEX IF EXISTS subscriptions_by_session;
ALTER TABLE subscriptions RENAME TO subscriptions_v3;
${createTable('subscriptions')}
INSERT INTO subscriptions (id, session_id, device_id, owner, topic, broker_topic, properties, filter, created_at)
SELECT id, session_id,
       coalesce(doc ->> '$.deviceId', ''),
       coalesce(doc ->> '$.owner', ''),
       coalesce(doc ->> '$.topic', ''),
       coalesce(doc ->> '$.brokerTopic', ''),
       coalesce((SELECT group_concat(p.value, ',' ORDER BY p.key) FROM json_each(doc, '$.properties') AS p), ''),
       coalesce(doc ->> '$.filter', ''),
       coalesce(doc ->> '$.createdAt', 0)
  FROM subscriptions_v3;
DROP TABLE subscriptions_v3;
`
  return sessions + (withEntities ? entities : '')
}

/** One table's CREATE TABLE statement, as SCHEMA has it. */
function createTable(name: string): string {
  const match = new RegExp(`CREATE TABLE IF NOT EXISTS ${name} \\([^;]*\\) STRICT;`).exec(SCHEMA)
  if (!match) throw new Error(`no table ${name} in SCHEMA`)
  return match[0]
}
