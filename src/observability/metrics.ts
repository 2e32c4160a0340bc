/**
 * The hub's Prometheus metrics. One prom-client Registry per hub (not the global one), so several
 * hubs in one process — tests do this — keep separate counts. Labels never carry device ids:
 * /metrics is unauthenticated.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type CounterConfiguration } from 'prom-client'
import type { CommitObserver } from '../store/group-commit.js'
import { MAIN_THREAD_ID, threadCpuSeconds } from './thread-cpu.js'

export type RejectReason =
  | 'not_authorized'
  | 'bad_client_id'
  | 'bad_username'
  | 'bad_topic'
  | 'topic_too_long'
  | 'topic_too_deep'
  | 'outside_namespace'
  | 'bad_payload'
  | 'packet_too_large'
  | 'malformed_packet'
  | 'bad_api_request'
  | 'store_unavailable'
  | 'bad_hook'
  | 'hook_unauthorized'
  | 'bad_coap_request'
  // limits on what one device (and all of them) can make the hub hold
  | 'too_many_subscriptions'
  | 'too_many_sessions'
  | 'client_id_reserved'
  | 'too_many_connections'
  | 'connect_rate_limited'
  | 'too_many_pending_connections'
  | 'connect_timeout'
  | 'packets_before_connack'
  | 'slow_consumer'
  // retained messages and offline queues bounded (issue 11)
  | 'retained_limit'
  | 'api_unauthorized'
  | 'login_throttled'
  // a device over IOTHUB_MAX_CONNECTS_PER_DEVICE connects a minute, refused for IOTHUB_FLAPPING_BAN
  | 'flapping'
  | 'tls_handshake_failed'
  // more fleet pushes at once than a replica runs (api/routes/fleet-pushes.ts): 429
  | 'too_many_fleet_pushes'
  // a CoAP connection's requests over IOTHUB_MAX_MESSAGE_RATE / IOTHUB_MAX_BYTE_RATE: 4.29
  | 'rate_limited'

/** One label set of a counter, counted on the event path as a plain number (see Tallies). */
export interface Tally {
  inc(): void
}

/**
 * Counts of a counter's label sets kept as plain numbers and added to the counter when it is
 * read (its `collect`, which prom-client runs before every scrape and `get()`): prom-client
 * hashes and validates the labels on each `inc()`, even through a `labels()` child, which per
 * lifecycle event is cpu and garbage the event path does not need. Read, the counter says
 * exactly what counting each one would have said.
 */
class Tallies<L extends string> {
  private readonly tallies: { labels: Record<L, string>; count: number; inc(): void }[] = []

  /** A new tally of `labels`: whoever counts often asks once and keeps it. */
  of(labels: Record<L, string>): Tally {
    const tally = {
      labels,
      count: 0,
      inc() {
        this.count++
      }
    }
    this.tallies.push(tally)
    return tally
  }

  /** The counter these tallies are added to whenever it is read (its `collect`). */
  counter(configuration: Omit<CounterConfiguration<L>, 'collect'>): Counter<L> {
    const addTo = (counter: Counter<L>): void => this.addTo(counter)
    return new Counter<L>({
      ...configuration,
      collect() {
        addTo(this)
      }
    })
  }

  /** Adds what was counted since the last time to `counter`. */
  private addTo(counter: Counter<L>): void {
    for (const tally of this.tallies) {
      if (tally.count === 0) continue
      counter.inc(tally.labels, tally.count)
      tally.count = 0
    }
  }

}

export class HubMetrics {
  readonly registry = new Registry()

  private readonly eventTallies = new Tallies<'kind' | 'outcome'>()
  private readonly disconnectTallies = new Tallies<'protocol' | 'reason'>()

  readonly eventsTotal = this.eventTallies.counter({
    name: 'iothub_lifecycle_events_total',
    help: 'Lifecycle events by kind and outcome (applied, stale: belonged to an older connection, failed: not stored)',
    labelNames: ['kind', 'outcome'] as const,
    registers: [this.registry]
  })

  readonly pushesTotal = new Counter({
    name: 'iothub_pushes_total',
    help: 'Downstream property changes, by property and outcome (published, no_subscriber: no session subscribed, failed: stored but not published yet, held: stored and kept behind an earlier push on its topic (a command, raw bytes) still waiting for the broker, dropped: a stored push the broker refused for good, expired: a stored command or raw push the broker had not taken within IOTHUB_COMMAND_EXPIRY, dropped unpublished, refused: a command or raw push not stored, its device having IOTHUB_PUSH_BACKLOG waiting already)',
    labelNames: ['property', 'outcome'] as const,
    registers: [this.registry]
  })

  readonly reconcileRuns = new Counter({
    name: 'iothub_reconcile_runs_total',
    help: 'Reconciles with the broker (emqx mode), by trigger and outcome',
    labelNames: ['trigger', 'outcome'] as const,
    registers: [this.registry]
  })

  readonly reconcileChanges = new Counter({
    name: 'iothub_reconcile_changes_total',
    help: 'What reconciles changed: ghost_ended, session_added, topic_added, topic_removed',
    labelNames: ['change'] as const,
    registers: [this.registry]
  })

  readonly reconcileSeconds = new Gauge({
    name: 'iothub_reconcile_last_duration_seconds',
    help: 'How long the last reconcile took',
    registers: [this.registry]
  })

  readonly upstreamTotal = new Counter({
    name: 'iothub_upstream_total',
    help: 'Device publishes on property topics, by topic kind and outcome (applied; refused: payload not what the topic expects; no_device: its device is not registered, or was just deleted: not stored)',
    labelNames: ['property', 'outcome'] as const,
    registers: [this.registry]
  })

  readonly disconnectsTotal = this.disconnectTallies.counter({
    name: 'iothub_disconnects_total',
    help: 'Connections that ended, by reason',
    labelNames: ['protocol', 'reason'] as const,
    registers: [this.registry]
  })

  readonly rejectedTotal = new Counter({
    name: 'iothub_rejected_inputs_total',
    help: 'Inputs refused (connects, packets, API requests), by reason',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  readonly readsHeld = new Counter({
    name: 'iothub_mqtt_reads_held_total',
    help: 'Times an MQTT connection sent faster than IOTHUB_MAX_MESSAGE_RATE / IOTHUB_MAX_BYTE_RATE and its reading waited, by the limit it reached',
    labelNames: ['limit'] as const,
    registers: [this.registry]
  })

  readonly commitSeconds = new Histogram({
    name: 'iothub_store_commit_seconds',
    help: 'Time from handing a group-commit batch to the writer thread until it is durable (includes waiting behind earlier batches)',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
    registers: [this.registry]
  })

  readonly replicaApplySeconds = new Histogram({
    name: 'iothub_replica_apply_seconds',
    help: "From another replica's commit of a change (its clock) until this replica's caches have it",
    buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry]
  })

  readonly batchCommits = new Histogram({
    name: 'iothub_store_batch_commits',
    help: 'Callers (events, broker writes) sharing one group-commit batch',
    buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000],
    registers: [this.registry]
  })

  readonly batchMutations = new Histogram({
    name: 'iothub_store_batch_mutations',
    help: 'Row mutations in one group-commit batch',
    buckets: [1, 5, 10, 50, 100, 500, 1000, 5000, 20000],
    registers: [this.registry]
  })

  readonly storeFailures = new Counter({
    name: 'iothub_store_failures_total',
    help: 'Group-commit batches that failed; their callers were refused',
    registers: [this.registry]
  })

  // retained messages and offline queues bounded (issue 11)
  readonly offlineDropped = new Counter({
    name: 'iothub_offline_messages_dropped_total',
    help: "Messages queued for a persistent session and dropped, oldest first, to keep its queue within IOTHUB_MAX_QUEUED_PER_SESSION / IOTHUB_MAX_QUEUED_BYTES_PER_SESSION",
    registers: [this.registry]
  })

  readonly tlsReloads = new Counter({
    name: 'iothub_tls_reloads_total',
    help: 'Certificate/key files reloaded after they changed, by outcome (applied: new connections get them, failed: the previous ones are kept)',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  // the event stream, GET /v1/events (issue 14)
  readonly eventsSent = new Counter({
    name: 'iothub_events_sent_total',
    help: 'Events written to GET /v1/events streams (one per event and stream)',
    registers: [this.registry]
  })

  readonly eventConsumersClosed = new Counter({
    name: 'iothub_event_consumers_closed_total',
    help: 'GET /v1/events streams the hub closed, by reason (slow: more was waiting than IOTHUB_EVENTS_BUFFER; log_pruned: its position was pruned; log_unreadable; server_shutdown)',
    labelNames: ['reason'] as const,
    registers: [this.registry]
  })

  // events delivered out of the hub, one replica at a time (webhooks out; MQTT through EMQX's API)
  readonly eventsDelivered = new Counter({
    name: 'iothub_events_delivered_total',
    help: 'Events delivered and acknowledged, by sink (webhook: a 2xx answer; mqtt: published), as counted by the replica that delivered them',
    labelNames: ['sink'] as const,
    registers: [this.registry]
  })

  readonly eventDeliveryFailures = new Counter({
    name: 'iothub_events_delivery_failures_total',
    help: 'Delivery attempts that failed and will be made again, by sink and reason (status: an answer other than 2xx; network; timeout)',
    labelNames: ['sink', 'reason'] as const,
    registers: [this.registry]
  })

  readonly eventsSkipped = new Counter({
    name: 'iothub_events_delivery_skipped_total',
    help: 'Change-log entries a delivery could not send because the log no longer held them (pruned while no replica delivered)',
    labelNames: ['sink'] as const,
    registers: [this.registry]
  })

  readonly eventsMqttPublished = new Counter({
    name: 'iothub_events_mqtt_published_total',
    help: 'Events published on $iothub/events/... by the embedded broker, by outcome (published, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry]
  })

  constructor(options: { processMetrics?: boolean } = {}) {
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry })
  }

  /**
   * Registers a gauge whose value is read at scrape time (no bookkeeping on the hot path). A read
   * may be a query (the store's counts): one that fails leaves the values of the last that did.
   */
  gauge<L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    read: (set: (labels: Record<L, string>, value: number) => void) => void | Promise<void>
  ): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        const values: [Record<L, string>, number][] = []
        try {
          await read((labels, value) => values.push([labels, value]))
        } catch {
          return
        }
        this.reset()
        for (const [labels, value] of values) this.set(labels as never, value)
      }
    })
  }

  /**
   * `iothub_thread_cpu_seconds_total{thread}`: the event loop's cpu (`main`) and that of the
   * threads `threads` names (the store's), read from the kernel at scrape time. Where threads'
   * cpu cannot be read (not Linux) it is not registered.
   */
  threadCpu(threads: () => readonly { name: string; threadId: number }[]): void {
    if (threadCpuSeconds(MAIN_THREAD_ID) === null) return
    new Counter({
      name: 'iothub_thread_cpu_seconds_total',
      help: "CPU time of the hub's threads: main (the event loop), store_writer and store_checkpointer (SQLite's); the rest of process_cpu_seconds_total is V8's and libuv's helpers",
      labelNames: ['thread'] as const,
      registers: [this.registry],
      collect() {
        this.reset()
        for (const { name, threadId } of [{ name: 'main', threadId: MAIN_THREAD_ID }, ...threads()]) {
          const seconds = threadCpuSeconds(threadId)
          if (seconds !== null) this.inc({ thread: name }, seconds)
        }
      }
    })
  }

  /** A tally of lifecycle events of `kind` with `outcome`, for the event path (ask once, keep it). */
  eventTally(kind: string, outcome: string): Tally {
    return this.eventTallies.of({ kind, outcome })
  }

  /** A tally of connections of `protocol` that ended for `reason` (ask once, keep it). */
  disconnectTally(protocol: string, reason: string): Tally {
    return this.disconnectTallies.of({ protocol, reason })
  }

  reject(reason: RejectReason): void {
    this.rejectedTotal.inc({ reason })
  }

  commitObserver(onFailure: (error: Error) => void): CommitObserver {
    return {
      committed: (commits, mutations, seconds) => {
        this.commitSeconds.observe(seconds)
        this.batchCommits.observe(commits)
        this.batchMutations.observe(mutations)
      },
      failed: (error) => {
        this.storeFailures.inc()
        onFailure(error)
      }
    }
  }
}
