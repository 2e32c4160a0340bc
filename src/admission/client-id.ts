/**
 * Who may use a client id. A client id names one session, and the hub keeps one rule for it in
 * every transport (MQTT, CoAP, EMQX's hooks), so that no device can take another's identity:
 *
 * 1. A client id that is the id of a registered device belongs to that device. Another device
 *    may not use it — otherwise it could hold the session under the victim's own id (for the
 *    whole session expiry, renewably) and lock the victim out. A superuser may (an operator's
 *    tool acting for the device), but the device itself can always take it back.
 * 2. Any other client id belongs to the device whose session holds it, until that session ends
 *    (kick it, or let it expire, to hand the id over): another device can neither take the
 *    session over nor resume it and receive what was queued for it.
 *
 * So a device reclaims its own id from whoever holds it: the holder's session is discarded
 * (never resumed by the device: its topics and queue were another namespace's).
 */
import type { RejectReason } from '../observability/metrics.js'

export type ClientIdVerdict =
  | { kind: 'free' }
  /** Held by another device's (or a superuser's) session, and the connecting device owns the id. */
  | { kind: 'reclaim' }
  | { kind: 'refused'; reason: RejectReason; message: string }

export interface ClientIdClaim {
  clientId: string
  /** The device logging in; undefined for a superuser. */
  deviceId: string | undefined
  /** The device whose session holds the client id now ('' for a superuser's), if any. */
  holderDeviceId: string | undefined
  isDevice: (id: string) => boolean
}

export function claimClientId({ clientId, deviceId, holderDeviceId, isDevice }: ClientIdClaim): ClientIdVerdict {
  const ownId = deviceId !== undefined && clientId === deviceId
  if (!ownId && deviceId !== undefined && isDevice(clientId)) {
    return { kind: 'refused', reason: 'client_id_reserved', message: 'client id is the id of another device' }
  }
  const claimant = deviceId ?? ''
  if (holderDeviceId === undefined || holderDeviceId === claimant) return { kind: 'free' }
  if (ownId) return { kind: 'reclaim' }
  return { kind: 'refused', reason: 'not_authorized', message: "client id is held by another device's session" }
}
