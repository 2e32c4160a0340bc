/**
 * Webhooks out (IOTHUB_EVENTS_WEBHOOK_URL): each batch of events is one POST of a JSON array of
 * them, in order, signed with HMAC-SHA256 over the exact bytes of the body under
 * IOTHUB_EVENTS_WEBHOOK_SECRET, hex, in `x-iothub-signature: sha256=<hex>` — so the receiver
 * checks it against the body as received, before parsing it (docs/events.md, "Webhooks out").
 * A 2xx answer delivers the batch; anything else, a network error or no answer within the
 * timeout fails it, and leased-delivery.ts sends the same batch again.
 */
import { createHmac } from 'node:crypto'
import type { PreparedEvent } from './event-log.js'
import { DeliveryFailure, type DeliverySink } from './leased-delivery.js'

export const SIGNATURE_HEADER = 'x-iothub-signature'

/** The signature header's value for `body`. */
export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`
}

export function webhookSink(url: string, secret: string, timeoutMs: number): DeliverySink {
  return {
    async send(events: readonly PreparedEvent[], signal: AbortSignal): Promise<void> {
      const body = `[${events.map((e) => e.json).join(',')}]`
      let response: Response
      try {
        response = await fetch(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'user-agent': 'iothub-events',
            [SIGNATURE_HEADER]: signBody(secret, body),
            // the receiver may drop what it already has (a batch sent again) by these
            'x-iothub-first-seq': String(events[0]!.event.seq),
            'x-iothub-last-seq': String(events[events.length - 1]!.event.seq)
          },
          body,
          signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
        })
      } catch (error) {
        const timedOut = (error as Error).name === 'TimeoutError'
        throw new DeliveryFailure(timedOut ? `no answer within ${timeoutMs} ms` : `${(error as Error).message}${causeOf(error)}`, timedOut ? 'timeout' : 'network')
      }
      // read to the end, so the connection goes back to the pool for the next batch
      await response.arrayBuffer().catch(() => undefined)
      if (!response.ok) throw new DeliveryFailure(`the receiver answered ${response.status}`, 'status')
    }
  }
}

function causeOf(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause
  return cause ? ` (${cause.code ?? cause.message})` : ''
}
