import type { BrokerMessage } from '../../src/devices/dispatcher.js'
import { journaledMessage } from '../../src/devices/left-pushes.js'
import type { StoredPush } from '../../src/store/store.js'

/**
 * A stand-in for LatePushes (src/devices/late-pushes.ts) that publishes every push as it was
 * journaled: for tests of which pushes are published, and in what order, not of what they say.
 */
export const asJournaled = {
  async send(push: StoredPush, publish: (message: BrokerMessage) => Promise<void>): Promise<boolean> {
    await publish(journaledMessage(push))
    return true
  },
  /** No device entity here to mark an expired command in: the records are the pass's to remove. */
  async expire(): Promise<boolean> {
    return false
  }
}
