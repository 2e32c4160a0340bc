/**
 * The EMQX-mode tests' replicated run (IOTHUB_TEST_EMQX_REPLICAS=2): startEmqxTestHub then
 * starts two hub replicas, A and B, on a PostgreSQL database of their own instead of one hub on
 * SQLite, and the EmqxTestHub it returns spreads the test's calls over them (Alternation), so
 * every test written for one hub also says what two replicas must do to act as one.
 *
 * How calls are spread:
 * - hook calls (every ExHook channel's and every WebHook post, counted together) go to A, B,
 *   A, B, … so consecutive hook calls are answered by different replicas, whatever channel
 *   or node they come from;
 * - an API call goes to the replica that did NOT answer the call before it, so a read right
 *   after a hook (or an API write) reads the other replica's view of it.
 *
 * What the test may expect of the other replica: a replica answers only once its change is
 * committed and applied to its own caches; the others apply it as they follow the change log,
 * a little later. Before every call the replica called first follows the log as far as every
 * other replica already has (`store.following().applied`, in this process): what a client of
 * a replicated hub needs to read its own writes through another replica. Anything a replica
 * then answers differently from the one hub is a disagreement between replicas, not lag.
 * Hook calls wait too, not only API reads: some answers come from the caches (message.publish
 * finds the publisher's session there), so a hook racing the log would make this run's
 * outcome depend on timing. That window — a replica answering before it has followed another
 * replica's change — is not what this rerun checks.
 */
import { createDatabase, type TestDatabase } from './postgres.js'
import type { Hub } from '../../src/hub.js'
import type { ApiCall } from './api-client.js'
import { EmqxExhookClient, type CallOptions, type EmqxExhookClientOptions } from './emqx-exhook-client.js'

const REPLICAS_VARIABLE = 'IOTHUB_TEST_EMQX_REPLICAS'

/** How many hub replicas an EMQX-mode test hub runs: 1 (the default) or 2. */
export const EMQX_REPLICAS = replicaCount(process.env[REPLICAS_VARIABLE])

function replicaCount(raw: string | undefined): 1 | 2 {
  if (raw === undefined || raw === '' || raw === '1') return 1
  if (raw === '2') return 2
  throw new Error(`${REPLICAS_VARIABLE} is 1 or 2, not ${JSON.stringify(raw)}`)
}

/**
 * For a test that holds only of one hub: its `skip` option, `why` it cannot apply to two
 * replicas in the replicated run (the reason node:test prints), nothing otherwise.
 */
export function oneHubOnly(why: string): string | undefined {
  return EMQX_REPLICAS === 1 ? undefined : `one hub only: ${why}`
}

/** One hub replica as the test reaches it. */
export interface ReplicaEndpoint {
  readonly name: string
  readonly hub: Hub
  readonly httpUrl: string
  readonly exhookAddress: string
  /** This replica's own API, not spread. */
  readonly api: ApiCall
}

/** Spreads one test hub's calls over its replicas (see the file's comment). */
export class Alternation {
  private nextHook = 0
  /** The replica that answered the latest call; the first API call goes to another. */
  private lastAnswered = 0
  private stopped = false

  constructor(readonly replicas: readonly ReplicaEndpoint[]) {}

  /** Runs a hook call on the replica whose turn it is, once it has followed the log as far as the others. */
  hook<T>(call: (replica: ReplicaEndpoint) => Promise<T>): Promise<T> {
    const index = this.nextHook
    this.nextHook = (index + 1) % this.replicas.length
    return this.on(index, call)
  }

  /** Runs an API call on the replica after the one that answered last, once it has followed the log as far as the others. */
  api<T>(call: (replica: ReplicaEndpoint) => Promise<T>): Promise<T> {
    return this.on((this.lastAnswered + 1) % this.replicas.length, call)
  }

  /** The calls' API, spread: an ApiCall like one hub's. */
  readonly spreadApi: ApiCall = (method, path, body, authorization) => this.api((replica) => replica.api(method, path, body, authorization))

  /** Ends every wait: the replicas are stopping, so no log position will come. */
  stop(): void {
    this.stopped = true
  }

  private async on<T>(index: number, call: (replica: ReplicaEndpoint) => Promise<T>): Promise<T> {
    await this.caughtUp(index)
    try {
      return await call(this.replicas[index]!)
    } finally {
      this.lastAnswered = index
    }
  }

  /**
   * Resolves once replica `index` has applied every log entry any other replica had applied
   * when this began. The position is in-process state the follower updates as it applies, so
   * it is polled on the event loop's turns; there is no event for it.
   */
  private async caughtUp(index: number): Promise<void> {
    const replica = this.replicas[index]!
    const target = Math.max(...this.replicas.filter((_, i) => i !== index).map((r) => r.hub.store.following().applied))
    while (replica.hub.store.following().applied < target) {
      if (this.stopped) throw new Error(`replica ${replica.name} stopped before it followed the change log to entry ${target}`)
      await new Promise((resolve) => setTimeout(resolve, 2))
    }
  }
}

/**
 * An ExHook client that is one EMQX node (one `node` name) with a channel to every replica: its
 * calls go where the alternation says. Every rpc method of EmqxExhookClient sends through
 * `call`, so each builds its request once, as EMQX would, and only the channel differs.
 */
export class AlternatingExhookClient extends EmqxExhookClient {
  /** The channels to the replicas after the first (the first is this client's own). */
  private readonly others: EmqxExhookClient[]

  constructor(
    private readonly alternation: Alternation,
    options: Omit<EmqxExhookClientOptions, 'address'>
  ) {
    const [first, ...rest] = alternation.replicas
    super({ ...options, address: first!.exhookAddress })
    this.others = rest.map((replica) => new EmqxExhookClient({ ...options, address: replica.exhookAddress }))
  }

  override call<Response>(rpc: string, request: object, options: CallOptions = {}): Promise<Response> {
    return this.alternation.hook((replica) => {
      const index = this.alternation.replicas.indexOf(replica)
      return index === 0 ? super.call<Response>(rpc, request, options) : this.others[index - 1]!.call<Response>(rpc, request, options)
    })
  }

  override async waitForReady(deadlineMs?: number): Promise<void> {
    await Promise.all([super.waitForReady(deadlineMs), ...this.others.map((c) => c.waitForReady(deadlineMs))])
  }

  override close(): void {
    super.close()
    for (const c of this.others) c.close()
  }
}

/** A database of its own for one replicated test hub: `iothub_emqx_replicas_<pid>_<n>`. */
export type ReplicaDatabase = Pick<TestDatabase, 'url' | 'drop'>

export function createReplicaDatabase(): Promise<ReplicaDatabase> {
  return createDatabase('iothub_emqx_replicas')
}
