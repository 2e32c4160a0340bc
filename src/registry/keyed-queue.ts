/**
 * Runs tasks one at a time per key, in the order they were queued, and different keys
 * concurrently. The registry keys by clientId: a client's events apply in order even though
 * each waits for its batch to become durable.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>()

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key)
    const result = previous === undefined ? task() : previous.then(task, task)
    const release = (): void => {
      if (this.tails.get(key) === tail) this.tails.delete(key)
    }
    const tail: Promise<void> = result.then(release, release)
    this.tails.set(key, tail)
    return result
  }

  get pendingKeys(): number {
    return this.tails.size
  }
}
