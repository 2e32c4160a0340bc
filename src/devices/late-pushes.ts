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
 * live push's is (`IOTHUB_PUSH_TIMEOUT`, config.ts), and a broker that does not answer in time gets the push at
 * their next pass.
 *
 * A change through another replica (EMQX mode, the store shared) can still be stored while the
 * publish is under way, and its own push be taken first: the device would keep the older value.
 * So once the broker has taken the late push, its keys are read again, in a turn of their own;
 * where they changed, the push is published again with them, and read again — SETTLE_TRIES
 * publishes in all. A change the last read does not see is stored after it, and its replica
 * publishes it after storing it: after this push was taken, so, as far as the broker keeps the
 * order of two publishes the second of which was asked for once the first was taken, it reaches
 * the device last. Left: a device changed through other replicas while each of those publishes is
 * under way, SETTLE_TRIES times running, may keep the older value until its next push.
 *
 * Commands and raw bytes go as they were journaled: each is a message of its own, not a state the
 * device keeps. A command too late to go (IOTHUB_COMMAND_EXPIRY, left-pushes.ts) is not published
 * again, and its stored entry says so (`expire`).
 */
import type { Logger } from 'pino'
import { expireCommands, isJsonObject, type ExpiredPush, type JsonObject } from '../domain/device-properties.js'
import type { StoredPush } from '../store/store.js'
import { UNCHANGED, type DeviceProperties } from './device-properties.js'
import type { BrokerMessage } from './dispatcher.js'
import { journaledMessage, pushTarget } from './left-pushes.js'

type PushTarget = NonNullable<ReturnType<typeof pushTarget>>

/**
 * Publishes of one late attributes push at most: the first, and those after a read found its keys
 * changed through another replica meanwhile. Each is made in a turn of its own, so the device's
 * own publishes wait for one publish at a time, as for a live push.
 */
export const SETTLE_TRIES = 3

type Publish = (message: BrokerMessage) => Promise<void>

export class LatePushes {
  constructor(
    private readonly properties: Pick<DeviceProperties, 'find' | 'inTurn' | 'sharesStore' | 'update'>,
    private readonly log: Logger
  ) {}

  /** Publishes `push` as it should go now (`asNow`), in its device's turn; false when nothing was left to say. */
  async send(push: StoredPush, publish: Publish): Promise<boolean> {
    const target = pushTarget(push.topic)
    if (!target) {
      await publish(journaledMessage(push))
      return true
    }
    const published = await this.properties.inTurn(target.deviceId, async () => {
      const message = await this.asNow(push, target)
      if (message) await publish(message)
      return message
    })
    if (!published) return false
    // where this replica is the store's only writer, no change can have come meanwhile
    if (target.property === 'attributes' && this.properties.sharesStore) await this.settle(push, target, published, publish)
    return true
  }

  /**
   * Pushes of one device dropped unpublished, too old to send (left-pushes.ts, `expiry`): the
   * commands among them are marked `expired` under the device's `commands` (expireCommands), in
   * one change that removes the pushes' records with it — so a command is not dropped unmarked,
   * nor counted twice. Resolves true when that change removed the records; false when there was
   * nothing to mark (raw bytes, a command answered or no longer kept, a device gone), and the
   * records are the caller's to remove. Rejects, the records left, when the store fails.
   */
  async expire(deviceId: string, pushes: readonly StoredPush[]): Promise<boolean> {
    const expiring: ExpiredPush[] = []
    for (const push of pushes) {
      const id = pushTarget(push.topic)?.property === 'commands' ? parsedObject(journaledMessage(push).payload)?.id : undefined
      if (typeof id === 'string') expiring.push({ id, pushedAt: push.at })
    }
    if (expiring.length === 0) return false
    const at = Date.now()
    const marked = await this.properties.update(
      deviceId,
      'commands',
      (current, view) => (view.device(deviceId) && isJsonObject(current) ? (expireCommands(current, expiring, at) ?? UNCHANGED) : UNCHANGED),
      { reads: { devices: [deviceId] }, storeWith: pushes.map((push) => ({ op: 'push.delete', run: push.run, seq: push.seq })) }
    )
    return marked !== UNCHANGED
  }

  /**
   * Publishes `push` again while its keys' stored values differ from what was published last.
   * The push was taken: a failure here leaves it so (not kept, not dropped), and is logged.
   */
  private async settle(push: StoredPush, target: PushTarget, published: BrokerMessage, publish: Publish): Promise<void> {
    try {
      for (let tries = 1; tries < SETTLE_TRIES; tries++) {
        const last = published
        const again = await this.properties.inTurn(target.deviceId, async () => {
          const now = await this.asNow(push, target)
          if (!now || now.payload.equals(last.payload)) return undefined
          await publish(now)
          return now
        })
        if (!again) return
        published = again
      }
    } catch (error) {
      this.log.warn(
        { topic: push.topic, err: (error as Error).message },
        "a late push was taken, and another replica's later change of its keys could not be published after it: the device may hold the older values until its next push"
      )
    }
  }

  /** The message to publish now for `push` (to `target`), published late; undefined when nothing is left to say. */
  private async asNow(push: StoredPush, target: PushTarget): Promise<BrokerMessage | undefined> {
    const journaled = journaledMessage(push)
    if (target.property !== 'attributes') return journaled
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
