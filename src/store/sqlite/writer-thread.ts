/** The main thread's end of the writer thread (writer-worker.ts): a BatchWriter that awaits it. */
import type { Worker } from 'node:worker_threads'
import type { BatchWriter } from '../group-commit.js'
import type { Mutation } from '../store.js'
import { startWorker } from './start-worker.js'
import { encodeMutation } from './statements.js'
import type { WriterOptions, WriterReply, WriterRequest } from './writer-worker.js'


export class WriterThread implements BatchWriter {
  private readonly worker: Worker
  private readonly waiting = new Map<number, { resolve: () => void; reject: (error: Error) => void }>()
  private nextId = 1
  private failure: Error | null = null
  private readonly exited: Promise<void>

  constructor(options: WriterOptions) {
    this.worker = startWorker('writer', options)
    this.worker.on('message', (reply: WriterReply) => {
      const waiter = this.waiting.get(reply.id)
      this.waiting.delete(reply.id)
      if (reply.error === undefined) waiter?.resolve()
      else waiter?.reject(new Error(reply.error))
    })
    this.worker.on('error', (error) => this.fail(new Error(`SQLite writer thread failed: ${error.message}`)))
    this.exited = new Promise((resolve) =>
      this.worker.once('exit', () => {
        this.fail(new Error('SQLite writer thread has stopped'))
        resolve()
      })
    )
  }

  writeBatch(mutations: readonly Mutation[]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure)
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      this.worker.postMessage({ id, mutations: mutations.map(encodeMutation) } satisfies WriterRequest)
    })
  }

  /** Closes the writer's connection and waits for the thread to end. */
  async close(): Promise<void> {
    if (!this.failure) this.worker.postMessage({ close: true } satisfies WriterRequest)
    await this.exited
  }

  private fail(error: Error): void {
    this.failure ??= error
    for (const waiter of this.waiting.values()) waiter.reject(error)
    this.waiting.clear()
  }
}
