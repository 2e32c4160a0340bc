/**
 * Turns broker packets into bytes for the store and back. V8's serializer keeps Buffers as
 * Buffers and `undefined` fields as fields, which Aedes (and its persistence test suite) rely
 * on; newer Node versions read what older ones wrote.
 */
import AedesPacket from 'aedes-packet'
import { deserialize, serialize } from 'node:v8'

export function encodePacket(packet: object): Uint8Array {
  return serialize({ ...packet })
}

export function decodePacket<T>(bytes: Uint8Array): T {
  return deserialize(bytes) as T
}

type PacketConstructor = new <T extends object>(original: T, broker?: unknown) => T

/**
 * A copy of `packet` as Aedes' own packet class makes it (the fields a queued message keeps,
 * with a fresh messageId). aedes-packet is a constructor function its types do not call one.
 */
export function clonePacket<T extends object>(packet: T): T {
  return new (AedesPacket as unknown as PacketConstructor)(packet)
}
