/** The login form: the API's user and password, checked against the hub before they are kept. */
import { useState } from 'preact/hooks'
import { api } from '../api/client'
import { basicAuthorization, saveAuthorization } from '../api/credentials'
import { ErrorLine, messageOf } from '../components/errors'

export function Login(props: { onSignedIn: () => void }) {
  const [user, setUser] = useState('')
  const [password, setPassword] = useState('')
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)

  const submit = async (e: Event) => {
    e.preventDefault()
    setBusy(true)
    setError(null)
    const authorization = basicAuthorization(user, password)
    try {
      // any authenticated route says whether the credentials open the API
      await api('GET', '/v1/replicas', undefined, { authorization })
      saveAuthorization(authorization)
      props.onSignedIn()
    } catch (err) {
      setError(messageOf(err))
    } finally {
      setBusy(false)
    }
  }

  return (
    <main class="login">
      <form onSubmit={(e) => void submit(e)} aria-label="Log in">
        <h1>iothub</h1>
        <p>The API's credentials (IOTHUB_API_USER / IOTHUB_API_PASSWORD).</p>
        <label>
          User
          <input name="user" autocomplete="username" value={user} onInput={(e) => setUser(e.currentTarget.value)} required autofocus />
        </label>
        <label>
          Password
          <input name="password" type="password" autocomplete="current-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} required />
        </label>
        <button type="submit" disabled={busy}>
          {busy ? 'Logging in…' : 'Log in'}
        </button>
        <ErrorLine error={error} />
      </form>
    </main>
  )
}
