/** Calls to the hub's API with the saved credentials; a 401 signs out (back to the login form). */
import { savedAuthorization, signOut } from './credentials'

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message)
  }
}

/** The headers of every API call: the credentials, and the marker that keeps the browser's own prompt away. */
export function apiHeaders(authorization = savedAuthorization()): Record<string, string> {
  return { authorization: authorization ?? '', 'x-requested-with': 'XMLHttpRequest' }
}

/** The message of an error answer: the API's `message`, else its status line. */
export async function errorOf(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`
  try {
    const body = (await response.json()) as { message?: unknown }
    if (typeof body.message === 'string') message = body.message
  } catch {
    // not JSON: the status says it
  }
  return new ApiError(response.status, message)
}

export async function api<T>(method: string, path: string, body?: unknown, init: { authorization?: string; signal?: AbortSignal } = {}): Promise<T> {
  const headers = apiHeaders(init.authorization)
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: init.signal })
  if (!response.ok) {
    const error = await errorOf(response)
    // a call made with the saved credentials that they no longer open: log in again
    if (response.status === 401 && init.authorization === undefined) signOut()
    throw error
  }
  if (response.status === 204) return undefined as T
  return (await response.json()) as T
}

/** A query string of the values given, leaving out the empty ones. */
export function query(params: Record<string, string | number | boolean | undefined | null>): string {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue
    search.set(key, String(value))
  }
  const text = search.toString()
  return text === '' ? '' : `?${text}`
}
