/**
 * Per-thread cpu: the SQLite store's writer and checkpointer say their thread ids, the hub
 * reads their cpu (and its event loop's) from the kernel, and /metrics reports it as
 * `iothub_thread_cpu_seconds_total{thread}`. Linux only, as the hub's figures are; CI is Linux.
 */
import assert from 'node:assert/strict'
import { rmSync } from 'node:fs'
import { getPriority } from 'node:os'
import { after, before, describe, it } from 'node:test'
import { MAIN_THREAD_ID, threadCpuSeconds } from '../src/observability/thread-cpu.js'
import { SqliteStore } from '../src/store/sqlite/sqlite-store.js'
import { STORE_THREAD_NICENESS } from '../src/store/sqlite/thread-priority.js'
import { startTestHub, tempDir, type TestHub } from './helpers/hub.js'
import { session } from './store/contract.js'

const linux = process.platform === 'linux'

describe('threadCpuSeconds', { skip: !linux && 'per-thread cpu is read from Linux /proc' }, () => {
  it("reads the main thread's cpu, which grows as it works, and nothing for a thread that is not this process'", () => {
    const before = threadCpuSeconds(MAIN_THREAD_ID)
    assert.ok(before !== null && before >= 0, `main thread: ${before}`)
    // spins this thread until its own counter shows a few of the kernel's 10 ms ticks more: a
    // counter that does not move with this thread's work fails here after 10 s
    const until = Date.now() + 10_000
    let now = before
    while (now < before + 0.03 && Date.now() < until) now = threadCpuSeconds(MAIN_THREAD_ID)!
    assert.ok(now >= before + 0.03, `the main thread's counter went from ${before} to ${now} s in 10 s of spinning`)
    assert.equal(threadCpuSeconds(0), null)
  })
})

describe('SqliteStore threads', { skip: !linux && 'thread ids are read from Linux /proc' }, () => {
  it('names its writer and checkpointer once loaded, both below the main thread in priority; the writer is the thread that pays for the writes', async () => {
    const dataDir = tempDir('iothub-store-')
    const mainNice = getPriority()
    const store = new SqliteStore({ dataDir })
    try {
      await store.load()
      const threads = store.threads()
      assert.deepEqual(threads.map((t) => t.name).sort(), ['store_checkpointer', 'store_writer'])
      const ids = threads.map((t) => t.threadId)
      assert.equal(new Set(ids).size, 2, 'two threads')
      assert.ok(!ids.includes(MAIN_THREAD_ID), 'neither is the main thread')
      // both give way to the main thread (thread-priority.ts), which keeps its own: Linux keeps a nice value per thread
      assert.equal(getPriority(), mainNice, "the main thread's nice value")
      for (const { name, threadId } of threads) {
        assert.equal(getPriority(threadId), Math.min(19, mainNice + STORE_THREAD_NICENESS), `${name}'s nice value, the main thread's being ${mainNice}`)
      }
      const writer = threads.find((t) => t.name === 'store_writer')!.threadId
      const before = threadCpuSeconds(writer)
      assert.ok(before !== null, "the writer's cpu is readable")
      // enough writes for well over a tick of the writer's cpu
      const padding = 'x'.repeat(4_000)
      for (let batch = 0; batch < 60; batch++) {
        await store.commit(Array.from({ length: 100 }, (_, i) => ({ op: 'session.put' as const, session: session(`c-${batch}-${i}`, { username: padding }) })))
      }
      assert.ok(threadCpuSeconds(writer)! > before, 'the writer thread counted the writes')
      await store.close()
      // ended with the store: they were this process' threads
      for (const id of ids) assert.equal(threadCpuSeconds(id), null, `thread ${id} ended`)
    } finally {
      await store.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })
})

describe('iothub_thread_cpu_seconds_total', { skip: !linux && 'per-thread cpu is read from Linux /proc' }, () => {
  let t: TestHub
  before(async () => {
    t = await startTestHub()
  })
  after(async () => {
    await t.stop()
  })

  it('reports the main thread and the store threads of a serving hub', async () => {
    const { status, body } = await t.api<string>('GET', '/metrics', undefined, null)
    assert.equal(status, 200)
    const seconds = new Map([...body.matchAll(/^iothub_thread_cpu_seconds_total\{thread="([^"]+)"\} ([0-9.e+-]+)$/gm)].map((m) => [m[1]!, Number(m[2])]))
    assert.deepEqual([...seconds.keys()].sort(), ['main', 'store_checkpointer', 'store_writer'])
    for (const [thread, value] of seconds) assert.ok(Number.isFinite(value) && value >= 0, `${thread}: ${value}`)
    // this test process is the hub's: its main thread has run the hub and this test, well over a tick
    assert.ok(seconds.get('main')! > 0, 'the main thread has used cpu')
  })
})
