/**
 * Who may log in, and as what: the one admission every transport asks — the embedded MQTT
 * broker, the CoAP gateway and EMQX's authentication hook. It takes what any transport knows of
 * a login (its protocol, client id, username, password and peer) and answers an admission (the
 * device, its namespace, whether a superuser) or a refusal with its reason. A transport only
 * maps the refusal's reason to its own answer (a CONNACK code, a CoAP 4.xx, a hook's verdict).
 *
 * The rules, in the order they are checked:
 * 1. the client id: at most `maxClientIdLength` characters (and present, for CoAP);
 * 2. who logs in: the API credentials make an MQTT client a superuser (from loopback only while
 *    they are the default ones, superuser.ts); anyone else is a device, named by the username
 *    (MQTT; without authentication, by the client id when there is no username) or by the
 *    client id (CoAP, whose usernames were too short to carry it), and the name must be a valid
 *    device id;
 * 3. with token authentication, the password is the device's token, behind the login throttle
 *    (login-guard.ts): an address guessing is refused unseen, logins for a device id being
 *    guessed at are held one wait apart — where the transport can hold a login;
 * 4. the device is not flapping: more than `maxConnectsPerDevice` connects within a minute
 *    refuses it for `flappingBan` ms (flapping.ts, EMQX's flapping detection);
 * 5. the client id is the device's to use, and the device is under its session limit
 *    (session-admission.ts, client-id.ts). A device taking its own id back from another's
 *    session is admitted with `reclaim`, where the transport can act on it.
 */
import { NO_MOUNTPOINT, deviceMountpoint } from '../domain/namespace.js'
import { isValidDeviceId } from '../domain/device.js'
import type { HubConfig } from '../config.js'
import type { RejectReason } from '../observability/metrics.js'
import type { LoginGuard } from './login-guard.js'
import type { SessionAdmission, StoredSessionFacts } from './session-admission.js'
import { FlappingDetector } from './flapping.js'
import { checkSuperuser } from './superuser.js'

export interface Login {
  /** How the device is named: an MQTT client by its username, a CoAP client by its client id. */
  protocol: 'mqtt' | 'coap'
  clientId: string
  username: string | undefined
  password: Buffer | string | undefined
  /** The client's address, for the login throttle and the superuser's loopback rule. */
  peer: string | null | undefined
}

/** Who a login claims to be, before any credential is checked. */
export type Identity =
  | { ok: true; superuser: true; deviceId: undefined; mountpoint: string }
  | { ok: true; superuser: false; deviceId: string; mountpoint: string }
  | Refusal

export interface Refusal {
  ok: false
  reason: RejectReason
  message: string
  /** How long the login is refused for, when the refusal is a wait (the login throttle, flapping): for a transport that can say so. */
  retryAfterMs?: number
}

export type Admission = {
  ok: true
  superuser: boolean
  /** The device logging in; '' for a superuser, who has none. */
  deviceId: string
  /** Where its topics live on the broker. */
  mountpoint: string
  /** The device takes its own client id back from another's session: that session must go first. */
  reclaim: boolean
  /** Must be called once the session is recorded or refused (it holds a place under the device's session limit). */
  release: () => void
}

export interface AdmitOptions {
  /**
   * The transport can hold a login while its device id is throttled. EMQX waits for its
   * authentication hook's answer, so there only a guessing address is refused.
   */
  canWait: boolean
  /**
   * The transport can close another's session to give a device its own id back. Through EMQX
   * it cannot: EMQX would resume the holder's session, subscriptions and queue included.
   */
  canReclaim: boolean
  /** Checked after a held login's wait: the client gave up, so its login is not checked at all. */
  abandoned?: () => boolean
}

export interface DeviceCredentials {
  /** May read the store (a device another replica has just created): then a promise. */
  authenticate(deviceId: string, password: Buffer | string | undefined): boolean | Promise<boolean>
}

/** Most devices the flapping detection remembers at once (those whose minute began last are kept). */
const FLAPPING_KEYS = 100_000

export class AdmissionPolicy {
  /** Rule 4; none when `maxConnectsPerDevice` is 0. */
  private readonly flapping: FlappingDetector | undefined

  constructor(
    private readonly config: HubConfig,
    private readonly credentials: DeviceCredentials,
    private readonly loginGuard: LoginGuard,
    private readonly sessions: SessionAdmission,
    /** Told when the API credentials are refused (the default ones, from a remote peer): the operator must change them. */
    private readonly onDefaultCredentialsRefused: (peer: string | null | undefined) => void = () => undefined,
    /**
     * Where the caches do not hold the fleet (PostgreSQL), what an asynchronous admission reads
     * from the store; absent, the caches answer (and `admitSession` can answer at once).
     */
    private readonly readStoredFacts?: (clientId: string, deviceId: string | undefined) => Promise<StoredSessionFacts>
  ) {
    this.flapping =
      config.maxConnectsPerDevice > 0 ? new FlappingDetector({ maxConnects: config.maxConnectsPerDevice, banMs: config.flappingBan, maxKeys: FLAPPING_KEYS }) : undefined
  }

  /**
   * Rules 1 and 2: who the login claims to be, which names its namespace. Synchronous, so a
   * transport can mount a connection's topics before its login is checked.
   */
  identify(login: Login): Identity {
    const { clientId, username } = login
    // an empty MQTT client id is the broker's to fill in (clean sessions only: the transport's rule)
    if (clientId.length === 0 && login.protocol === 'coap') return refusal('bad_client_id', 'client id is required')
    if (clientId.length > this.config.maxClientIdLength) return refusal('bad_client_id', `client id longer than ${this.config.maxClientIdLength} characters`)
    if (login.protocol === 'coap') {
      if (!isValidDeviceId(clientId)) return refusal('bad_client_id', 'client id must name a device (letters, digits and . _ : @ - only)')
      return { ok: true, superuser: false, deviceId: clientId, mountpoint: deviceMountpoint(clientId) }
    }
    const superuser = checkSuperuser(this.config, username, login.password, login.peer)
    if (superuser === 'superuser') return { ok: true, superuser: true, deviceId: undefined, mountpoint: NO_MOUNTPOINT }
    if (superuser === 'refused') {
      this.onDefaultCredentialsRefused(login.peer)
      return refusal('not_authorized', 'the default API credentials are refused from a remote peer')
    }
    const deviceId = mqttDeviceId(this.config.auth, clientId, username)
    if (this.config.auth === 'none') {
      if (!isValidDeviceId(deviceId)) {
        return username
          ? refusal('bad_username', 'username cannot name a device namespace (letters, digits and . _ : @ - only)')
          : refusal('bad_client_id', 'client id cannot name a device namespace (letters, digits and . _ : @ - only)')
      }
      return { ok: true, superuser: false, deviceId, mountpoint: deviceMountpoint(deviceId) }
    }
    // with tokens the username names the device; one that cannot is a login no token matches
    if (!isValidDeviceId(deviceId)) return refusal('not_authorized', 'the username must be a device id (letters, digits and . _ : @ - only)')
    return { ok: true, superuser: false, deviceId, mountpoint: deviceMountpoint(deviceId) }
  }

  /** All five rules: an admission, or why not. */
  async admit(login: Login, options: AdmitOptions): Promise<Admission | Refusal> {
    const identity = this.identify(login)
    if (!identity.ok) return identity
    return this.admitIdentified(login, identity, options)
  }

  /** Rules 3 to 5, for a login whose identity the transport already has (MQTT decides it as the CONNECT is parsed). */
  async admitIdentified(login: Login, identity: Identity & { ok: true }, options: AdmitOptions): Promise<Admission | Refusal> {
    if (!identity.superuser && this.config.auth === 'token') {
      const checked = await this.checkToken(identity.deviceId, login, options)
      if (checked) return checked
    }
    // superusers (the operators' tools) are not held to it
    const bannedMs = identity.superuser ? 0 : (this.flapping?.connect(identity.deviceId) ?? 0)
    if (bannedMs > 0) {
      return refusal('flapping', `device ${identity.deviceId} connected more than ${this.config.maxConnectsPerDevice} times within a minute: refused for ${Math.ceil(bannedMs / 1000)} s`, bannedMs)
    }
    const stored = this.readStoredFacts ? await this.readStoredFacts(login.clientId, identity.deviceId) : undefined
    return this.admitSession(login.clientId, identity, options, stored)
  }

  /**
   * Rule 5 alone, for a login already identified and checked: a transport that serializes the
   * connects of one client id asks again under that lock, since another device's connect may
   * have taken the id meanwhile.
   */
  admitSession(clientId: string, identity: Identity & { ok: true }, options: Pick<AdmitOptions, 'canReclaim'>, stored?: StoredSessionFacts): Admission | Refusal {
    const session = this.sessions.admit(clientId, identity.deviceId, stored)
    if (!session.ok) return refusal(session.reason, session.message)
    if (session.reclaim && !options.canReclaim) {
      session.release()
      return refusal('not_authorized', 'client id is held by another session (kick it to take the id back)')
    }
    return { ok: true, superuser: identity.superuser, deviceId: identity.deviceId ?? '', mountpoint: identity.mountpoint, reclaim: session.reclaim, release: session.release }
  }

  /** Rule 3: the device's token, behind the login throttle; null once it is right. */
  private async checkToken(deviceId: string, login: Login, options: AdmitOptions): Promise<Refusal | null> {
    for (;;) {
      const gate = this.loginGuard.gate(login.peer, deviceId)
      if (gate.kind === 'refused') return refusal('login_throttled', `too many wrong logins from this address: try again in ${Math.ceil(gate.waitMs / 1000)} s`, gate.waitMs)
      if (gate.kind === 'check' || !options.canWait) break
      // guesses against this device come one wait apart; the device itself gets in after it
      const held = await new Promise<boolean>((resume) => {
        if (!this.loginGuard.hold(login.peer, gate.waitMs, () => resume(true))) resume(false)
      })
      if (!held) return refusal('login_throttled', 'too many logins from this address waiting for a throttled device id')
      if (options.abandoned?.()) return refusal('login_throttled', 'the client left while its login was held')
    }
    const valid = await this.credentials.authenticate(deviceId, login.password)
    this.loginGuard.settle(login.peer, deviceId, valid)
    return valid ? null : refusal('not_authorized', 'not authorized: the password must be the device token')
  }
}

/**
 * The device an MQTT login names (as a device; whether the name is a valid device id is rule 2's
 * to say): with tokens its username, without authentication its username or else its client id.
 */
export function mqttDeviceId(auth: HubConfig['auth'], clientId: string, username: string | null | undefined): string {
  return auth === 'none' ? username || clientId : (username ?? '')
}

function refusal(reason: RejectReason, message: string, retryAfterMs?: number): Refusal {
  return retryAfterMs === undefined ? { ok: false, reason, message } : { ok: false, reason, message, retryAfterMs }
}
