/**
 * What the device directory keeps in memory: every device where this process holds the fleet
 * (the embedded broker, on SQLite or on PostgreSQL: its device listing is read from here), the
 * devices used last where replicas share the store (EMQX mode on PostgreSQL: a miss reads the store).
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import type { Device } from '../../src/domain/device.js'
import { DeviceDirectory } from '../../src/registry/device-directory.js'
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js'
import { tempDir } from '../helpers/hub.js'

const device = (i: number): Device => ({ id: `d-${i}`, name: '', owner: 'o', group: '', desc: '', ext: {}, tokenHash: 'h', createdAt: 1, updatedAt: 1 })
const devices = function* (count: number): Generator<Device> {
  for (let i = 0; i < count; i++) yield device(i)
}

describe('DeviceDirectory', () => {
  let dataDir: string
  let store: SqliteStore
  before(() => {
    dataDir = tempDir('iothub-directory-')
    store = new SqliteStore({ dataDir })
  })
  after(async () => {
    await store.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('holds every device loaded when it holds the fleet, a shared store too, past 100,000', () => {
    const directory = new DeviceDirectory(store, true)
    directory.load(devices(100_001))
    assert.equal(directory.size, 100_001)
    assert.equal(directory.get('d-0')?.id, 'd-0', 'the first loaded is still there')
  })

  it('keeps the devices used last, at most its cache size, for a replica of a shared store', () => {
    const directory = new DeviceDirectory(store, true, 100)
    directory.load(devices(150))
    assert.equal(directory.size, 100)
    assert.equal(directory.get('d-0'), undefined, 'the first loaded made room')
    assert.equal(directory.get('d-149')?.id, 'd-149')
  })
})
