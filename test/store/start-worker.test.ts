/**
 * The SQLite store's worker threads run from source (as in these tests) as esbuild bundles of
 * their sources (src/store/sqlite/start-worker.ts): what a developer meets of that — stack traces
 * that name the `.ts` sources, and a cache folder that does not grow with every change of them.
 */
import assert from 'node:assert/strict'
import { existsSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { STALE_BUNDLE_MS, startWorker } from '../../src/store/sqlite/start-worker.js'

const CACHE = join(fileURLToPath(new URL('../../node_modules/.cache/iothub/workers', import.meta.url)))

it("a worker from source: its stack traces name its .ts source; bundles of a worker's earlier sources go once an hour old", async (t) => {
  mkdirSync(CACHE, { recursive: true })
  const old = Date.now() - STALE_BUNDLE_MS - 60_000
  const file = (name: string, modified?: number) => {
    const path = join(CACHE, name)
    writeFileSync(path, '// a bundle of earlier sources\n')
    if (modified !== undefined) utimesSync(path, modified / 1000, modified / 1000)
    t.after(() => rmSync(path, { force: true }))
    return path
  }
  const stale = file('writer-worker-0123456789abcdef.mjs', old)
  const halfWritten = file('writer-worker-0123456789abcdee.mjs.4242.1700000000000', old)
  const recent = file('writer-worker-fedcba9876543210.mjs')
  const otherWorker = file('fleet-read-worker-0123456789abcdef.mjs', old)

  // a store path whose folder does not exist: the writer thread fails as it opens it
  const worker = startWorker('writer', { path: join(tmpdir(), `iothub-no-such-folder-${process.pid}`, 'hub.db'), synchronous: 'full', busyTimeoutMs: 100 })
  const error = await new Promise<Error>((resolve, reject) => {
    worker.once('error', resolve)
    worker.once('exit', () => reject(new Error('the writer thread ended without an error')))
  })
  assert.match(error.stack ?? '', /src\/store\/sqlite\/writer-worker\.ts:\d+/, 'the frame of the thread\'s own code names its source')

  assert.equal(existsSync(stale), false, 'an hour-old bundle of earlier sources is removed')
  assert.equal(existsSync(halfWritten), false, 'so is an hour-old half-written one')
  assert.equal(existsSync(recent), true, 'a recent one stays: a process started before the change may still use it')
  assert.equal(existsSync(otherWorker), true, "another worker's bundles are that worker's to remove")
})
