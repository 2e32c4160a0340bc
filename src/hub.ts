/**
 * The composition root: wires the store, registry, devices, the carrier of the connections
 * (the embedded broker of embedded/ or the EMQX cluster of emqx/) and the API, and owns start and stop. Start
 * order matters — the store is loaded and the carrier has brought the registry up to date
 * (embedded: the previous run's connections ended) *before* any listener accepts a client.
 */
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { LoginThrottle } from './admission/login-throttle.js'
import { buildApi } from './api/server.js'
import type { ApiContext } from './api/context.js'
import type { Readiness } from './observability/readiness.js'
import type { ConnectionCarrier } from './carrier/carrier.js'
import { EmbeddedCarrier } from './embedded/embedded-carrier.js'
import { EmqxCarrier } from './emqx/emqx-carrier.js'
import { usesDefaultApiCredentials, type HubConfig } from './config.js'
import { portInUse } from './port-in-use.js'
import { HubMetrics } from './observability/metrics.js'
import { createLogger } from './observability/logger.js'
import { observeIncarnation } from './domain/incarnation.js'
import { ConnectInfoTracker } from './devices/connectinfo.js'
import { DeviceProperties } from './devices/device-properties.js'
import { Dispatcher } from './devices/dispatcher.js'
import { KeptPushes } from './devices/kept-pushes.js'
import { LatePushes } from './devices/late-pushes.js'
import { PushJournal } from './devices/push-journal.js'
import { Upstream } from './devices/upstream.js'
import { DeviceDirectory } from './registry/device-directory.js'
import { SessionRegistry } from './registry/registry.js'
import { DeviceSessionCounts } from './registry/device-sessions.js'
import { SessionAdmission, type StoredSessionFacts } from './admission/session-admission.js'
import { LoginGuard } from './admission/login-guard.js'
import { AdmissionPolicy } from './admission/admission-policy.js'
import { SubscriptionBook } from './registry/subscription-book.js'
import { TopicBook } from './registry/topic-book.js'
import { MemoryFleetReads } from './registry/memory-fleet-reads.js'
import { REUSE_MS, registerFleetGauges, type TotalsReader } from './registry/fleet-gauges.js'
import { StatusSampler } from './observability/status-sampler.js'
import type { FleetReads } from './store/fleet-reads.js'
import { PostgresStore } from './store/postgres/postgres-store.js'
import { SqliteStore } from './store/sqlite/sqlite-store.js'
import type { Store } from './store/store.js'
import { deciderFor } from './store/cache-decider.js'
import { replicaRunId } from './store/coordination.js'
import { cacheApplier } from './registry/cache-applier.js'
import { ReplicaKeeper } from './replicas/replica-keeper.js'
import type { Lease } from './replicas/lease.js'
import { StoreProbe } from './store/store-probe.js'
import { StoreReturnWatch } from './store/store-return.js'
import type { CommitObserver } from './store/group-commit.js'
import { TlsCredentials } from './tls/tls-credentials.js'
import { EventLog } from './events/event-log.js'
import { EventStreams } from './events/event-streams.js'
import { eventDeliveries, type EventDeliveries } from './events/event-deliveries.js'
import { EVENT_TOPIC_ROOT } from './events/mqtt-events.js'

export interface HubAddresses {
  http: AddressInfo
  /** Embedded mode: the MQTT listener. */
  mqtt?: AddressInfo
  /** Embedded mode, with a certificate: the MQTT over TLS listener. */
  mqtts?: AddressInfo
  /** Embedded mode: the CoAP gateway (UDP). */
  coap?: AddressInfo
  /** EMQX mode: the ExHook gRPC server. */
  exhook?: AddressInfo
}

export class Hub {
  readonly log: Logger
  readonly metrics: HubMetrics
  readonly store: Store
  readonly registry: SessionRegistry
  readonly devices: DeviceDirectory
  readonly properties: DeviceProperties
  /** Listings and lookups over the whole fleet: the store's queries, or the caches where they hold it. */
  readonly fleet: FleetReads
  /**
   * Whether this replica holds the whole fleet in memory: where it is the store's only writer
   * (SQLite), and with the embedded broker (which routes to offline sessions from memory). Not
   * in EMQX mode on PostgreSQL, where replicas share the store and memory is a bounded cache.
   */
  private readonly holdsFleet: boolean
  /** Wrong logins by client address and device id, for every way in. */
  readonly loginThrottle: LoginThrottle
  /** What carries the connections: the embedded broker, or an EMQX cluster. */
  readonly carrier: ConnectionCarrier
  /** Embedded mode's carrier, for the broker getter; undefined in EMQX mode. */
  private readonly embedded: EmbeddedCarrier | undefined
  /** The configured certificate (MQTT over TLS, HTTPS); undefined without one. */
  readonly tls: TlsCredentials | undefined
  private readonly connectInfo: ConnectInfoTracker
  private readonly sessionCounts = new DeviceSessionCounts()
  private readonly dispatcher: Dispatcher
  /** Pushes stored with their change until the broker routed them (devices/push-journal.ts). */
  private readonly pushJournal: PushJournal
  /** This run's pushes the broker refused, tried again while it lasts. */
  private readonly keptPushes: KeptPushes
  /** GET /v1/events: the change log as events, live from the follower. */
  private readonly events: EventStreams
  /** Events out of the hub: webhooks, MQTT presence topics (each as configured). */
  private readonly deliveries: EventDeliveries
  /** The fleet's totals, shared by the gauges and GET /v1/status (fleet-gauges.ts: how often each is read). */
  private readonly totals: TotalsReader
  /** This replica's recent rates and its last hour, for GET /v1/status. */
  private readonly sampler: StatusSampler
  private api: Awaited<ReturnType<typeof buildApi>> | undefined
  private expiryTimer: NodeJS.Timeout | undefined
  private readonly probe: StoreProbe
  /** This replica among the others on the store; with SQLite, the only one. */
  readonly replicas: ReplicaKeeper
  private readonly expiryLease: Lease
  private storeWatch: NodeJS.Timeout | undefined
  /** Whether the store came back after failing (made when the watch begins). */
  private storeReturn: StoreReturnWatch | undefined
  private addresses: HubAddresses | undefined
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new'
  private starting: Promise<HubAddresses> | undefined

  /**
   * Opens the store the config names, then builds the hub on it. With the SQLite store
   * `new Hub(config)` does the same; PostgreSQL needs a connection first, so it needs this.
   */
  static async open(config: HubConfig, options: { log?: Logger; metrics?: HubMetrics } = {}): Promise<Hub> {
    const log = options.log ?? createLogger(config.logLevel)
    const metrics = options.metrics ?? new HubMetrics()
    // unusable certificate files stop the hub before it opens a connection to the database
    const tls = TlsCredentials.fromConfig(config, metrics, log.child({ component: 'tls' }))
    const store =
      config.store === 'postgres'
        ? await PostgresStore.open({
            connectionString: config.databaseUrl,
            observer: storeObserver(metrics, log),
            timeoutMs: config.storeTimeout,
            replica: replicaRunId(config.node)
          })
        : undefined
    return new Hub(config, { log, metrics, store, tls })
  }

  constructor(
    readonly config: HubConfig,
    options: { log?: Logger; metrics?: HubMetrics; store?: Store; tls?: TlsCredentials } = {}
  ) {
    // every line names the replica that wrote it
    this.log = (options.log ?? createLogger(config.logLevel)).child({ node: config.node })
    this.metrics = options.metrics ?? new HubMetrics()
    this.tls = options.tls ?? TlsCredentials.fromConfig(config, this.metrics, this.log.child({ component: 'tls' }))
    if (!options.store && config.store !== 'sqlite') throw new Error(`the ${config.store} store is opened by Hub.open(config), not new Hub(config)`)
    this.store =
      options.store ??
      new SqliteStore({
        dataDir: config.dataDir,
        synchronous: config.storeSync,
        busyTimeoutMs: config.storeBusyTimeout,
        observer: storeObserver(this.metrics, this.log),
        timeoutMs: config.storeTimeout,
        replica: replicaRunId(config.node)
      })
    // /readyz waits for the store at most a second: a probe's own timeout of seconds would
    // outlast the probe deadline of whatever polls it
    this.probe = new StoreProbe(this.store, { waitMs: Math.min(1000, config.storeTimeout) })
    this.replicas = new ReplicaKeeper(this.store, config, this.metrics, this.log.child({ component: 'replicas' }))
    this.expiryLease = this.replicas.lease('expiry')
    // Where changes are decided: in PostgreSQL's transactions (replicas share it), or against
    // these caches, which then are the store's state (SQLite, this process its only writer)
    const decider = deciderFor(this.store, {
      session: (clientId) => this.registry.cachedSession(clientId),
      device: (id) => this.devices.get(id),
      property: (deviceId, name) => this.properties.stored(deviceId, name),
      sessionsOfDevice: (deviceId) => this.connectInfo.sessionsOf(deviceId)
    })
    const shared = this.store.decide !== undefined
    // a store that cannot answer fleet queries leaves the replica holding the fleet
    this.holdsFleet = !shared || config.broker === 'embedded' || this.store.fleet === undefined
    this.devices = new DeviceDirectory(this.store, shared, this.holdsFleet ? undefined : config.cacheDevices)
    this.devices.decideWith(decider)
    this.registry = new SessionRegistry(
      decider,
      new TopicBook(),
      new SubscriptionBook(),
      (deviceId) => this.devices.get(deviceId)?.owner ?? '',
      this.metrics,
      this.log.child({ component: 'registry' }),
      this.holdsFleet ? { holdsFleet: true } : { holdsFleet: false, sessions: config.cacheSessions }
    )
    this.properties = new DeviceProperties(decider, this.holdsFleet ? undefined : this.store)
    this.fleet = this.holdsFleet || !this.store.fleet ? new MemoryFleetReads(this.registry, this.registry.topics, this.registry.subscriptions, this.devices) : this.store.fleet
    this.totals = registerFleetGauges(this.metrics, this.fleet, this.fleet === this.store.fleet ? REUSE_MS.stored : REUSE_MS.walked)
    this.sampler = new StatusSampler(this.metrics, this.totals, this.log.child({ component: 'status' }))
    this.metrics.gauge('iothub_cache_entries', "Entries in this replica's caches of sessions and devices (bounded where the store is shared)", ['cache'], (set) => {
      set({ cache: 'sessions' }, this.registry.size)
      set({ cache: 'devices' }, this.devices.size)
      set({ cache: 'subscription_entities' }, this.registry.subscriptions.size)
    })
    // normally the few pushes being routed; an EMQX that refuses pushes for long shows here
    this.metrics.gauge(
      'iothub_pushes_waiting',
      "Pushes stored with their change and not yet routed (the push journal, every replica's): those a broker refused wait here to be tried again, and those a crash left for another run",
      [],
      async (set) => set({}, await this.store.countPushes())
    )
    this.metrics.threadCpu(() => this.store.threads?.() ?? [])
    if (shared) this.registry.readSessionsThrough((id) => this.store.readSession(id))
    this.loginThrottle = new LoginThrottle({ failuresAllowed: config.loginFailuresAllowed, firstBackoffMs: config.loginBackoffFirst, backoffMaxMs: config.loginBackoffMax, maxKeys: config.loginThrottleKeys })
    this.connectInfo = new ConnectInfoTracker(this.properties, this.devices, this.log.child({ component: 'connectinfo' }), this.holdsFleet)
    this.registry.observe((before, after) => this.connectInfo.sessionChanged(before, after))
    if (this.holdsFleet) {
      this.registry.observeCache((before, after) => this.connectInfo.sessionCached(before, after))
      this.registry.observeCache(this.sessionCounts.observer)
    }
    const admission = new SessionAdmission(
      { holderOf: (clientId) => this.registry.record(clientId)?.deviceId, isDevice: (id) => this.devices.get(id) !== undefined },
      this.sessionCounts,
      config
    )
    const policy = new AdmissionPolicy(
      config,
      this.devices,
      new LoginGuard(this.loginThrottle),
      admission,
      (peer) =>
        this.log.warn({ peer }, 'superuser login with the default API credentials refused from a remote peer; set IOTHUB_API_USER and IOTHUB_API_PASSWORD'),
      this.holdsFleet ? undefined : (clientId, deviceId) => this.storedSessionFacts(clientId, deviceId)
    )
    const latePushes = new LatePushes(this.properties, this.log.child({ component: 'late-pushes' }))
    const core = { config, store: this.store, registry: this.registry, fleet: this.fleet, devices: this.devices, upstream: new Upstream(this.properties, config.maxJsonDepth), admission: policy, metrics: this.metrics, log: this.log, tls: this.tls, lease: (name: string) => this.replicas.lease(name), replicas: (now: number) => this.replicas.replicas(now), latePushes }
    this.embedded = config.broker === 'embedded' ? new EmbeddedCarrier(core) : undefined
    this.carrier = this.embedded ?? new EmqxCarrier(core)
    // a connect that takes a session over from a live connection: the carrier closes the old one
    this.registry.onStepDown((stepDown) => this.carrier.stepDown(stepDown))
    // embedded mode publishes what earlier runs left before it serves: no other run's push waits
    this.pushJournal = new PushJournal(this.store, this.log.child({ component: 'push-journal' }), { othersMayWait: config.broker !== 'embedded' })
    const pushPublisher = this.carrier.pushPublisher ?? this.carrier.publisher
    this.dispatcher = new Dispatcher(this.fleet, pushPublisher, this.metrics, this.pushJournal, { withinMs: config.pushTimeout, backlog: config.pushBacklog })
    this.keptPushes = new KeptPushes(this.pushJournal, this.store, pushPublisher, latePushes, this.metrics, this.log.child({ component: 'kept-pushes' }), {
      withinMs: config.pushTimeout,
      retryMs: config.pushRetryInterval,
      commandExpiryMs: config.commandExpiry * 1000,
      ...(this.carrier.pushRefusedForGood ? { refusedForGood: this.carrier.pushRefusedForGood } : {})
    })
    const eventLog = new EventLog(this.store, config.node, async (deviceId) => (await this.devices.find(deviceId))?.owner)
    this.events = new EventStreams(eventLog, { heartbeatMs: config.eventsHeartbeat * 1000, bufferBytes: config.eventsBuffer }, this.metrics, this.log.child({ component: 'events' }))
    this.deliveries = eventDeliveries({
      config,
      store: this.store,
      log: eventLog,
      replicas: this.replicas,
      publisher: this.carrier.publisher,
      metrics: this.metrics,
      logger: this.log.child({ component: 'events' }),
      eventSubscribers: () => this.registry.topics.holdsFirstLevel(EVENT_TOPIC_ROOT)
    })
  }

  /** What a login's admission reads where this replica does not hold the fleet: from the store. */
  private async storedSessionFacts(clientId: string, deviceId: string | undefined): Promise<StoredSessionFacts> {
    // whether the client id names a device matters only to a device using another id than its own
    const asksOtherId = deviceId !== undefined && clientId !== deviceId
    const [session, clientIdDevice, sessionsOfDevice] = await Promise.all([
      this.registry.find(clientId),
      asksOtherId ? this.devices.find(clientId) : undefined,
      deviceId === undefined ? 0 : this.fleet.countSessions({ deviceId })
    ])
    return { holder: session?.deviceId, clientIdIsDevice: clientIdDevice !== undefined, sessionsOfDevice }
  }

  /** Embedded mode's broker (undefined in EMQX mode): for tests and benchmarks that look inside. */
  get broker(): EmbeddedCarrier['broker'] | undefined {
    return this.embedded?.broker
  }

  async start(): Promise<HubAddresses> {
    if (this.state !== 'new') throw new Error(`hub cannot start: it is ${this.state}`)
    this.state = 'starting'
    this.starting = this.startInOrder()
    return this.starting
  }

  private async startInOrder(): Promise<HubAddresses> {
    // each of the fleet's collections is read once, as it is iterated, straight into its cache
    const snapshot = await this.store.load({ fleet: this.holdsFleet })
    this.devices.load(snapshot.devices)
    /** Devices whose stored connectinfo says online: the only ones its reconcile (below) may correct. */
    const shownOnline: [deviceId: string, connectinfo: unknown][] = []
    this.properties.load(
      tap(snapshot.deviceProperties, (p) => {
        if (p.name === 'connectinfo' && (p.value as { _online?: unknown } | null)?._online === true) shownOnline.push([p.deviceId, p.value])
      })
    )
    this.registry.topics.load(snapshot.topics)
    this.registry.subscriptions.load(snapshot.subscriptions)
    this.registry.load(snapshot.sessions)
    this.sessionCounts.load(this.registry.records())
    // from here on the caches change only as the change log says, whoever made the change
    const applyToCaches = cacheApplier({ registry: this.registry, devices: this.devices, properties: this.properties })
    this.events.start(snapshot.logPosition)
    this.store.follow(snapshot.logPosition, (entries, origin) => {
      applyToCaches(entries, origin)
      this.events.heard(entries)
      this.deliveries.heard(entries)
      if (origin !== 'elsewhere') return
      const now = Date.now()
      // one observation per batch read: its entries were committed together
      this.metrics.replicaApplySeconds.observe(Math.max(0, now - entries[0]!.at) / 1000)
    })
    // recorded at once, so pruning keeps what this replica has yet to apply while it starts
    await this.replicas.heartbeat().catch((error: Error) => this.log.warn({ err: error.message }, 'replica heartbeat failed'))
    this.connectInfo.load(this.registry.records())
    // clocks can step back across a restart: new connections must still sort after stored ones
    for (const s of this.registry.records()) observeIncarnation(s.incarnation)
    if (snapshot.newestIncarnation !== undefined) observeIncarnation(snapshot.newestIncarnation)
    // a crash can come between a session's end and its device's connectinfo write (devices
    // still connected at the crash are brought offline by the carrier's recovery, just below)
    this.connectInfo.reconcile(shownOnline)
    await this.carrier.recover(snapshot)
    const restored = await this.registry.restoreSubscriptionEntities(Date.now())
    if (restored > 0) this.log.info({ subscriptions: restored }, 'made the subscription entities stored sessions were missing')
    this.log.info(
      this.holdsFleet ? { store: this.store.kind, devices: this.devices.size, sessions: this.registry.size } : { store: this.store.kind, cached: 'read when needed' },
      'store loaded'
    )
    if (this.config.auth === 'none') this.log.warn('IOTHUB_AUTH=none: any client may connect without a device token')
    for (const warning of (await this.store.serverWarnings?.().catch(() => [])) ?? []) this.log.warn(warning)

    const listening = await this.carrier.listen()
    const httpHost = this.apiHost()
    this.api = await buildApi(this.apiContext(), this.log, this.apiUsesTls ? this.tls : undefined)
    await this.api.listen({ port: this.config.httpPort, host: httpHost }).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EADDRINUSE' ? portInUse('HTTP', httpHost, this.config.httpPort, 'IOTHUB_HTTP_PORT / --http-port') : error
    })
    const http = this.api.server.address() as AddressInfo
    this.addresses = { http, ...listening }
    await this.replicas.start(`${this.apiUsesTls ? 'https' : 'http'}://${at(http)}`)
    this.deliveries.start()
    this.keptPushes.start()
    await this.sampler.start()
    this.expiryTimer = setInterval(() => void this.sweepExpired(), this.config.expirySweepInterval * 1000)
    this.expiryTimer.unref()
    this.storeReturn = new StoreReturnWatch(this.store.health().failures)
    this.storeWatch = setInterval(() => void this.watchStore(), STORE_WATCH_MS)
    this.storeWatch.unref()
    this.tls?.watch()
    if (this.state !== 'starting') throw new Error('hub was stopped while starting')
    this.state = 'running'
    this.log.info(
      {
        broker: this.config.broker,
        mqtt: at(listening.mqtt),
        mqtts: at(listening.mqtts),
        coap: at(listening.coap),
        exhook: at(listening.exhook),
        http: at(http),
        api: this.apiUsesTls ? 'https' : 'http',
        store: this.store.kind
      },
      'iothub started'
    )
    return this.addresses
  }

  /** Ends the sessions offline past their expiry — on the one replica that holds the expiry lease. */
  private async sweepExpired(): Promise<void> {
    try {
      if (!(await this.expiryLease.hold())) return
      await this.registry.expireDue(Date.now(), this.fleet)
      await this.expiryLease.done()
    } catch (error) {
      this.log.error({ err: (error as Error).message }, 'expiry sweep failed')
    }
  }

  /** True when the API serves HTTPS (a certificate is configured and IOTHUB_API_TLS is not `off`). */
  get apiUsesTls(): boolean {
    return this.tls !== undefined && this.config.apiTls === 'auto'
  }

  /** With the default (publicly known) API credentials, the API stays on loopback. */
  private apiHost(): string {
    if (!usesDefaultApiCredentials(this.config)) return this.config.httpHost
    this.log.warn('the HTTP API uses the default credentials admin/public: it listens on 127.0.0.1 only; set IOTHUB_API_USER and IOTHUB_API_PASSWORD')
    return '127.0.0.1'
  }

  private apiContext(): ApiContext {
    return {
      config: this.config,
      registry: this.registry,
      fleet: this.fleet,
      devices: this.devices,
      properties: this.properties,
      dispatcher: this.dispatcher,
      broker: this.carrier.publisher,
      metrics: this.metrics,
      loginThrottle: this.loginThrottle,
      kick: (clientId) => this.carrier.kick(clientId),
      readiness: () => this.checkReadiness(),
      replicas: () => this.replicas.replicas(),
      events: this.events,
      status: {
        sampler: this.sampler,
        totals: this.totals,
        store: () => ({ kind: this.store.kind, healthy: this.store.health().ok && this.probe.unanswered() === null }),
        lastReconcile: () => (this.carrier instanceof EmqxCarrier ? (this.carrier.lastReport() ?? null) : null)
      },
      ...(this.carrier.routes ? { carrierRoutes: this.carrier.routes } : {}),
      ...(this.carrier.holding ? { holding: this.carrier.holding } : {})
    }
  }

  /** Readiness as last seen, without asking the store (see checkReadiness). */
  readiness(): Readiness {
    const store = this.store.health()
    const unanswered = this.probe.unanswered()
    const checks: Readiness['checks'] = {
      store:
        unanswered !== null
          ? { ok: false, detail: `store has not answered for ${unanswered} ms` }
          : store.ok
            ? { ok: true }
            : { ok: false, detail: store.lastError ?? 'store is closed' },
      log: logCheck(this.store),
      ...this.carrier.checks(),
      hub: this.state === 'running' ? { ok: true } : { ok: false, detail: `hub is ${this.state}` }
    }
    return { ready: Object.values(checks).every((c) => c.ok), checks }
  }

  /** Readiness once the store has been asked (at most once a second, shared): what /readyz answers. */
  async checkReadiness(): Promise<Readiness> {
    if (this.state === 'running') await this.probe.fresh()
    return this.readiness()
  }

  /**
   * While the store fails, asks it every STORE_WATCH_MS whether it answers again; when it does —
   * or answers after a failure that came and went since the last look (store-return.ts) — what
   * could not be stored meanwhile is stored, and the carrier corrects what it can.
   */
  private async watchStore(): Promise<void> {
    const watch = this.storeReturn
    if (this.state !== 'running' || !watch) return
    if (watch.needsProbe(this.store.health(), this.registry.unstored)) await this.probe.fresh()
    const health = this.store.health()
    if (watch.look(health.ok && this.probe.unanswered() === null, health.failures) !== 'returned') return
    this.log.info({ unstoredEnds: this.registry.unstored }, 'store answers again')
    await this.registry.storeUnstoredEnds()
    if (this.state === 'running') this.carrier.storeReturned()
  }

  get address(): HubAddresses {
    if (!this.addresses) throw new Error('hub is not started')
    return this.addresses
  }

  /**
   * Graceful stop: refuse new work, disconnect every client (their sessions end with
   * `server_shutdown`), wait until that is stored, then close the store.
   */
  async stop(): Promise<void> {
    if (this.state === 'stopped' || this.state === 'stopping') return
    const starting = this.state === 'starting' ? this.starting : undefined
    this.state = 'stopping'
    await starting?.catch(() => undefined) // let a start in progress finish (or fail) first
    clearInterval(this.expiryTimer)
    clearInterval(this.storeWatch)
    await this.sampler.stop()
    this.tls?.close()
    // the API first: its requests in flight still find the broker and the store
    await this.api?.close()
    // it publishes through the carrier; what it still keeps waits for another run
    await this.keptPushes.stop()
    await this.carrier.stop()
    // before the leases go: a delivery saves its position while it still holds its lease
    await this.deliveries.stop()
    // before this run leaves the list of replicas, which tells another one its pushes are left behind
    await this.properties.settled()
    await this.pushJournal.flush()
    await this.replicas.stop()
    await this.registry.settled()
    this.registry.stop()
    this.connectInfo.stop()
    await this.properties.settled()
    // what was routed since goes before the store closes (else another run would publish it again)
    await this.pushJournal.flush()
    await this.probe.settled()
    await this.store.close()
    this.state = 'stopped'
    this.log.info('iothub stopped')
  }
}

/** `items` as they are iterated, each shown to `see` on its way. */
function* tap<T>(items: Iterable<T>, see: (item: T) => void): Generator<T> {
  for (const item of items) {
    see(item)
    yield item
  }
}

const at = (a: AddressInfo | undefined): string | undefined => (a ? `${a.address}:${a.port}` : undefined)

/** Whether the caches follow the change log; how far, and how far behind. */
function logCheck(store: Store): Readiness['checks'][string] {
  const following = store.following()
  const position = `log position ${following.applied}, ${following.lagSeconds.toFixed(3)} s behind`
  if (following.lastError) return { ok: false, detail: `cannot read the change log: ${following.lastError} (${position})` }
  return { ok: true, detail: position }
}

/** How often a failing store is asked whether it answers again, ms. */
const STORE_WATCH_MS = 1000

function storeObserver(metrics: HubMetrics, log: Logger): CommitObserver {
  return metrics.commitObserver((error) => log.error({ err: error.message }, 'store commit failed'))
}
