/** The console: the login form until the API's credentials are given, then the views. */
import { useEffect, useState } from 'preact/hooks'
import { onSignOut, savedAuthorization, signOut } from './api/credentials'
import { DevicePage } from './pages/device'
import { Devices } from './pages/devices'
import { Events } from './pages/events'
import { Login } from './pages/login'
import { Overview } from './pages/overview'
import { Sessions } from './pages/sessions'
import { useRoute, type Route } from './routing'

const NAV: { href: string; label: string; pages: Route['page'][] }[] = [
  { href: '#/', label: 'Overview', pages: ['overview'] },
  { href: '#/sessions', label: 'Sessions', pages: ['sessions'] },
  { href: '#/devices', label: 'Devices', pages: ['devices', 'device'] },
  { href: '#/events', label: 'Events', pages: ['events'] }
]

export function App() {
  const [signedIn, setSignedIn] = useState(() => savedAuthorization() !== null)
  const route = useRoute()
  useEffect(() => onSignOut(() => setSignedIn(false)), [])

  if (!signedIn) return <Login onSignedIn={() => setSignedIn(true)} />
  return (
    <div class="shell">
      <header>
        <span class="brand">iothub</span>
        <nav>
          {NAV.map((item) => (
            <a key={item.href} href={item.href} class={item.pages.includes(route.page) ? 'active' : ''}>
              {item.label}
            </a>
          ))}
        </nav>
        <button type="button" class="link" onClick={signOut}>
          Log out
        </button>
      </header>
      <main>
        {route.page === 'overview' && <Overview />}
        {route.page === 'sessions' && <Sessions />}
        {route.page === 'devices' && <Devices />}
        {route.page === 'device' && <DevicePage key={route.id} id={route.id} />}
        {route.page === 'events' && <Events />}
      </main>
    </div>
  )
}
