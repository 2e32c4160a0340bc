/** Calls a hub's HTTP API as a user would: JSON in, JSON (or text, for /metrics) out. */
import { Agent, fetch as undiciFetch } from 'undici'

export const BASIC_ADMIN = `Basic ${Buffer.from('admin:public').toString('base64')}`

/**
 * Answer of one HTTP API call; the body is parsed JSON when it is JSON, else the text.
 * `authorization` overrides the client's credentials for this call; `null` sends none.
 */
export type ApiCall = <T = unknown>(method: string, path: string, body?: unknown, authorization?: string | null) => Promise<{ status: number; body: T }>

/** `ca`: the PEM certificates an `https://` API's certificate is checked against. */
export function apiClient(httpUrl: string, defaultAuthorization = BASIC_ADMIN, options: { ca?: string } = {}): ApiCall {
  // global fetch cannot be told a CA to trust; undici's own, with its own Agent, can
  const trusting = options.ca === undefined ? undefined : new Agent({ connect: { ca: options.ca } })
  const send = trusting ? (url: string, init: RequestInit) => undiciFetch(url, { ...(init as object), dispatcher: trusting }) : fetch
  return async (method, path, body, authorization = defaultAuthorization) => {
    const response = await send(`${httpUrl}${path}`, {
      method,
      headers: {
        ...(authorization ? { authorization } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {})
      },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await response.text()
    let parsed: unknown = text
    try {
      parsed = JSON.parse(text)
    } catch {
      // not JSON (metrics): keep the text
    }
    return { status: response.status, body: parsed as never }
  }
}
