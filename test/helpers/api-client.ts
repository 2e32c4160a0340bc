/** Calls a hub's HTTP API as a user would: JSON in, JSON (or text, for /metrics) out. */

export const BASIC_ADMIN = `Basic ${Buffer.from('admin:public').toString('base64')}`

/**
 * Answer of one HTTP API call; the body is parsed JSON when it is JSON, else the text.
 * `authorization` overrides the client's credentials for this call; `null` sends none.
 */
export type ApiCall = <T = unknown>(method: string, path: string, body?: unknown, authorization?: string | null) => Promise<{ status: number; body: T }>

export function apiClient(httpUrl: string, defaultAuthorization = BASIC_ADMIN): ApiCall {
  return async (method, path, body, authorization = defaultAuthorization) => {
    const response = await fetch(`${httpUrl}${path}`, {
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
