import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { KeyedQueue } from '../../src/registry/keyed-queue.js'

/** A promise settled from outside, and whether it has settled yet. */
function held<T = void>() {
  let resolve!: (value: T) => void
  let reject!: (error: Error) => void
  const promise = new Promise<T>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

/** Lets every promise turn queued now run, and the ones they queue. */
const turns = () => new Promise((resolve) => setImmediate(resolve))

describe('KeyedQueue', () => {
  it('runs one task of a key at a time, in the order they came, and other keys alongside', async () => {
    const queue = new KeyedQueue()
    const began: string[] = []
    const a1 = held()
    const a2 = held()
    const b1 = held()
    void queue.run('a', () => (began.push('a1'), a1.promise))
    void queue.run('a', () => (began.push('a2'), a2.promise))
    void queue.run('b', () => (began.push('b1'), b1.promise))
    const a3 = queue.run('a', async () => void began.push('a3'))
    await turns()
    assert.deepEqual(began, ['a1', 'b1'], 'b is not held up by a; a2 waits for a1')
    a2.resolve() // settling a later task changes nothing while the one before runs
    await turns()
    assert.deepEqual(began, ['a1', 'b1'])
    a1.resolve()
    await a3
    assert.deepEqual(began, ['a1', 'b1', 'a2', 'a3'])
    b1.resolve()
    await turns()
    assert.equal(queue.pendingKeys, 0)
  })

  it('goes on with the next task of a key when one rejects or throws, and each caller hears its own outcome', async () => {
    const queue = new KeyedQueue()
    const first = queue.run('k', () => Promise.reject(new Error('first failed')))
    const second = queue.run('k', () => {
      throw new Error('second threw')
    })
    const third = queue.enter('k', () => {
      throw new Error('third threw, entered')
    })
    const fourth = queue.run('k', () => Promise.resolve(4))
    await assert.rejects(first, /first failed/)
    await assert.rejects(second, /second threw/)
    await assert.rejects(third, /third threw, entered/)
    assert.equal(await fourth, 4)
    await turns()
    assert.equal(queue.pendingKeys, 0)
  })

  it('holds a key entered with enter() until the task leaves it, not until its promise settles', async () => {
    const queue = new KeyedQueue()
    const began: string[] = []
    const work = held<string>()
    const entered = queue.enter('k', () => (began.push('entered'), work.promise))
    const next = queue.run('k', async () => void began.push('next'))
    work.resolve('done')
    assert.equal(await entered, 'done')
    await turns()
    assert.deepEqual(began, ['entered'], 'its promise settled, but the entered task has not left')
    queue.leave('k')
    await next
    assert.deepEqual(began, ['entered', 'next'])
    await turns()
    assert.equal(queue.pendingKeys, 0)
  })

  it('begins the next task in the very call that leaves, so nothing of another key comes between', async () => {
    const queue = new KeyedQueue()
    const began: string[] = []
    void queue.enter('k', () => (began.push('first'), Promise.resolve()))
    const second = queue.enter('k', () => (began.push('second'), Promise.resolve('second done')))
    await turns()
    queue.leave('k')
    assert.deepEqual(began, ['first', 'second'])
    assert.equal(queue.pendingKeys, 1, 'the second holds the key until it leaves')
    queue.leave('k')
    assert.equal(queue.pendingKeys, 0)
    assert.equal(await second, 'second done')
  })

  it("lets a run() task's caller resume before the key's next task begins, a queued task's caller too", async () => {
    const queue = new KeyedQueue()
    const seen: string[] = []
    const task = (name: string) => () => {
      seen.push(`${name} begins`)
      return Promise.resolve()
    }
    const first = queue.run('k', task('first'))
    const second = queue.run('k', task('second')) // queued behind the first
    void queue.run('k', task('third'))
    void first.then(() => seen.push('first caller'))
    void second.then(() => seen.push('second caller'))
    await turns()
    assert.deepEqual(seen, ['first begins', 'first caller', 'second begins', 'second caller', 'third begins'])
  })

  it('leaves no unhandled rejection when a queued run() task fails and its caller does not wait for it', async () => {
    const queue = new KeyedQueue()
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const first = held()
      void queue.run('k', () => first.promise)
      void queue.run('k', () => Promise.reject(new Error('queued task failed'))) // as connect.ts runs its connects
      void queue.run('k', () => {
        throw new Error('queued task threw')
      })
      const last = queue.run('k', () => Promise.resolve('last'))
      first.reject(new Error('first failed'))
      assert.equal(await last, 'last')
      await turns()
      await turns()
      assert.deepEqual(unhandled, [])
      assert.equal(queue.pendingKeys, 0)
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
