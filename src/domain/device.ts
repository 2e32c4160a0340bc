/** The device entity: a registered device and its credentials (the MQTT password is its token). */
import { randomBytes, randomUUID } from 'node:crypto'
import { secretMatches } from './secret.js'

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
  token: string
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

export function createDevice(input: NewDevice, now: number = Date.now()): Device {
  return {
    id: input.id ?? randomUUID(),
    name: input.name ?? '',
    owner: input.owner ?? '',
    group: input.group ?? 'default',
    desc: input.desc ?? '',
    ext: input.ext ?? {},
    // 192 random bits, URL-safe so it can be pasted into a curl; its alphabet does not matter
    // because the token is only ever compared, never parsed.
    token: randomBytes(24).toString('base64url'),
    createdAt: now,
    updatedAt: now
  }
}

/** Compares a presented password with a device token without leaking timing. */
export function tokenMatches(device: Device, presented: Buffer | string | undefined): boolean {
  return secretMatches(device.token, presented)
}

