/**
 * Sessions the registry lists as connected while the carrier holds no such connection: their
 * end was never stored (the store failed and the hub restarted before it could), or never
 * heard. An operator's kick ends them, and so does the pass run when the store comes back.
 */
import type { DisconnectReason } from '../domain/session.js'
import type { SessionRegistry } from '../registry/registry.js'

/**
 * A connection recorded this recently may still be finishing its CONNECT in the broker (the
 * session is stored before the broker lists the client): it is left alone, its own close ends it.
 */
export const SETTLING_MS = 5000

/**
 * Ends `clientId`'s session if it is connected, is still the incarnation `seen` (a connection
 * made since is not touched), and did not connect just now. `seen` is read before the carrier
 * was asked, so what it answered is about that connection.
 */
export function endListedOnly(registry: SessionRegistry, clientId: string, seen: string | undefined, reason: DisconnectReason): Promise<boolean> {
  if (seen === undefined) return Promise.resolve(false)
  return registry.endUnheld(clientId, reason, (s) => s.incarnation === seen && s.connectedAt < Date.now() - SETTLING_MS)
}
