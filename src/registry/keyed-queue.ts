/**
 * Runs tasks one at a time per key, in the order they were queued, and different keys
 * concurrently. The registry keys by clientId: a client's events apply in order even though
 * each waits for its batch to become durable.
 *
 * Two ways in. `run` waits on the task's promise and lets the next task of its key begin once the
 * task's own caller has heard. `enter` leaves it to the task to say when it is done (`leave`), in
 * the continuation it has anyway: the registry's lifecycle events go that way, because thousands
 * of them wait for their batch at once under load, and the promise and closure per task that
 * `run` keeps until the task settles are live memory every scavenge copies (docs/perf-journal.md,
 * "what the events tail's episodes are made of").
 */
export class KeyedQueue {
  /** The keys with a task running, each with the tasks queued behind it, in order (null: none). */
  private readonly running = new Map<string, (() => void)[] | null>()

  /**
   * Runs `task` now when no task of `key` is running, else once every task queued before it has
   * left; answers its promise. The task must call `leave(key)` once, when it is done — also when
   * it fails — and not before its effects are what the next task of the key must see. (One that
   * throws instead of answering a promise has left: `start`.) Its caller handles the answer's
   * failure, as with any promise.
   */
  enter<T>(key: string, task: () => Promise<T>): Promise<T> {
    const queued = this.running.get(key)
    if (queued === undefined) {
      this.running.set(key, null)
      return this.start(key, task)
    }
    return new Promise<T>((resolve, reject) => {
      const begin = (): void => void this.start(key, task).then(resolve, reject)
      if (queued === null) this.running.set(key, [begin])
      else queued.push(begin)
    })
  }

  /** The running task of `key` is done: the next one queued begins (at once, in this call). */
  leave(key: string): void {
    const queued = this.running.get(key)
    const next = queued?.shift()
    if (next === undefined) {
      this.running.delete(key)
      return
    }
    if (queued!.length === 0) this.running.set(key, null)
    next()
  }

  /**
   * Runs `task` in `key`'s turn, as `enter` does, and leaves once the promise it answers has
   * settled and whoever awaits it has resumed: the next task of the key begins a promise turn
   * after that. The answer's failure is handled here too, so a caller that does not wait for it
   * (`void queue.run(…)`) leaves no unhandled rejection behind.
   */
  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    // a task that throws is a rejected answer here, so `start` never leaves for it: this does
    const answer = this.enter(key, () => {
      try {
        return task()
      } catch (error) {
        return rejection(error)
      }
    })
    // handled before the caller could attach its own, so it runs before the caller's continuation
    // in the same turn; the leave comes in the turn after
    void answer.then(ignore, ignore).then(() => this.leave(key))
    return answer
  }

  /** Keys with a task running or queued. */
  get pendingKeys(): number {
    return this.running.size
  }

  /** A task that throws instead of answering a promise has ended: it leaves, and its caller hears. */
  private start<T>(key: string, task: () => Promise<T>): Promise<T> {
    try {
      return task()
    } catch (error) {
      this.leave(key)
      return rejection(error)
    }
  }
}

function ignore(): void {}

/** What a task that threw answers its caller instead. */
function rejection(error: unknown): Promise<never> {
  return Promise.reject(error instanceof Error ? error : new Error(String(error)))
}
