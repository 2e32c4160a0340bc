/**
 * What one stored message weighs against a byte limit: its topic and payload. The rest of a
 * packet is a few fixed fields, the same for every message, so it is left out.
 */
export function messageBytes(packet: { topic?: string; payload?: Buffer | Uint8Array | string }): number {
  const { topic = '', payload } = packet
  const payloadBytes = payload === undefined ? 0 : typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
  return Buffer.byteLength(topic) + payloadBytes
}
