/**
 * The token key of a PostgreSQL store, and schema version 6's upgrade of the rows before it:
 * tokens stored in plain text — each device document's `token`, and the `token` of each device
 * put in the change log — become their keyed hash, `tokenHash`, in place, so every device logs
 * in with the token it had; and each device's listing columns (owner, group, name) are filled.
 * PostgreSQL has no HMAC without an extension, and cannot read a `json` document as text once
 * it holds a \u0000 anywhere (`->>` fails on the whole row), so rows are read as text and
 * rewritten here, a page at a time, in the schema's upgrade transaction. The hash takes the
 * token's place among the document's keys (`json` keeps the text as written).
 */
import type pg from 'pg'
import { newTokenKey, TokenHasher } from '../../domain/secret.js'
import type { QualifiedTables } from './schema.js'

/** Rows rewritten per statement. */
const PAGE = 5000

/** The store's token key, made when it has none (in the caller's transaction, under its schema lock). */
export async function tokenKey(client: pg.PoolClient, t: QualifiedTables): Promise<TokenHasher> {
  const read = async () => (await client.query<{ key: Buffer }>(`SELECT key FROM ${t.store_keys} WHERE name = 'token'`)).rows[0]?.key
  // read first: a store at today's version is only read at start (a role without write rights on it may run the hub)
  let key = await read()
  if (!key) {
    await client.query(`INSERT INTO ${t.store_keys} (name, key) VALUES ('token', $1) ON CONFLICT (name) DO NOTHING`, [newTokenKey()])
    key = await read()
  }
  return new TokenHasher(key!)
}

/** Hashes every plain token the store holds and fills the devices' listing columns (stores before version 6). */
export async function upgradeDevicesTo6(client: pg.PoolClient, t: QualifiedTables, tokens: TokenHasher): Promise<void> {
  for (let after = ''; ; ) {
    const { rows } = await client.query<{ id: string; doc: string }>(
      // the rows before version 6 (no listing columns yet), and any holding a plain token
      `SELECT id, doc::text AS doc FROM ${t.devices} WHERE id > $1 AND (owner IS NULL OR strpos(doc::text, '"token"') > 0) ORDER BY id LIMIT ${PAGE}`,
      [after]
    )
    if (rows.length === 0) break
    const docs = rows.map((r) => withHashedToken(JSON.parse(r.doc) as Record<string, unknown>, tokens))
    const text = (value: unknown) => (typeof value === 'string' ? value : '')
    await client.query(
      `UPDATE ${t.devices} AS d SET doc = u.doc, owner = u.owner, group_name = u.group_name, name = u.name
         FROM unnest($1::text[], $2::json[], $3::text[], $4::text[], $5::text[]) AS u(id, doc, owner, group_name, name) WHERE d.id = u.id`,
      [rows.map((r) => r.id), docs.map((d) => JSON.stringify(d)), docs.map((d) => text(d.owner)), docs.map((d) => text(d.group)), docs.map((d) => text(d.name))]
    )
    after = rows.at(-1)!.id
  }
  for (const column of ['owner', 'group_name', 'name']) await client.query(`ALTER TABLE ${t.devices} ALTER COLUMN ${column} SET NOT NULL`)
  for (let after = 0; ; ) {
    // found by their text: `->>` would fail on any entry holding a \u0000 (a property's value)
    const { rows } = await client.query<{ seq: string; change: string }>(
      `SELECT seq, change::text AS change FROM ${t.change_log} WHERE seq > $1 AND strpos(change::text, '"token"') > 0 ORDER BY seq LIMIT ${PAGE}`,
      [after]
    )
    if (rows.length === 0) break
    const puts = rows.flatMap((r) => {
      const change = JSON.parse(r.change) as { op: string; device?: Record<string, unknown> }
      if (change.op !== 'device.put' || change.device?.token === undefined) return []
      return [{ seq: r.seq, change: JSON.stringify({ ...change, device: withHashedToken(change.device, tokens) }) }]
    })
    if (puts.length > 0) {
      await client.query(`UPDATE ${t.change_log} AS l SET change = u.change FROM unnest($1::bigint[], $2::json[]) AS u(seq, change) WHERE l.seq = u.seq`, [
        puts.map((p) => p.seq),
        puts.map((p) => p.change)
      ])
    }
    after = Number(rows.at(-1)!.seq)
  }
}

/** The document with `tokenHash` where `token` was, and no `token`. */
export function withHashedToken(doc: Record<string, unknown>, tokens: TokenHasher): Record<string, unknown> {
  return Object.fromEntries(Object.entries(doc).map(([key, value]) => (key === 'token' ? ['tokenHash', tokens.hash(String(value))] : [key, value])))
}
