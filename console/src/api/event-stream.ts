/**
 * Follows `GET /v1/events` (docs/events.md) with fetch, so the request carries the credentials,
 * and reconnects after the last event it got when the stream ends or the hub closes it.
 */
import { apiHeaders, errorOf, query } from './client'
import { signOut } from './credentials'
import { SseParser } from './sse-parser'
import type { HubEvent } from './types'

export interface EventFilters {
  types?: string
  deviceId?: string
  owner?: string
}

export type StreamState = { kind: 'connecting' } | { kind: 'live' } | { kind: 'retrying'; detail: string } | { kind: 'failed'; detail: string }

export interface StreamOptions {
  filters: EventFilters
  /** Start after this event's seq (0: the oldest the log holds); without it, from now. */
  after?: number
  onEvent(event: HubEvent): void
  /** Each time the stream is open, first or again: what it missed while closed must be read afresh. */
  onOpen?(): void
  onState?(state: StreamState): void
}

const RETRY_FIRST_MS = 1000
const RETRY_MAX_MS = 10_000

/** Opens the stream; the function returned closes it for good. */
export function openEventStream(options: StreamOptions): () => void {
  const controller = new AbortController()
  void follow(options, controller.signal)
  return () => controller.abort()
}

async function follow(options: StreamOptions, signal: AbortSignal): Promise<void> {
  let after = options.after
  let retryMs = RETRY_FIRST_MS
  const state = (s: StreamState) => options.onState?.(s)
  while (!signal.aborted) {
    state({ kind: 'connecting' })
    let detail = 'the stream ended'
    try {
      const response = await fetch(`/v1/events${query({ ...options.filters, after })}`, { headers: apiHeaders(), signal })
      if (response.status === 401) return signOut()
      if (response.status === 410) {
        // pruned past our position: go on from the oldest kept (onOpen reads the state afresh)
        const { oldest } = (await response.json()) as { oldest: number }
        after = oldest - 1
        continue
      }
      if (!response.ok || !response.body) {
        const error = await errorOf(response)
        // a filter the hub refuses will be refused again
        if (response.status === 400) return state({ kind: 'failed', detail: error.message })
        throw error
      }
      retryMs = RETRY_FIRST_MS
      options.onOpen?.()
      state({ kind: 'live' })
      const parser = new SseParser()
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
      for (;;) {
        const { value, done } = await reader.read()
        if (done) break
        for (const message of parser.push(value)) {
          if (message.id !== undefined && /^[0-9]+$/.test(message.id)) after = Number(message.id)
          if (message.event === 'error') detail = `the hub closed the stream: ${(JSON.parse(message.data) as { message?: string }).message ?? message.data}`
          else if (message.data !== '') options.onEvent(JSON.parse(message.data) as HubEvent)
        }
      }
    } catch (error) {
      if (signal.aborted) return
      detail = (error as Error).message
    }
    state({ kind: 'retrying', detail })
    await pause(retryMs, signal)
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS)
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      resolve()
    }, { once: true })
  })
}
