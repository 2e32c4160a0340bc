/**
 * Hash routes (`#/sessions`, `#/devices/{id}`): the hub serves the page at `/` only, and a
 * reload or a shared link keeps the view.
 */
import { useEffect, useState } from 'preact/hooks'

export type Route = { page: 'overview' } | { page: 'sessions' } | { page: 'devices' } | { page: 'device'; id: string } | { page: 'events' }

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, '')
  const device = /^\/devices\/(.+)$/.exec(path)
  if (device?.[1] !== undefined) return { page: 'device', id: decodeURIComponent(device[1]) }
  if (path === '/sessions') return { page: 'sessions' }
  if (path === '/devices') return { page: 'devices' }
  if (path === '/events') return { page: 'events' }
  return { page: 'overview' }
}

export const deviceHref = (id: string): string => `#/devices/${encodeURIComponent(id)}`

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash))
  useEffect(() => {
    const changed = () => setRoute(parseRoute(location.hash))
    addEventListener('hashchange', changed)
    return () => removeEventListener('hashchange', changed)
  }, [])
  return route
}
