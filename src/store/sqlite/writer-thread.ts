/** The main thread's end of the writer thread (writer-worker.ts): a BatchWriter that awaits it. */
import type { Worker } from 'node:worker_threads'
import { isLogged, type LoggedChange } from '../change-log.js'
import type { LogPruning } from '../coordination.js'
import type { BatchItem, BatchOutcome, BatchWriter, WriteControl } from '../group-commit.js'
import { changesText } from '../property-json.js'
import { withinDeadline } from '../store.js'
import { startWorker } from './start-worker.js'
import { encodeMutation, type EncodedMutation } from './statements.js'
import type { WriterHello, WriterOptions, WriterReply, WriterRequest } from './writer-worker.js'


export class WriterThread implements BatchWriter {
  private readonly worker: Worker
  private readonly waiting = new Map<number, { resolve: (reply: WriterReply) => void; reject: (error: Error) => void }>()
  private nextId = 1
  private failure: Error | null = null
  private readonly exited: Promise<void>
  /** The thread's id, once it has said it (null: it cannot know it). */
  threadId: number | null = null
  /** Resolves once the thread has said its id, or has failed: it says it before it answers anything. */
  readonly said: Promise<void>
  private saidOrFailed!: () => void

  constructor(options: WriterOptions) {
    this.said = new Promise((resolve) => (this.saidOrFailed = resolve))
    this.worker = startWorker('writer', options)
    this.worker.on('message', (reply: WriterReply | WriterHello) => {
      if ('thread' in reply) {
        this.threadId = reply.thread
        this.saidOrFailed()
        return
      }
      const waiter = this.waiting.get(reply.id)
      this.waiting.delete(reply.id)
      if (reply.error === undefined) waiter?.resolve(reply)
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

  /**
   * The thread runs one transaction at a time and cannot be interrupted inside one; so it is
   * given the deadline and checks it itself, before it begins and before it commits (see
   * writer-worker.ts). Aborted here, the caller hears at once and a late answer is ignored.
   *
   * Not an async function, and the request is posted outside the promise's executor: postMessage
   * copies the batch's rows and log JSON to the thread, and nothing here may keep them alive while
   * the batch commits (a suspended frame, or a closure's context, would — through every scavenge).
   */
  writeBatch(items: readonly BatchItem[], control?: WriteControl): Promise<BatchOutcome> {
    const writes: EncodedMutation[] = []
    const changes: LoggedChange[] = []
    for (const item of items) {
      // the SQLite store has one writer, this process, which decides from its caches
      if (!('mutations' in item)) return Promise.reject(new Error('the SQLite store takes decided mutations only'))
      for (const m of item.mutations) {
        writes.push(encodeMutation(m))
        if (isLogged(m)) changes.push(m)
      }
    }
    const at = Date.now()
    // the batch's changes go to the log as one row, one text (log-rows.ts, property-json.ts);
    // the request is made here, not in a closure: a closure would share this frame's context with
    // the continuation below, which outlives the post
    const log = changes.length === 0 ? null : changesText(changes)
    const written = this.send({ id: this.nextId++, writes, log, entries: changes.length, at, deadline: control?.deadline ?? Infinity }, control)
    return written.then(({ previous = 0 }) =>
      changes.length === 0 ? {} : { log: { previous, entries: changes.map((change, i) => ({ seq: previous + i + 1, at, change })) } }
    )
  }

  /** Posts `request`; resolves with the thread's answer, or rejects when `control` aborts first. */
  private send(request: WriterRequest & { id: number }, control?: WriteControl): Promise<WriterReply> {
    if (this.failure) return Promise.reject(this.failure)
    const id = request.id
    const answered = new Promise<WriterReply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      control?.signal.addEventListener(
        'abort',
        () => {
          if (this.waiting.delete(id)) reject(control.signal.reason as Error)
        },
        { once: true }
      )
    })
    try {
      this.worker.postMessage(request)
    } catch (error) {
      this.waiting.delete(id)
      return Promise.reject(error instanceof Error ? error : new Error(String(error)))
    }
    return answered
  }

  /** Deletes change-log entries as `pruning` allows, behind the batches handed over; how many. */
  prune(pruning: LogPruning): Promise<number> {
    if (this.failure) return Promise.reject(this.failure)
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve: (reply) => resolve(reply.pruned ?? 0), reject })
      this.worker.postMessage({ id, prune: pruning } satisfies WriterRequest)
    })
  }

  /**
   * Whether the writer could take a write now: it takes SQLite's write lock and lets it go,
   * behind the batches already handed over, within `timeoutMs`.
   */
  probe(timeoutMs: number): Promise<void> {
    if (this.failure) return Promise.reject(this.failure)
    const id = this.nextId++
    const answered = new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve: () => resolve(), reject })
      this.worker.postMessage({ id, probe: true } satisfies WriterRequest)
    })
    return withinDeadline(answered, timeoutMs, () => this.waiting.delete(id))
  }

  /** Closes the writer's connection and waits for the thread to end. */
  async close(): Promise<void> {
    if (!this.failure) this.worker.postMessage({ close: true } satisfies WriterRequest)
    await this.exited
  }

  private fail(error: Error): void {
    this.saidOrFailed()
    this.failure ??= error
    for (const waiter of this.waiting.values()) waiter.reject(error)
    this.waiting.clear()
  }
}
