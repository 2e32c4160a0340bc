import { timingSafeEqual } from 'node:crypto'

/** Compares a presented secret (a token, a password) with the expected one without leaking timing. */
export function secretMatches(expected: string, presented: Buffer | string | undefined): boolean {
  if (presented === undefined) return false
  const given = Buffer.isBuffer(presented) ? presented : Buffer.from(presented, 'utf8')
  const wanted = Buffer.from(expected, 'utf8')
  return given.length === wanted.length && timingSafeEqual(given, wanted)
}
