/**
 * Device deletions under way, so that a property change of one of their devices waits for them.
 *
 * A deletion is decided under its sessions' locks (device-removal.ts), a property change under
 * the device's property queue (devices/device-properties.ts): no lock is common to both. Where
 * this process alone writes the store (SQLite), both decide from the caches, which show a
 * deletion only once it is committed; a property change decided in between would still find the
 * device, and be committed after the deletion — a property row of a device that is gone, shown
 * again when a device of the same id is made. Waiting for the deletion first, the change finds
 * the device gone and is refused. Where the store decides in its transactions (PostgreSQL), the
 * stored device decides either way, and the wait only orders the two.
 */
export class DeletionsInFlight {
  /** By device id: settles once every deletion of it begun so far has been stored or refused. */
  private readonly pending = new Map<string, Promise<void>>()

  /** Runs `deletion` of `deviceId`; its property changes asked meanwhile wait until it ends. */
  async around<T>(deviceId: string, deletion: () => Promise<T>): Promise<T> {
    const done = deletion()
    const ended = done.then(
      () => undefined,
      () => undefined
    )
    const before = this.pending.get(deviceId)
    const settled = before ? before.then(() => ended) : ended
    this.pending.set(deviceId, settled)
    try {
      return await done
    } finally {
      await settled
      if (this.pending.get(deviceId) === settled) this.pending.delete(deviceId)
    }
  }

  /** Resolves once no deletion of `deviceId` is under way; undefined when none is. */
  settled(deviceId: string): Promise<void> | undefined {
    return this.pending.get(deviceId)
  }
}
