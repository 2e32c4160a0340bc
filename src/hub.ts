/**
 * The composition root: wires the store, registry, embedded broker, source and API, and
 * owns start and stop. Start order matters — the store is loaded and the previous run's
 * connections are ended *before* any listener accepts a client.
 */
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { buildApi } from './api/server.js'
import type { ApiContext, Readiness } from './api/context.js'
import { StoreAedesPersistence } from './brokers/embedded/aedes-persistence.js'
import { EmbeddedBroker } from './brokers/embedded/embedded-broker.js'
import { PublishJournal } from './brokers/embedded/publish-journal.js'
import { usesDefaultApiCredentials, type HubConfig } from './config.js'
import { portInUse } from './port-in-use.js'
import { HubMetrics } from './observability/metrics.js'
import { createLogger } from './observability/logger.js'
import { observeIncarnation } from './domain/incarnation.js'
import { ConnectInfoTracker } from './devices/connectinfo.js'
import { DeviceProperties } from './devices/device-properties.js'
import { Dispatcher } from './devices/dispatcher.js'
import { Upstream } from './devices/upstream.js'
import { DeviceDirectory } from './registry/device-directory.js'
import { SessionRegistry } from './registry/registry.js'
import { SubscriptionBook } from './registry/subscription-book.js'
import { TopicBook } from './registry/topic-book.js'
import { AedesSource } from './sources/aedes-source.js'
import { SqliteStore } from './store/sqlite/sqlite-store.js'

export interface HubAddresses {
  mqtt: AddressInfo
  http: AddressInfo
}

export class Hub {
  readonly log: Logger
  readonly metrics: HubMetrics
  readonly store: SqliteStore
  readonly registry: SessionRegistry
  readonly devices: DeviceDirectory
  readonly broker: EmbeddedBroker
  readonly properties: DeviceProperties
  private readonly connectInfo: ConnectInfoTracker
  private readonly dispatcher: Dispatcher
  private readonly persistence: StoreAedesPersistence
  private readonly journal: PublishJournal
  private api: Awaited<ReturnType<typeof buildApi>> | undefined
  private expiryTimer: NodeJS.Timeout | undefined
  private addresses: HubAddresses | undefined
  private state: 'new' | 'starting' | 'running' | 'stopping' | 'stopped' = 'new'
  private starting: Promise<HubAddresses> | undefined

  constructor(
    readonly config: HubConfig,
    options: { log?: Logger; metrics?: HubMetrics } = {}
  ) {
    this.log = options.log ?? createLogger(config.logLevel)
    this.metrics = options.metrics ?? new HubMetrics()
    this.store = new SqliteStore({
      dataDir: config.dataDir,
      synchronous: config.storeSync,
      busyTimeoutMs: config.storeBusyTimeout,
      observer: this.metrics.commitObserver((error) => this.log.error({ err: error.message }, 'store commit failed'))
    })
    const topics = new TopicBook()
    this.devices = new DeviceDirectory(this.store)
    this.registry = new SessionRegistry(
      this.store,
      topics,
      new SubscriptionBook(),
      (deviceId) => this.devices.get(deviceId)?.owner ?? '',
      this.metrics,
      this.log.child({ component: 'registry' })
    )
    this.properties = new DeviceProperties(this.store)
    this.connectInfo = new ConnectInfoTracker(this.properties, this.devices, this.log.child({ component: 'connectinfo' }))
    this.registry.observe((before, after) => this.connectInfo.sessionChanged(before, after))
    const upstream = new Upstream(this.properties)
    const source = new AedesSource(this.registry, this.devices, upstream, config, this.metrics, this.log.child({ component: 'mqtt' }))
    this.persistence = new StoreAedesPersistence(this.store, topics, { writer: source.subscriptionWriter() })
    this.registry.addStateOwner(this.persistence)
    this.journal = new PublishJournal(this.store, this.log.child({ component: 'journal' }))
    this.broker = new EmbeddedBroker(config, this.persistence, this.journal, source, this.metrics, this.log.child({ component: 'broker' }))
    this.dispatcher = new Dispatcher(this.registry.subscriptions, this.broker, this.metrics)
  }

  async start(): Promise<HubAddresses> {
    if (this.state !== 'new') throw new Error(`hub cannot start: it is ${this.state}`)
    this.state = 'starting'
    this.starting = this.startInOrder()
    return this.starting
  }

  private async startInOrder(): Promise<HubAddresses> {
    const snapshot = await this.store.load()
    this.devices.load(snapshot.devices)
    this.properties.load(snapshot.deviceProperties)
    this.registry.topics.load(snapshot.topics)
    this.registry.subscriptions.load(snapshot.subscriptions)
    this.registry.load(snapshot.sessions)
    this.connectInfo.load(snapshot.sessions)
    // clocks can step back across a restart: new connections must still sort after stored ones
    for (const s of snapshot.sessions) observeIncarnation(s.incarnation)
    this.persistence.load(snapshot)
    this.journal.load(snapshot.journal)
    // a crash can come between a session's end and its device's connectinfo write (devices
    // still connected at the crash are brought offline by endPreviousRun, just below)
    this.connectInfo.reconcile(snapshot.deviceProperties.filter((p) => p.name === 'connectinfo').map((p) => [p.deviceId, p.value]))
    const previous = await this.registry.endPreviousRun(Date.now())
    await this.registry.expireDue(Date.now())
    const restored = await this.registry.restoreSubscriptionEntities(Date.now())
    if (restored > 0) this.log.info({ subscriptions: restored }, 'made the subscription entities stored sessions were missing')
    await this.persistence.dropQueuesWithoutSession((clientId) => this.registry.record(clientId) !== undefined)
    this.log.info(
      { devices: this.devices.size, sessions: this.registry.size, endedClean: previous.ended, offlinePersistent: previous.offline },
      'store loaded'
    )
    if (this.config.auth === 'none') this.log.warn('IOTHUB_AUTH=none: any client may connect without a device token')

    const mqtt = await this.broker.start()
    const httpHost = this.apiHost()
    this.api = await buildApi(this.apiContext(), this.log)
    await this.api.listen({ port: this.config.httpPort, host: httpHost }).catch((error: NodeJS.ErrnoException) => {
      throw error.code === 'EADDRINUSE' ? portInUse('HTTP', httpHost, this.config.httpPort, 'IOTHUB_HTTP_PORT / --http-port') : error
    })
    const http = this.api.server.address() as AddressInfo
    this.addresses = { mqtt, http }
    this.expiryTimer = setInterval(() => {
      this.registry.expireDue(Date.now()).catch((error: Error) => this.log.error({ err: error.message }, 'expiry sweep failed'))
    }, this.config.expirySweepInterval * 1000)
    this.expiryTimer.unref()
    if (this.state !== 'starting') throw new Error('hub was stopped while starting')
    this.state = 'running'
    this.log.info({ mqtt: `${mqtt.address}:${mqtt.port}`, http: `${http.address}:${http.port}`, dataDir: this.config.dataDir }, 'iothub started')
    return this.addresses
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
      devices: this.devices,
      properties: this.properties,
      dispatcher: this.dispatcher,
      broker: this.broker,
      metrics: this.metrics,
      kick: (clientId) => this.broker.kick(clientId),
      readiness: () => this.readiness()
    }
  }

  readiness(): Readiness {
    const store = this.store.health()
    const checks: Readiness['checks'] = {
      store: store.ok ? { ok: true } : { ok: false, detail: store.lastError ?? 'store is closed' },
      mqtt: this.broker.listening ? { ok: true } : { ok: false, detail: 'MQTT listener is not listening' },
      hub: this.state === 'running' ? { ok: true } : { ok: false, detail: `hub is ${this.state}` }
    }
    return { ready: Object.values(checks).every((c) => c.ok), checks }
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
    // the API first: its requests in flight still find the broker and the store
    await this.api?.close()
    await this.broker.stop()
    await this.registry.settled()
    this.connectInfo.stop()
    await this.properties.settled()
    await this.store.close()
    this.state = 'stopped'
    this.log.info('iothub stopped')
  }
}
