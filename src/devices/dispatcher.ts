/**
 * Downstream: a property change of a device goes to every session holding a subscription
 * entity for that property — and only there. The change is published once, QoS 1, on the
 * device's change topic under its mountpoint; the broker delivers it to the device's sessions
 * subscribed to it (queued for persistent ones offline), without the prefix.
 */
import { CHANGE_TOPICS, type ChangeProperty } from '../domain/change-topics.js'
import { deviceMountpoint } from '../domain/namespace.js'
import type { HubMetrics } from '../observability/metrics.js'
import type { FleetReads } from '../store/fleet-reads.js'

/** The broker's side of a push: the embedded Aedes broker, or EMQX's REST publish. */
export interface BrokerPublisher {
  publish(message: { topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean }): Promise<void>
}

export class Dispatcher {
  constructor(
    /** Whom a push reaches: the device's subscription entities, as stored. */
    private readonly fleet: Pick<FleetReads, 'receiving'>,
    private readonly broker: BrokerPublisher,
    private readonly metrics: HubMetrics
  ) {}

  /** Pushes `payload` to the sessions receiving `property` of `deviceId`; resolves with their ids once routed. */
  async push(deviceId: string, property: ChangeProperty, payload: Buffer): Promise<string[]> {
    const receivers = await this.fleet.receiving(deviceId, property)
    if (receivers.length === 0) {
      this.metrics.pushesTotal.inc({ property, outcome: 'no_subscriber' })
      return []
    }
    try {
      await this.broker.publish({ topic: deviceMountpoint(deviceId) + CHANGE_TOPICS[property], payload, qos: 1, retain: false })
    } catch (error) {
      this.metrics.pushesTotal.inc({ property, outcome: 'failed' })
      throw error
    }
    this.metrics.pushesTotal.inc({ property, outcome: 'published' })
    // almost always one session holds the subscription: its id needs no set or sort
    return receivers.length === 1 ? [receivers[0]!.sessionId] : [...new Set(receivers.map((e) => e.sessionId))].sort()
  }
}
