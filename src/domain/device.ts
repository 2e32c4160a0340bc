/**
 * The device entity: a registered device and its credentials. The MQTT password is its token,
 * which the hub shows once — when the device is created or its token replaced — and keeps only
 * as a hash (secret.ts, TokenHasher).
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import type { TokenHasher } from './secret.js'

/**
 * A device id becomes its MQTT username and its topic namespace (`{id}/`), so it has no
 * `/ + # $`: another device's topics can never be named through it.
 */
export const DEVICE_ID_PATTERN = '^[A-Za-z0-9._:@-]{1,128}$'
const DEVICE_ID = new RegExp(DEVICE_ID_PATTERN)

export function isValidDeviceId(id: string): boolean {
  return DEVICE_ID.test(id)
}

export interface Device {
  id: string
  name: string
  owner: string
  group: string
  desc: string
  ext: Record<string, unknown>
  /** The token's keyed hash (TokenHasher); the token itself is never stored. */
  tokenHash: string
  /** Epoch milliseconds. */
  createdAt: number
  updatedAt: number
}

export interface NewDevice {
  id?: string
  name?: string
  owner?: string
  group?: string
  desc?: string
  ext?: Record<string, unknown>
}

/** A device as made, and its token: the only time the token is known to the hub. */
export interface CreatedDevice {
  device: Device
  token: string
}

/**
 * A new token: 192 random bits, URL-safe so it can be pasted into a curl; its alphabet does not
 * matter because the token is only ever hashed and compared, never parsed.
 */
export function newToken(): string {
  return randomBytes(24).toString('base64url')
}

export function createDevice(input: NewDevice, hasher: TokenHasher, now: number = Date.now()): CreatedDevice {
  const token = newToken()
  const device: Device = {
    id: input.id ?? randomUUID(),
    name: input.name ?? '',
    owner: input.owner ?? '',
    group: input.group ?? 'default',
    desc: input.desc ?? '',
    ext: input.ext ?? {},
    tokenHash: hasher.hash(token),
    createdAt: now,
    updatedAt: now
  }
  return { device, token }
}

/** The fields a device's owner may change (`PATCH /v1/devices/{id}`); its id, owner and token are not among them. */
export interface DeviceChange {
  name?: string
  desc?: string
  group?: string
  ext?: Record<string, unknown>
}

/** Whether `change` would make `device` other than it is (a PATCH of the same values changes nothing). */
export function changesDevice(device: Device, change: DeviceChange): boolean {
  return (
    (change.name !== undefined && change.name !== device.name) ||
    (change.desc !== undefined && change.desc !== device.desc) ||
    (change.group !== undefined && change.group !== device.group) ||
    (change.ext !== undefined && !isDeepStrictEqual(change.ext, device.ext))
  )
}

/** The device after `change` (its time of change never goes back). */
export function changeDevice(device: Device, change: DeviceChange, now: number): Device {
  const next: Device = {
    ...device,
    ...(change.name !== undefined ? { name: change.name } : {}),
    ...(change.desc !== undefined ? { desc: change.desc } : {}),
    ...(change.group !== undefined ? { group: change.group } : {}),
    ...(change.ext !== undefined ? { ext: change.ext } : {})
  }
  return { ...next, updatedAt: Math.max(now, device.updatedAt) }
}

/** Whether `presented` is the device's token. */
export function tokenMatches(device: Device, hasher: TokenHasher, presented: Buffer | string | undefined): boolean {
  return hasher.matches(device.tokenHash, presented)
}
