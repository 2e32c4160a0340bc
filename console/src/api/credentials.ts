/**
 * The API credentials the login form was given: kept in sessionStorage, so they last as long as
 * the tab and no longer, and are never written to a cookie the browser would send by itself.
 */
const KEY = 'iothub.credentials'

export function savedAuthorization(): string | null {
  return sessionStorage.getItem(KEY)
}

export function basicAuthorization(user: string, password: string): string {
  // btoa takes Latin-1 only: encode UTF-8 first, as the API decodes it
  const bytes = new TextEncoder().encode(`${user}:${password}`)
  return `Basic ${btoa(String.fromCharCode(...bytes))}`
}

export function saveAuthorization(authorization: string): void {
  sessionStorage.setItem(KEY, authorization)
}

const listeners = new Set<() => void>()

/** Forgets the credentials and tells the app, which shows the login form again. */
export function signOut(): void {
  sessionStorage.removeItem(KEY)
  for (const listener of listeners) listener()
}

export function onSignOut(listener: () => void): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}
