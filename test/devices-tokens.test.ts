/**
 * Device tokens are stored only as keyed hashes: shown once, by the answer that creates the
 * device, never by a read (the native API, the tKeel entity view), never found in the store —
 * its devices or its change log — and a store written when tokens were kept in plain text
 * (SQLite schema 4, PostgreSQL schema 5) is upgraded in place so its devices log in as before.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { connectClient, startTestHub, tempDir, type TestHub } from './helpers/hub.js'
import { createDatabase } from './helpers/postgres.js'
import { SCHEMA_VERSION } from '../src/store/postgres/schema.js'

const notAuthorized = /Not authorized|Connection refused/i

async function logsIn(hub: TestHub, id: string, password: string): Promise<boolean> {
  try {
    const client = await connectClient(hub.mqttUrl, { clientId: `${id}-login-${Math.random().toString(36).slice(2, 8)}`, username: id, password })
    await client.endAsync()
    return true
  } catch (error) {
    assert.match((error as Error).message, notAuthorized)
    return false
  }
}

/** Rows of the SQLite file holding `text` anywhere in their JSON: devices, and the change log. */
function sqliteRowsHolding(dataDir: string, text: string): number {
  const db = new Database(join(dataDir, 'iothub.db'), { readonly: true })
  try {
    const devices = db.prepare('SELECT count(*) FROM devices WHERE instr(doc, ?) > 0').pluck().get(text) as number
    const log = db.prepare('SELECT count(*) FROM change_log WHERE instr(change, ?) > 0').pluck().get(text) as number
    return devices + log
  } finally {
    db.close()
  }
}

describe('device tokens, stored as hashes', () => {
  it('are shown once at creation, never read back, never stored; the hash is no password', async () => {
    const t = await startTestHub()
    try {
      const created = await t.createDevice({ id: 'tok-1', owner: 'alice' })
      assert.match(created.token, /^[A-Za-z0-9_-]{32}$/)
      const many = (await t.api<{ id: string; token: string }[]>('POST', '/v1/devices', [{ id: 'tok-2' }, { id: 'tok-3' }])).body
      assert.ok(many.every((d) => typeof d.token === 'string' && d.token.length === 32))

      const read = (await t.api<Record<string, unknown>>('GET', '/v1/devices/tok-1')).body
      assert.equal(read.id, 'tok-1')
      assert.ok(!('token' in read) && !('tokenHash' in read), `GET shows ${Object.keys(read).join(', ')}`)
      const entity = (await t.api<{ properties: { sysField: Record<string, unknown> } }>('GET', '/apis/core/v1/entities/tok-1?type=device')).body
      assert.ok(!('_token' in entity.properties.sysField))

      assert.equal(await logsIn(t, 'tok-1', created.token), true)
      assert.equal(await logsIn(t, 'tok-1', many[0]!.token), false, "another device's token")

      // what the store holds: the hash, under the store's key, and never the token
      const stored = await t.hub.store.readDevice('tok-1')
      assert.equal(stored?.tokenHash, t.hub.store.tokens.hash(created.token))
      assert.ok(!('token' in stored))
      assert.equal(sqliteRowsHolding(t.dataDir, created.token), 0)
      assert.equal(await logsIn(t, 'tok-1', stored.tokenHash), false, 'the stored hash is not a password')
    } finally {
      await t.stop()
    }
  })

  it('SQLite: a version 4 file with plain tokens is upgraded in place; its devices log in with the tokens they had', async () => {
    const dataDir = tempDir()
    const first = await startTestHub({}, dataDir)
    const devices = [await first.createDevice({ id: 'old-1' }), await first.createDevice({ id: 'old-2' })]
    await first.hub.stop()

    // as schema version 4 wrote it: each token in its document and in its device put of the log, no key
    // (each device was created in a commit of its own, so its put is a log row of its own, an object)
    const db = new Database(join(dataDir, 'iothub.db'))
    for (const { id, token } of devices) {
      db.prepare("UPDATE devices SET doc = json_set(json_remove(doc, '$.tokenHash'), '$.token', ?) WHERE id = ?").run(token, id)
      db.prepare(
        "UPDATE change_log SET change = json_set(json_remove(change, '$.device.tokenHash'), '$.device.token', ?) WHERE change ->> '$.op' = 'device.put' AND change ->> '$.device.id' = ?"
      ).run(token, id)
    }
    db.exec('DROP TABLE store_keys; DROP TRIGGER device_properties_go_with_device')
    db.pragma('user_version = 4')
    db.close()
    assert.equal(sqliteRowsHolding(dataDir, devices[0]!.token), 2, 'the plain token is in the version 4 file, device and log')

    const second = await startTestHub({}, dataDir)
    try {
      for (const { id, token } of devices) {
        assert.equal(await logsIn(second, id, token), true, `${id} logs in with its old token`)
        assert.equal(sqliteRowsHolding(dataDir, token), 0, `${id}'s token is stored nowhere`)
        assert.equal((await second.hub.store.readDevice(id))?.tokenHash, second.hub.store.tokens.hash(token))
      }
      assert.equal(await logsIn(second, 'old-1', devices[1]!.token), false)
      const log = await second.hub.store.readLog(0, 100)
      const puts = log.filter((e) => e.change.op === 'device.put')
      assert.equal(puts.length, 2)
      assert.ok(puts.every((e) => e.change.op === 'device.put' && 'tokenHash' in e.change.device && !('token' in e.change.device)))
    } finally {
      await second.stop()
    }
  })

  it('PostgreSQL: a version 5 store with plain tokens is upgraded in place; its devices log in with the tokens they had', async () => {
    const database = await createDatabase('iothub_tokens')
    const store = { store: 'postgres' as const, databaseUrl: database.url }
    const dataDir = tempDir()
    try {
      const first = await startTestHub(store, dataDir)
      const devices = [await first.createDevice({ id: 'pg-old-1' }), await first.createDevice({ id: 'pg-old-2' })]
      await first.hub.stop()

      for (const { id, token } of devices) {
        await database.query(`UPDATE devices SET doc = ((doc::jsonb - 'tokenHash') || jsonb_build_object('token', $1::text))::json WHERE id = $2`, [token, id])
        await database.query(
          `UPDATE change_log SET change = jsonb_set(change::jsonb, '{device}', ((change::jsonb -> 'device') - 'tokenHash') || jsonb_build_object('token', $1::text))::json
            WHERE change->>'op' = 'device.put' AND change->'device'->>'id' = $2`,
          [token, id]
        )
      }
      // and without what version 6 added: the key, the devices' listing columns (and their indexes)
      await database.query('DROP TABLE store_keys')
      await database.query('ALTER TABLE devices DROP COLUMN owner, DROP COLUMN group_name, DROP COLUMN name')
      await database.query('UPDATE schema_version SET version = 5')
      const holding = async (text: string) =>
        Number(
          (
            await database.query<{ n: string }>(
              `SELECT (SELECT count(*) FROM devices WHERE strpos(doc::text, $1) > 0) + (SELECT count(*) FROM change_log WHERE strpos(change::text, $1) > 0) AS n`,
              [text]
            )
          )[0]!.n
        )
      assert.equal(await holding(devices[0]!.token), 2, 'the plain token is in the version 5 store, device and log')

      const second = await startTestHub(store, dataDir)
      try {
        for (const { id, token } of devices) {
          assert.equal(await logsIn(second, id, token), true, `${id} logs in with its old token`)
          assert.equal(await holding(token), 0, `${id}'s token is stored nowhere`)
        }
        assert.equal(await logsIn(second, 'pg-old-2', devices[0]!.token), false)
        assert.deepEqual(await database.query('SELECT version FROM schema_version'), [{ version: SCHEMA_VERSION }])
        assert.deepEqual(await database.query('SELECT id, owner, group_name, name FROM devices ORDER BY id'), [
          { id: 'pg-old-1', owner: '', group_name: 'default', name: '' },
          { id: 'pg-old-2', owner: '', group_name: 'default', name: '' }
        ])
        assert.deepEqual(
          (await second.api<{ data: { id: string }[] }>('GET', '/v1/devices?group=default')).body.data.map((d) => d.id),
          ['pg-old-1', 'pg-old-2'],
          'listed as before'
        )
        // the key is the store's: a third start keeps it, and the devices still log in
      } finally {
        await second.hub.stop()
      }
      const third = await startTestHub(store, dataDir)
      try {
        assert.equal(await logsIn(third, 'pg-old-1', devices[0]!.token), true)
      } finally {
        await third.stop()
      }
    } finally {
      await database.drop()
    }
  })
})

