/**
 * Runs tasks one at a time per key, in the order they were queued, and different keys
 * concurrently. The registry keys by clientId: a client's events apply in order even though
 * each waits for its batch to become durable.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>()

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key)
    const result = previous ? previous.then(task, task) : task()
    const tail = result.then(
      () => undefined,
      () => undefined
    )
    this.tails.set(key, tail)
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key)
    })
    return result
  }

  get pendingKeys(): number {
    return this.tails.size
  }
}
