/**
 * Embedded mode's carrier: our own Aedes broker on the MQTT port, its persistence (subscriptions,
 * queued messages, retained messages, wills) and its publish journal on the hub's store, the
 * AedesSource turning what Aedes sees into lifecycle events, and the CoAP gateway on the same
 * broker.
 */
import type { Readiness } from '../api/context.js'
import { StoreAedesPersistence } from '../brokers/embedded/aedes-persistence.js'
import { EmbeddedBroker } from '../brokers/embedded/embedded-broker.js'
import { PublishJournal } from '../brokers/embedded/publish-journal.js'
import { AedesSource } from '../sources/aedes-source.js'
import { CoapGateway } from '../sources/coap/coap-gateway.js'
import type { Snapshot } from '../store/store.js'
import type { CarrierAddresses, ConnectionCarrier, HubCore } from './carrier.js'

export class EmbeddedCarrier implements ConnectionCarrier {
  readonly broker: EmbeddedBroker
  private readonly persistence: StoreAedesPersistence
  private readonly journal: PublishJournal
  private readonly coap: CoapGateway

  constructor(private readonly core: HubCore) {
    const { config, store, registry, devices, upstream, metrics, log, tls } = core
    const source = new AedesSource(registry, devices, upstream, config, metrics, log.child({ component: 'mqtt' }))
    this.persistence = new StoreAedesPersistence(store, registry.topics, { writer: source.subscriptionWriter() })
    registry.addStateOwner(this.persistence)
    this.journal = new PublishJournal(store, log.child({ component: 'journal' }))
    this.broker = new EmbeddedBroker(config, this.persistence, this.journal, source, metrics, log.child({ component: 'broker' }), tls)
    this.coap = new CoapGateway(registry, devices, upstream, this.broker, config, metrics, log.child({ component: 'coap' }))
  }

  get publisher(): EmbeddedBroker {
    return this.broker
  }

  /** The previous run's connections are gone: clean sessions end, persistent ones go offline. */
  async recover(snapshot: Snapshot): Promise<void> {
    const { registry, log } = this.core
    this.persistence.load(snapshot)
    this.journal.load(snapshot.journal)
    const previous = await registry.endPreviousRun(Date.now())
    await registry.expireDue(Date.now())
    await this.persistence.dropQueuesWithoutSession((clientId) => registry.record(clientId) !== undefined)
    log.info({ endedClean: previous.ended, offlinePersistent: previous.offline }, "previous run's connections ended")
  }

  async listen(): Promise<CarrierAddresses> {
    const mqtt = await this.broker.start()
    return { ...mqtt, coap: await this.coap.listen() }
  }

  checks(): Readiness['checks'] {
    return {
      mqtt: this.broker.listening ? { ok: true } : { ok: false, detail: 'MQTT listener is not listening' },
      ...(this.broker.tlsListening === undefined ? {} : { mqtts: this.broker.tlsListening ? { ok: true } : { ok: false, detail: 'MQTT over TLS listener is not listening' } }),
      coap: this.coap.listening ? { ok: true } : { ok: false, detail: 'CoAP gateway is not listening' }
    }
  }

  /** Kicks the client's connection, MQTT or CoAP (one clientId has one session, so one of them). */
  async kick(clientId: string): Promise<boolean> {
    return (await this.coap.kick(clientId)) || this.broker.kick(clientId)
  }

  async stop(): Promise<void> {
    await this.coap.stop()
    await this.broker.stop()
  }
}
