/**
 * Embedded mode's carrier: our own Aedes broker on the MQTT port, its persistence (subscriptions,
 * queued messages, retained messages, wills) and its publish journal on the hub's store, the
 * MQTT source (mqtt/) turning what Aedes sees into lifecycle events, and the CoAP gateway on the same
 * broker.
 */
import type { Readiness } from '../observability/readiness.js'
import { StoreAedesPersistence } from './aedes-persistence.js'
import { EmbeddedBroker } from './embedded-broker.js'
import { PublishJournal } from './publish-journal.js'
import { commandExpiry, publishLeftPushes } from '../devices/left-pushes.js'
import type { BrokerMessage } from '../devices/dispatcher.js'
import { NO_MOUNTPOINT } from '../domain/namespace.js'
import { MqttSource } from './mqtt/mqtt-source.js'
import { CoapGateway } from './coap/coap-gateway.js'
import type { Snapshot, StoredPush } from '../store/store.js'
import type { CarrierAddresses, ConnectionCarrier, SessionHolding, HubCore } from '../carrier/carrier.js'
import type { StepDown } from '../registry/registry.js'
import { endListedOnly } from '../carrier/listed-only.js'

export class EmbeddedCarrier implements ConnectionCarrier {
  readonly broker: EmbeddedBroker
  private readonly persistence: StoreAedesPersistence
  private readonly journal: PublishJournal
  private readonly coap: CoapGateway
  private readonly mqtt: MqttSource
  /** Sessions' queues are the broker's persistence's; the limits are the hub's settings. */
  readonly holding: SessionHolding

  constructor(private readonly core: HubCore) {
    const { config, store, registry, devices, upstream, admission, metrics, log, tls } = core
    const source = new MqttSource({ registry, devices, upstream, admission, takeBack: (clientId) => this.takeBack(clientId), config, metrics, log: log.child({ component: 'mqtt' }) })
    const brokerLog = log.child({ component: 'broker' })
    this.persistence = new StoreAedesPersistence(store, registry.topics, {
      writer: source.subscriptionWriter(),
      retained: {
        limits: {
          messagesPerDevice: config.maxRetainedPerDevice,
          bytesPerDevice: config.maxRetainedBytesPerDevice,
          messages: config.maxRetained,
          bytes: config.maxRetainedBytes
        },
        // The source names the sender of every client publish (`clientId`); a device's session
        // has its mountpoint, a superuser's none. Publishes without a client (the API, CoAP,
        // wills of the previous run) count towards the hub-wide limits only.
        ownerOf: (packet) => {
          const session = packet.clientId === undefined ? undefined : registry.record(packet.clientId)
          if (!session || session.mountpoint === NO_MOUNTPOINT || !packet.topic?.startsWith(session.mountpoint)) return undefined
          return session.deviceId
        },
        refused: (packet, limit) => {
          metrics.reject('retained_limit')
          brokerLog.info({ clientId: packet.clientId, reason: 'retained_limit', detail: `retained publish to ${packet.topic} over ${limit}: delivered, not retained` }, 'input refused')
        }
      },
      queue: {
        limits: { messages: config.maxQueuedPerSession, bytes: config.maxQueuedBytesPerSession },
        dropped: (clientId, count) => {
          metrics.offlineDropped.inc(count)
          brokerLog.debug({ clientId, dropped: count }, 'oldest queued messages dropped: queue over its limit')
        }
      }
    })
    this.holding = {
      queued: (clientId) => this.persistence.queued(clientId),
      maxQueued: config.maxQueuedPerSession,
      maxSubscriptions: config.maxSubscriptionsPerSession
    }
    metrics.gauge('iothub_retained_messages', 'Retained messages held by the embedded broker', [], (set) => set({}, this.persistence.retainedUsage().messages))
    metrics.gauge('iothub_retained_bytes', 'Bytes (topic + payload) of retained messages held by the embedded broker', [], (set) => set({}, this.persistence.retainedUsage().bytes))
    registry.addStateOwner(this.persistence)
    this.journal = new PublishJournal(store, log.child({ component: 'journal' }))
    this.broker = new EmbeddedBroker(config, this.persistence, this.journal, source, metrics, brokerLog, tls)
    this.mqtt = source
    this.coap = new CoapGateway(registry, devices, upstream, admission, this.broker, (clientId) => this.takeBack(clientId), config, metrics, log.child({ component: 'coap' }))
  }

  get publisher(): EmbeddedBroker {
    return this.broker
  }

  /** Pushes are refused once the broker stops (EmbeddedBroker.publishPush). */
  readonly pushPublisher = { publish: (message: BrokerMessage) => this.broker.publishPush(message) }

  /** The previous run's connections are gone: clean sessions end, persistent ones go offline. */
  async recover(snapshot: Snapshot): Promise<void> {
    const { registry, log } = this.core
    this.persistence.load(snapshot)
    this.journal.load(snapshot.journal)
    const previous = await registry.endPreviousRun(Date.now())
    await registry.expireDue(Date.now(), this.core.fleet)
    await this.persistence.dropQueuesWithoutSession((clientId) => registry.record(clientId) !== undefined)
    log.info({ endedClean: previous.ended, offlinePersistent: previous.offline }, "previous run's connections ended")
  }

  async listen(): Promise<CarrierAddresses> {
    // this process is the store's only writer: every other run's pushes are a previous run's
    const { store, config, metrics, log } = this.core
    const left = {
      leftUpTo: (run: string) => (run === store.replica ? undefined : Infinity),
      send: (push: StoredPush, publish: (message: BrokerMessage) => Promise<void>) => this.core.latePushes.send(push, publish),
      // a command stored before a crash (or kept while the broker refused it) and older than this is not sent now
      expiry: commandExpiry(config.commandExpiry * 1000, this.core.latePushes, metrics, log, 'a command an earlier run stored')
    }
    const mqtt = await this.broker.start(() => publishLeftPushes(store, (message) => this.broker.publish(message), left))
    return { ...mqtt, coap: await this.coap.listen() }
  }

  /**
   * A listener at its connection limit stays ready, saying so: every connected device and the API
   * are still served, and not ready would take the API from the operators too (and, behind an
   * orchestrator, the one embedded hub out of its service). New connections are refused and
   * counted (`too_many_connections`) meanwhile.
   */
  checks(): Readiness['checks'] {
    const full = this.broker.fullAt
    const mqtt = full === null ? { ok: true } : { ok: true, detail: `at its connection limit (${full}): new MQTT connections are refused` }
    return {
      mqtt: this.broker.listening ? mqtt : { ok: false, detail: 'MQTT listener is not listening' },
      ...(this.broker.tlsListening === undefined ? {} : { mqtts: this.broker.tlsListening ? { ok: true } : { ok: false, detail: 'MQTT over TLS listener is not listening' } }),
      coap: this.coap.listening ? { ok: true } : { ok: false, detail: 'CoAP gateway is not listening' }
    }
  }

  /** Kicks the client's connection, MQTT or CoAP (one clientId has one session, so one of them). */
  async kick(clientId: string): Promise<boolean> {
    const seen = this.core.registry.record(clientId)?.incarnation
    if ((await this.coap.kick(clientId)) || (await this.broker.kick(clientId))) return true
    return endListedOnly(this.core.registry, clientId, seen, 'kicked')
  }

  /** A newer connect took the session over: its older connection goes, MQTT or CoAP. */
  stepDown({ session }: StepDown): void {
    if (session.protocol === 'coap') this.coap.stepDown(session)
    else this.mqtt.stepDown(session)
  }

  /**
   * A device takes its own client id back from another device's (or a superuser's) session:
   * the connection holding it is closed, MQTT or CoAP, and once that is recorded the session is
   * discarded — never resumed by the device, its topics and queue being another namespace's.
   */
  private async takeBack(clientId: string): Promise<void> {
    const { registry, log } = this.core
    // one client id has one session, so one transport holds its connection, if any does
    if (!(await this.coap.kick(clientId, 'taken_over'))) await this.broker.kick(clientId, 'taken_over')
    const held = registry.record(clientId)
    if (held && !(await registry.discard(clientId))) throw new Error(`the session of ${clientId} is still connected (${held.protocol})`)
    log.info({ clientId, heldBy: held?.deviceId || 'a superuser' }, 'a device took its own id back as a client id')
  }

  /**
   * Ends the MQTT sessions of this node listed as connected whose client the broker no longer
   * holds. CoAP connections are the gateway's: it ends those it stops hearing from by itself.
   */
  storeReturned(): void {
    void this.broker.publishKeptWills()
    const { registry, config, log } = this.core
    const unheld = [...registry.records()].filter((s) => s.connected && s.protocol === 'mqtt' && s.node === config.node && !this.broker.holds(s.clientId))
    if (unheld.length === 0) return
    void Promise.all(unheld.map((s) => endListedOnly(registry, s.clientId, s.incarnation, 'socket_error').catch(() => false))).then((ended) => {
      const count = ended.filter(Boolean).length
      if (count > 0) log.warn({ sessions: count }, 'store is back: ended sessions listed as connected whose client the broker no longer holds')
    })
  }

  async stop(): Promise<void> {
    await this.coap.stop()
    await this.broker.stop()
    // what was routed leaves the journal before the store closes (else the next start would publish it again)
    await this.journal.flush()
  }
}
