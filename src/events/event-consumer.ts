/**
 * One consumer of `GET /v1/events`: it first catches up from the change log as stored, a page at a
 * time, as fast as its socket takes them; once at the head it is handed live events as the
 * follower applies them. Either way it sees each entry once, in order, and `position` is the last
 * one it has handled — so whatever closes it, resuming after `position` loses and repeats nothing.
 *
 * Its memory is bounded: one page while catching up, and never more than `bufferBytes` (plus one
 * page, or one live batch) waiting in its socket. Live events cannot wait for a reader that does not read: a
 * consumer whose socket holds more than that is closed as slow, and resumes by sequence.
 */
import type { ServerResponse } from 'node:http'
import type { EventFilter } from './event-filter.js'
import { matches } from './event-filter.js'
import type { EventLog, PreparedEvent } from './event-log.js'
import { closingFrame, encodeFrames, heartbeatFrame } from './sse-frame.js'

/** Entries read from the store at once while catching up. */
const PAGE = 500
/** How long a catching-up consumer's full socket may take to drain before it counts as slow, ms. */
const DRAIN_WAIT_MS = 30_000
/** How long a closed stream's last message may take to leave before its socket is destroyed, ms. */
const LINGER_MS = 30_000

export type CloseReason = 'slow' | 'log_pruned' | 'log_unreadable' | 'server_shutdown'

/** Live entries made into events once for every consumer. */
export interface LiveBatch {
  readonly events: readonly PreparedEvent[]
  /** Every event's frame, encoded once, for the consumers that take them all. */
  allFrames(): Buffer
}

/** What a consumer needs of the streams it belongs to. */
export interface Feed {
  readonly log: EventLog
  /** The last entry the feed has handed to live consumers (or let pass, with none listening). */
  readonly delivered: number
  gone(consumer: EventConsumer, reason: CloseReason | null): void
  /** `count` events were written to a consumer. */
  sent(count?: number): void
}

export class EventConsumer {
  private mode: 'catching-up' | 'live' | 'closed' = 'catching-up'
  /** The last id written, an event's or a heartbeat's. */
  private lastId: number
  /** Whether this consumer takes every event (then it is sent a live batch's shared bytes). */
  private readonly unfiltered: boolean

  constructor(
    private readonly res: ServerResponse,
    private readonly feed: Feed,
    private readonly filter: EventFilter,
    private readonly bufferBytes: number,
    /** The last entry handled: events after it are this consumer's to send. */
    private position: number
  ) {
    this.lastId = position
    this.unfiltered = filter.types === undefined && filter.deviceId === undefined && filter.owner === undefined
    res.on('close', () => this.gone(null))
  }

  start(): void {
    void this.catchUp()
  }

  /** Live entries `from`…`through`, made into events once for every consumer. */
  deliver(from: number, through: number, batch: LiveBatch): void {
    if (this.mode !== 'live' || this.res.destroyed) return
    if (from > this.position + 1) {
      // the feed let entries pass without this consumer (it fell behind them): read them back
      this.mode = 'catching-up'
      void this.catchUp()
      return
    }
    const events = batch.events
    let sent = 0
    let last = this.lastId
    let bytes: Buffer | undefined
    if (this.unfiltered && from === this.position + 1) {
      // the common case: every event of the batch, as bytes encoded once for all such consumers
      sent = events.length
      if (sent > 0) {
        last = events[sent - 1]!.event.seq
        bytes = batch.allFrames()
      }
    } else {
      // one write for the batch: a write per event per consumer is what costs the hub most
      const taken = events.filter((e) => e.event.seq > this.position && matches(this.filter, e.event))
      sent = taken.length
      if (sent > 0) {
        last = taken[sent - 1]!.event.seq
        bytes = encodeFrames(taken.map((e) => ({ seq: e.event.seq, json: e.json })))
      }
    }
    if (sent > 0 && bytes !== undefined) {
      if (this.res.writableLength > this.bufferBytes) {
        this.close('slow', `more than ${this.bufferBytes} bytes of events were waiting for the consumer to read them`)
        return
      }
      this.res.write(bytes)
      this.lastId = last
      this.feed.sent(sent)
    }
    if (through > this.position) this.position = through
  }

  heartbeat(): void {
    if (this.mode === 'closed') return
    const advance = this.position > this.lastId ? this.position : undefined
    this.res.write(heartbeatFrame(advance))
    if (advance !== undefined) this.lastId = advance
  }

  /** Writes the closing message, then ends the stream; its socket goes if it does not drain. */
  close(reason: CloseReason, message: string): void {
    if (this.mode === 'closed') return
    this.gone(reason)
    this.res.end(closingFrame(reason, message, this.position))
    // a consumer that reads nothing would hold its socket: it goes once the message had its time
    const linger = setTimeout(() => this.res.destroy(), LINGER_MS).unref()
    this.res.once('finish', () => clearTimeout(linger))
  }

  get isLive(): boolean {
    return this.mode === 'live'
  }

  private async catchUp(): Promise<void> {
    try {
      while (this.mode === 'catching-up') {
        const entries = await this.feed.log.readEntries(this.position, PAGE)
        if (this.mode !== 'catching-up') return
        const first = entries[0]
        const behind = this.position < this.feed.delivered
        if ((first && first.seq !== this.position + 1) || (!first && behind)) {
          return this.close('log_pruned', `the change log no longer holds the entries after ${this.position}: GET /v1/events?after=${this.position} answers 410 with the oldest it holds`)
        }
        const events = await this.feed.log.prepare(entries)
        const taken = this.unfiltered ? events : events.filter((e) => matches(this.filter, e.event))
        if (taken.length > 0) {
          // a page at a time, in one write: a consumer resuming far back is not written to per event
          if (this.res.writableLength > this.bufferBytes && !(await this.drained())) {
            return this.close('slow', `the consumer did not take what was sent within ${DRAIN_WAIT_MS / 1000} s`)
          }
          if (this.mode !== 'catching-up') return
          this.res.write(encodeFrames(taken.map((e) => ({ seq: e.event.seq, json: e.json }))))
          this.lastId = taken[taken.length - 1]!.event.seq
          this.feed.sent(taken.length)
        }
        if (first) this.position = entries[entries.length - 1]!.seq
        if (entries.length < PAGE && this.position >= this.feed.delivered) {
          // from here the feed hands over every entry after `delivered`: none is missed
          this.mode = 'live'
        }
      }
    } catch (error) {
      this.close('log_unreadable', `the change log could not be read: ${(error as Error).message}`)
    }
  }

  private drained(): Promise<boolean> {
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer)
        this.res.off('drain', onDrain)
        this.res.off('close', onClose)
        resolve(ok)
      }
      const onDrain = () => done(true)
      const onClose = () => done(false)
      const timer = setTimeout(() => done(false), DRAIN_WAIT_MS)
      this.res.on('drain', onDrain)
      this.res.on('close', onClose)
    })
  }

  private gone(reason: CloseReason | null): void {
    if (this.mode === 'closed') return
    this.mode = 'closed'
    this.feed.gone(this, reason)
  }
}
