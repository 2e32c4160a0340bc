/**
 * Puts a client's topics under its mountpoint as its packets are parsed, before Aedes handles
 * any of them. Everything inside the broker — routing, our authorization hooks, the
 * persistence, the registry — then sees the broker's topics only; the way back out (a
 * delivery) takes the mountpoint off again in `authorizeForward`.
 *
 * Aedes has hooks to change a SUBSCRIBE's topics and a PUBLISH's, but none for UNSUBSCRIBE or
 * the will of a CONNECT, so the rewrite sits one step earlier, on the client's packet parser
 * (mqtt-packet's `packet` event). The listener goes first, so Aedes never sees a packet
 * unmounted, including packets that arrive in the same read as the CONNECT.
 */
import type { Client, ConnectPacket } from 'aedes'
import { mountTopic } from '../domain/namespace.js'
import { packetParser } from './aedes-internals.js'

interface ParsedPacket {
  cmd: string
  topic?: string
  subscriptions?: { topic: string }[]
  unsubscriptions?: string[]
  will?: { topic: string } | null
}

/** Aedes keeps the client's mqtt-packet parser here; public in its JavaScript, not its types. */
/**
 * `mountpointOf` is asked once, with the CONNECT (always the first packet); the answer holds
 * for the connection's life.
 */
export function mountClientTopics(client: Client, mountpointOf: (connect: ConnectPacket) => string): void {
  let mountpoint: string | undefined
  packetParser(client).prependListener('packet', (packet: ParsedPacket) => {
    if (packet.cmd === 'connect') {
      mountpoint ??= mountpointOf(packet as unknown as ConnectPacket)
      if (packet.will) packet.will.topic = mountTopic(mountpoint, packet.will.topic)
      return
    }
    if (mountpoint === undefined) return // no CONNECT yet: Aedes refuses the packet itself
    switch (packet.cmd) {
      case 'publish':
        packet.topic = mountTopic(mountpoint, packet.topic!)
        break
      case 'subscribe':
        for (const s of packet.subscriptions!) s.topic = mountTopic(mountpoint, s.topic)
        break
      case 'unsubscribe':
        packet.unsubscriptions = packet.unsubscriptions!.map((t) => mountTopic(mountpoint!, t))
        break
    }
  })
}
