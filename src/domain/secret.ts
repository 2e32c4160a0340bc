import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'

/** Compares a presented secret (a token, a password) with the expected one without leaking timing. */
export function secretMatches(expected: string, presented: Buffer | string | undefined): boolean {
  return secretMatcher(expected)(presented)
}

/** `secretMatches` against one expected secret, encoded once: for a check made on every request. */
export function secretMatcher(expected: string): (presented: Buffer | string | undefined) => boolean {
  const wanted = Buffer.from(expected, 'utf8')
  return (presented) => {
    if (presented === undefined) return false
    const given = Buffer.isBuffer(presented) ? presented : Buffer.from(presented, 'utf8')
    return given.length === wanted.length && timingSafeEqual(given, wanted)
  }
}

/** Bytes of a store's token key (HMAC-SHA256's block is 64; a key of 32 random bytes is its full strength). */
export const TOKEN_KEY_BYTES = 32

/** A new key for a store's token hashes: made once, at the store's first start or its upgrade. */
export function newTokenKey(): Buffer {
  return randomBytes(TOKEN_KEY_BYTES)
}

/**
 * Device tokens as they are stored: HMAC-SHA256 of the token under a key the store keeps, in
 * base64url. Not a password hash (scrypt, argon2): those are slow on purpose, to make guessing a
 * person's low-entropy password costly, and would cost every CONNECT as much. A device token is
 * 192 random bits made by the hub, which no amount of guessing reaches, so what a stored hash
 * must resist is being read (a leaked backup, a replica's log) and used as a password: a keyed
 * hash does that, and checks a login in microseconds. The key lives in the store beside the
 * hashes, so it guards against a leak of the rows (the change log, a listing, an event), not of
 * the whole store — which holds nothing a device could log in with either way.
 */
export class TokenHasher {
  constructor(private readonly key: Buffer) {
    if (key.length < 16) throw new Error(`a token key of ${key.length} bytes is too short`)
  }

  hash(token: string): string {
    return createHmac('sha256', this.key).update(token, 'utf8').digest('base64url')
  }

  /** Whether `presented` is the token whose hash is `stored`, compared in constant time. */
  matches(stored: string, presented: Buffer | string | undefined): boolean {
    if (presented === undefined) return false
    const given = createHmac('sha256', this.key).update(presented).digest()
    const wanted = Buffer.from(stored, 'base64url')
    return given.length === wanted.length && timingSafeEqual(given, wanted)
  }
}
