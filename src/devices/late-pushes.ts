/**
 * What a push published late says. A push published from the journal (push-journal.ts) — by
 * another run, the one that stored it having crashed before routing it, or by its own run once the
 * broker that refused it takes pushes again (kept-pushes.ts) — may reach its device after the
 * push of a later change of the same property, which was routed at once. For attributes, the
 * journaled patch would then put older values on the device than the hub stores. So a late
 * attributes push carries the patch's keys with their values as stored now: the same keys the
 * device was to hear about, and not an older value than a later push already gave it (at worst
 * the same one twice). A key the device no longer has (it was deleted, and maybe made again) is
 * left out; a push left with no key is not published.
 *
 * The read and the publish take the device's turn among this replica's changes of it
 * (`DeviceProperties.inTurn`), as a live push does: no change through this replica comes between
 * them. The device's own upstream data waits for that turn too, so callers bound the publish as a
 * live push's is (`PUSH_PUBLISH`), and a broker that does not answer in time gets the push at
 * their next pass.
 *
 * A change through another replica (EMQX mode) can still be stored while the publish is under way,
 * and its push routed before this one: the device would then keep the older value. So once the
 * broker has taken the push, the values are read again; where they changed, the push is published
 * again with them (up to SETTLE_TRIES publishes in all). A change that the second read does not
 * see is stored after it, and its replica publishes it after storing it — after this push was
 * taken, so it reaches the device after this one.
 *
 * Commands and raw bytes go as they were journaled: each is a message of its own, not a state the
 * device keeps.
 */
import { isJsonObject, type JsonObject } from '../domain/device-properties.js'
import type { StoredPush } from '../store/store.js'
import type { DeviceProperties } from './device-properties.js'
import type { BrokerMessage } from './dispatcher.js'
import { journaledMessage, pushTarget } from './left-pushes.js'

/**
 * Publishes of one late attributes push at most: the first, and those after a read found the
 * values changed by another replica meanwhile. A device changed through another replica faster
 * than a publish takes is told by those changes' own pushes; more tries would only hold its turn.
 */
export const SETTLE_TRIES = 3

export class LatePushes {
  constructor(private readonly properties: Pick<DeviceProperties, 'find' | 'inTurn'>) {}

  /** Publishes `push` as it should go now (`asNow`), in its device's turn; false when nothing was left to say. */
  async send(push: StoredPush, publish: (message: BrokerMessage) => Promise<void>): Promise<boolean> {
    const target = pushTarget(push.topic)
    const send = async (): Promise<boolean> => {
      let message = await this.asNow(push, target)
      if (!message) return false
      for (let tries = 1; ; tries++) {
        await publish(message)
        // commands and raw bytes are messages, not values a later change could make stale
        if (target?.property !== 'attributes' || tries === SETTLE_TRIES) return true
        const now = await this.asNow(push, target)
        if (!now || now.payload.equals(message.payload)) return true
        message = now
      }
    }
    return target ? this.properties.inTurn(target.deviceId, send) : send()
  }

  /** The message to publish now for `push` (to `target`), published late; undefined when nothing is left to say. */
  private async asNow(push: StoredPush, target: ReturnType<typeof pushTarget>): Promise<BrokerMessage | undefined> {
    const journaled = journaledMessage(push)
    if (target?.property !== 'attributes') return journaled
    const patch = parsedObject(journaled.payload)
    if (patch === undefined) return journaled
    const stored = (await this.properties.find(target.deviceId)).values.attributes
    const now: JsonObject = {}
    let keys = 0
    for (const key of Object.keys(patch)) {
      if (!isJsonObject(stored) || !Object.hasOwn(stored, key)) continue
      now[key] = stored[key]
      keys++
    }
    return keys === 0 ? undefined : { ...journaled, payload: Buffer.from(JSON.stringify(now)) }
  }
}

function parsedObject(payload: Buffer): JsonObject | undefined {
  try {
    const value: unknown = JSON.parse(payload.toString('utf8'))
    return isJsonObject(value) ? value : undefined
  } catch {
    return undefined
  }
}
