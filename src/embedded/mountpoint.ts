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
import type { EventEmitter } from 'node:events'
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

/** Decides a connection's mountpoint from its CONNECT: one for every connection (connect.ts). */
export interface Mounter {
  mountpointOf(client: Client, connect: ConnectPacket): string
}

/** What a client's parser keeps for its packet listener: on the parser, not in a closure. */
const MOUNTING = Symbol('iothub mounting')

interface Mounting {
  mounter: Mounter
  client: Client
  /** Decided with the CONNECT (always the first packet); it holds for the connection's life. */
  mountpoint: string | undefined
}

type MountingParser = EventEmitter & { [MOUNTING]: Mounting }

export function mountClientTopics(client: Client, mounter: Mounter): void {
  const parser = packetParser(client) as MountingParser
  parser[MOUNTING] = { mounter, client, mountpoint: undefined }
  parser.prependListener('packet', mountPacket)
}

/** The parser's `packet` listener, one function for every client (called on the parser). */
function mountPacket(this: MountingParser, packet: ParsedPacket): void {
  const mounting = this[MOUNTING]
  if (packet.cmd === 'connect') {
    mounting.mountpoint ??= mounting.mounter.mountpointOf(mounting.client, packet as unknown as ConnectPacket)
    if (packet.will) packet.will.topic = mountTopic(mounting.mountpoint, packet.will.topic)
    return
  }
  const { mountpoint } = mounting
  if (mountpoint === undefined) return // no CONNECT yet: Aedes refuses the packet itself
  switch (packet.cmd) {
    case 'publish':
      packet.topic = mountTopic(mountpoint, packet.topic!)
      break
    case 'subscribe':
      for (const s of packet.subscriptions!) s.topic = mountTopic(mountpoint, s.topic)
      break
    case 'unsubscribe':
      packet.unsubscriptions = packet.unsubscriptions!.map((t) => mountTopic(mountpoint, t))
      break
  }
}
