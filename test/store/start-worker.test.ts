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

const CACHE = fileURLToPath(new URL('../../node_modules/.cache/iothub/workers', import.meta.url))
const WRITER_SOURCE = fileURLToPath(new URL('../../src/store/sqlite/writer-worker.ts', import.meta.url))

it("a worker from source: its stack traces name its .ts source; bundles of a worker's earlier sources go once unused for an hour", async (t) => {
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
  // a name no worker of the hub has: no process beside this one removes it meanwhile
  const otherWorker = file('other-worker-0123456789abcdef.mjs', old)

  const error = await failedWriter()
  const frame = new RegExp(`${WRITER_SOURCE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+`)
  assert.match(error.stack ?? '', frame, "the frame of the thread's own code names its source file, where it is")

  assert.equal(existsSync(stale), false, 'a bundle of earlier sources unused for an hour is removed')
  assert.equal(existsSync(halfWritten), false, 'so is an hour-old half-written one')
  assert.equal(existsSync(recent), true, 'a recent one stays: a process started before the change may still use it')
  assert.equal(existsSync(otherWorker), true, "another worker's bundles are that worker's to remove")
  // (a bundle this process uses, removed meanwhile, is written again from what it keeps: not
  // tested here — removing the shared bundle would pull it from under the test files running beside)
})

/** A writer thread on a store path whose folder does not exist: it fails as it opens it. */
async function failedWriter(): Promise<Error> {
  const worker = startWorker('writer', { path: join(tmpdir(), `iothub-no-such-folder-${process.pid}`, 'hub.db'), synchronous: 'full', busyTimeoutMs: 100 })
  return new Promise<Error>((resolve, reject) => {
    worker.once('error', resolve)
    worker.once('exit', () => reject(new Error('the writer thread ended without an error')))
  })
}
