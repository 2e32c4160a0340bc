/**
 * Who logs in as a superuser: a client presenting the HTTP API's credentials (the operator's
 * tools, a fleet dashboard). The rule is the same whichever broker carries the connection.
 * The default credentials are public knowledge, so — as for the HTTP API — they count only
 * from loopback.
 */
import { usesDefaultApiCredentials, type HubConfig } from '../config.js'
import { secretMatches } from '../domain/secret.js'

/** `refused`: the API credentials, but the default ones from a remote peer. */
export type SuperuserCheck = 'superuser' | 'refused' | 'not_superuser'

export function checkSuperuser(config: HubConfig, username: string | undefined | null, password: Buffer | string | undefined, peerHost: string | null | undefined): SuperuserCheck {
  if (username === undefined || username === null || username !== config.apiUser || !secretMatches(config.apiPassword, password)) return 'not_superuser'
  if (!usesDefaultApiCredentials(config) || isLoopback(peerHost)) return 'superuser'
  return 'refused'
}

export function isLoopback(host: string | null | undefined): boolean {
  return host === '127.0.0.1' || host === '::1' || host === '::ffff:127.0.0.1' || (host?.startsWith('127.') ?? false)
}
