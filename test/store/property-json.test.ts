/**
 * A measured property value is serialized once (src/store/property-json.ts): the JSON made to
 * measure it is the text its row keeps and the text of its change-log entry, and the log reads
 * back exactly what it read when every store serialized the value again. The measured value rides
 * on the mutation under a symbol, which neither the mutation's JSON nor a structured clone (what
 * `postMessage` makes of it for the writer thread) carries along, and which a copy given another
 * value does not use. The event stream's JSON of such a change is made around it too.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import Database from 'better-sqlite3'
import { DeviceProperties } from '../../src/devices/device-properties.js'
import { Measured, mergeAttributes, mergeTelemetry } from '../../src/domain/device-properties.js'
import { eventJson, eventOf } from '../../src/events/from-log.js'
import { cacheDecider } from '../../src/store/cache-decider.js'
import type { LoggedChange } from '../../src/store/change-log.js'
import type { StoredView } from '../../src/store/decision.js'
import { changesText, changeText, VALUE_JSON } from '../../src/store/property-json.js'
import type { Mutation } from '../../src/store/store.js'
import { openTestStore } from '../helpers/sqlite-store.js'
import { device, session } from './contract.js'

/** Every device exists and has no property yet: what a decision of a first change reads. */
const EVERY_DEVICE = { device: (id: string) => ({ id }), property: () => undefined } as unknown as StoredView

/** Text JSON.stringify would never write for the value: whoever stores it stored the carried text. */
const CARRIED = '{ "set" : "by the test" }'

describe('a measured property value, serialized once', () => {
  it('is stored and logged, and read back, as before', async (t) => {
    const store = await openTestStore(t, 'iothub-property-json-')
    const properties = new DeviceProperties(cacheDecider(store, EVERY_DEVICE))
    await store.commit([{ op: 'device.put', device: device('d1') }])
    const telemetry = mergeTelemetry(undefined, { temp: 21.5, label: 'ü😀 "quoted" \\ \n', nested: { list: [1, null, true] } }, 1_700_000_000_123)
    assert.deepEqual(await properties.update('d1', 'telemetry', () => telemetry), telemetry.value, 'answered the value, not its measure')

    const [entry] = (await store.readLog(1, 10)).map((e) => e.change)
    assert.ok(entry?.op === 'device.property')
    assert.deepEqual(Object.keys(entry), ['op', 'deviceId', 'name', 'value', 'updatedAt'], 'no key more than before')
    assert.deepEqual(entry.value, telemetry.value)
    assert.deepEqual((await store.readProperties('d1')).map((p) => [p.name, p.value]), [['telemetry', telemetry.value]])
  })

  it('keeps the carried text, in its row and in its log entry', async (t) => {
    const store = await openTestStore(t, 'iothub-property-json-')
    const value = { set: 'by the test' }
    const carried: Mutation = { op: 'device.property', deviceId: 'd1', name: 'attributes', value, updatedAt: 5, [VALUE_JSON]: new Measured(value, CARRIED) }
    await store.commit([{ op: 'device.put', device: device('d1') }, carried, { op: 'session.put', session: session('s1') }])
    await store.close()

    const db = new Database(store.path, { readonly: true })
    try {
      assert.equal(db.prepare('SELECT value FROM device_properties').pluck().get(), CARRIED)
      const row = db.prepare('SELECT change FROM change_log ORDER BY seq DESC LIMIT 1').pluck().get() as string
      assert.ok(row.includes(`"value":${CARRIED}`), row)
      assert.deepEqual((JSON.parse(row) as LoggedChange[]).map((c) => c.op), ['device.put', 'device.property', 'session.put'], 'one row, in order')
    } finally {
      db.close()
    }
  })

  it('writes the very text JSON.stringify writes, alone or in a batch with other changes', () => {
    const attributes = mergeAttributes({ a: 1 }, { b: 'two "2"', c: [{ d: null }] })
    const measuredChange: LoggedChange = { op: 'device.property', deviceId: 'dev "1" ü', name: 'attributes', value: attributes.value, updatedAt: 1_765_000_000_000, [VALUE_JSON]: attributes }
    const plainChange: LoggedChange = { op: 'device.property', deviceId: 'dev-2', name: 'telemetry', value: { t: 1 }, updatedAt: 7 }
    const other: LoggedChange = { op: 'session.put', session: session('s1') }
    assert.equal(changeText(measuredChange), JSON.stringify(measuredChange))
    for (const batch of [[measuredChange], [other, measuredChange, plainChange], [plainChange, other], [measuredChange, measuredChange], [other, plainChange, measuredChange, other, other]]) {
      assert.equal(changesText(batch), JSON.stringify(batch.length === 1 ? batch[0] : batch))
    }
  })

  it('is not carried by its JSON or a structured clone, nor used by a copy given another value', () => {
    const value = { a: 1 }
    const change: LoggedChange = { op: 'device.property', deviceId: 'd', name: 'attributes', value, updatedAt: 1, [VALUE_JSON]: new Measured(value, CARRIED) }
    assert.equal(JSON.stringify(change), '{"op":"device.property","deviceId":"d","name":"attributes","value":{"a":1},"updatedAt":1}')
    assert.equal(Object.getOwnPropertySymbols(structuredClone(change)).length, 0)
    const copy: LoggedChange = { ...change, value: { a: 2 } }
    assert.equal(changeText(copy), JSON.stringify(copy), 'the measured text spells the value measured, not this one')
    assert.equal(changesText([copy, copy]), JSON.stringify([copy, copy]))
  })

  it('makes the JSON of its event around it too, the text JSON.stringify writes', () => {
    const telemetry = mergeTelemetry({ old: { value: 1, ts: 5 } }, { temp: 'ü😀 "hot"' }, 1_700_000_000_000)
    const change: LoggedChange = { op: 'device.property', deviceId: 'd "1"', name: 'telemetry', value: telemetry.value, updatedAt: 1_700_000_000_001, [VALUE_JSON]: telemetry }
    const event = eventOf({ seq: 41, at: 1_700_000_000_002, change }, { node: 'node "a"', owner: () => 'owner ü' })!
    assert.equal(eventJson(event, change), JSON.stringify(event))

    const carried: LoggedChange = { ...change, [VALUE_JSON]: new Measured(telemetry.value, CARRIED) }
    assert.ok(eventJson(eventOf({ seq: 42, at: 1, change: carried }, { node: 'n', owner: () => '' })!, carried).includes(`"value":${CARRIED}`))
  })
})
