/**
 * One device: its registration and properties, its sessions and subscription entities, its
 * recent events (then live, and the page read again as they come), and forms to push an
 * attribute change or a command to the sessions subscribed to them.
 */
import { useEffect, useRef, useState } from 'preact/hooks'
import { api, ApiError, query } from '../api/client'
import { openEventStream, type StreamState } from '../api/event-stream'
import type { Device, HubEvent, Page, Replica, Session, Subscription } from '../api/types'
import { DeleteDevice, EditDevice, parseObject, RotateToken, type DeviceDialog } from '../components/device-actions'
import { ErrorLine, messageOf } from '../components/errors'
import { EventList, logPosition } from '../components/event-list'
import { StreamBadge } from '../components/stream-state'
import { since } from '../format'

/** The device's events among the hub's last changes are shown when the page opens. */
const BACK = 2000
const KEEP = 100
/** Sessions and subscription entities shown (a device has a few; the page says when there are more). */
const LIST_LIMIT = 100
const PROPERTY_NAMES = ['attributes', 'telemetry', 'connectinfo', 'commands', 'rawData']

interface Loaded {
  device: Device
  sessions: Page<Session>
  subscriptions: Page<Subscription>
}

function PushForms(props: { id: string }) {
  const [attributes, setAttributes] = useState('{\n  "colour": "red"\n}')
  const [command, setCommand] = useState({ name: '', params: '{}' })
  const [result, setResult] = useState<string | null>(null)
  const [error, setError] = useState<string | null>(null)
  const path = `/v1/devices/${encodeURIComponent(props.id)}`
  const run = async (action: () => Promise<string>) => {
    setError(null)
    setResult(null)
    try {
      setResult(await action())
    } catch (e) {
      setError(messageOf(e))
    }
  }
  const pushedTo = (r: { pushedTo?: string[]; pushError?: string }) =>
    r.pushError ? `stored; not pushed: ${r.pushError}` : `stored; pushed to ${r.pushedTo?.length ?? 0} session(s)${r.pushedTo?.length ? `: ${r.pushedTo.join(', ')}` : ''}`
  return (
    <div class="cards">
      <form
        class="card"
        aria-label="Push attributes"
        onSubmit={(e) => {
          e.preventDefault()
          void run(async () => pushedTo(await api('PATCH', `${path}/attributes`, parseObject(attributes, 'attributes'))))
        }}
      >
        <h3>Push an attribute change</h3>
        <textarea name="attributes" rows={5} value={attributes} onInput={(e) => setAttributes(e.currentTarget.value)} />
        <button type="submit" class="primary">
          Push attributes
        </button>
      </form>
      <form
        class="card"
        aria-label="Send a command"
        onSubmit={(e) => {
          e.preventDefault()
          void run(async () => {
            const params = parseObject(command.params, 'params')
            const r = await api<{ command: { id: string }; pushedTo?: string[]; pushError?: string }>('POST', `${path}/commands`, { name: command.name, params })
            return `command ${r.command.id} ${pushedTo(r)}`
          })
        }}
      >
        <h3>Send a command</h3>
        <input name="command" placeholder="name" aria-label="command name" required value={command.name} onInput={(e) => setCommand({ ...command, name: e.currentTarget.value })} />
        <textarea name="params" rows={3} aria-label="params" value={command.params} onInput={(e) => setCommand({ ...command, params: e.currentTarget.value })} />
        <button type="submit" class="primary">
          Send command
        </button>
      </form>
      {result && (
        <p class="notice" data-testid="push-result">
          {result}
        </p>
      )}
      <ErrorLine error={error} />
    </div>
  )
}

export function DevicePage(props: { id: string }) {
  const { id } = props
  const [loaded, setLoaded] = useState<Loaded | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [gone, setGone] = useState<string | null>(null)
  const [events, setEvents] = useState<HubEvent[]>([])
  const [stream, setStream] = useState<StreamState>({ kind: 'connecting' })
  const [dialog, setDialog] = useState<DeviceDialog>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const reloadTimer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined)

  const load = async () => {
    try {
      const by = query({ deviceId: id, limit: LIST_LIMIT })
      const [device, sessions, subscriptions] = await Promise.all([
        api<Device>('GET', `/v1/devices/${encodeURIComponent(id)}`),
        api<Page<Session>>('GET', `/v1/sessions${by}`),
        api<Page<Subscription>>('GET', `/v1/subscriptions${by}`)
      ])
      setLoaded({ device, sessions, subscriptions })
      setError(null)
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) setGone(`no device ${id}`)
      else setError(messageOf(e))
    }
  }
  // a burst of the device's events reads the page once
  const loadSoon = () => {
    clearTimeout(reloadTimer.current)
    reloadTimer.current = setTimeout(() => void load(), 250)
  }

  useEffect(() => {
    let close: (() => void) | undefined
    let stopped = false
    logPosition(() => api<{ data: Replica[] }>('GET', '/v1/replicas'))
      .then((position) => {
        if (stopped) return
        close = openEventStream({
          filters: { deviceId: id },
          after: Math.max(0, position - BACK),
          onState: setStream,
          onOpen: () => void load(),
          onEvent: (event) => {
            setEvents((list) => [event, ...list.slice(0, KEEP - 1)])
            loadSoon()
          }
        })
      })
      .catch((e: unknown) => setError(messageOf(e)))
    return () => {
      stopped = true
      close?.()
      clearTimeout(reloadTimer.current)
    }
  }, [id])

  const kick = async (clientId: string) => {
    try {
      await api('DELETE', `/v1/sessions/${encodeURIComponent(clientId)}`)
      setNotice(`kicked ${clientId}`)
    } catch (e) {
      setNotice(`kick ${clientId}: ${messageOf(e)}`)
    }
  }

  if (gone) {
    return (
      <section>
        <h1>Device {id}</h1>
        <p class="notice">{notice ?? gone}</p>
        <a href="#/devices">All devices</a>
      </section>
    )
  }
  const d = loaded?.device
  return (
    <section>
      <h1>
        Device <code>{id}</code> <StreamBadge state={stream} />
      </h1>
      <ErrorLine error={error} />
      {notice && <p class="notice">{notice}</p>}
      {d && loaded && (
        <>
          <div class="row-actions">
            <button type="button" onClick={() => setDialog({ kind: 'edit', device: d })}>
              Edit
            </button>
            <button type="button" onClick={() => setDialog({ kind: 'rotate', id })}>
              Rotate token
            </button>
            <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', id })}>
              Delete
            </button>
          </div>
          <div class="card wide">
            <dl class="inline" data-testid="device-fields">
              {(['name', 'owner', 'group', 'desc'] as const).map((key) => (
                <div key={key}>
                  <dt>{key}</dt>
                  <dd data-field={key}>{d[key] || '–'}</dd>
                </div>
              ))}
              <div>
                <dt>created</dt>
                <dd title={d.createdAt}>{since(d.createdAt)}</dd>
              </div>
              <div>
                <dt>ext</dt>
                <dd>
                  <code>{JSON.stringify(d.ext)}</code>
                </dd>
              </div>
            </dl>
          </div>
          <h2>Properties</h2>
          <div class="cards">
            {PROPERTY_NAMES.map((name) => (
              <div class="card" key={name} data-property={name}>
                <h3>{name}</h3>
                <pre>{JSON.stringify(d.properties?.[name] ?? {}, null, 2)}</pre>
              </div>
            ))}
          </div>
          <h2>Push</h2>
          <PushForms id={id} />
          <h2>Sessions</h2>
          <table data-testid="device-sessions">
            <thead>
              <tr>
                <th>client id</th>
                <th>protocol</th>
                <th>state</th>
                <th>peer</th>
                <th>topics</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {loaded.sessions.data.map((s) => (
                <tr key={s.id} data-client-id={s.clientId}>
                  <td>{s.clientId}</td>
                  <td>{s.protocol}</td>
                  <td class={s.connected ? 'ok' : 'muted'}>{s.connected ? `connected ${since(s.connectedAt)}` : `offline (${s.disconnectReason ?? ''})`}</td>
                  <td>{s.peerHost ? `${s.peerHost}:${s.peerPort}` : ''}</td>
                  <td>{s.topics.map((t) => t.topic).join(', ')}</td>
                  <td>
                    {s.connected && (
                      <button type="button" class="danger" onClick={() => void kick(s.id)}>
                        Kick
                      </button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          {loaded.sessions.next && <p class="muted">the first {LIST_LIMIT} shown: see Sessions, filtered by this device, for all</p>}
          <h2>Subscription entities</h2>
          <table data-testid="device-subscriptions">
            <thead>
              <tr>
                <th>id</th>
                <th>session</th>
                <th>topic</th>
                <th>properties</th>
              </tr>
            </thead>
            <tbody>
              {loaded.subscriptions.data.map((s) => (
                <tr key={s.id}>
                  <td>{s.id}</td>
                  <td>{s.sessionId}</td>
                  <td>{s.topic}</td>
                  <td>{s.properties.join(', ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {loaded.subscriptions.next && <p class="muted">the first {LIST_LIMIT} shown</p>}
        </>
      )}
      <h2>Recent events</h2>
      <p class="muted">This device's events among the hub's last {BACK.toLocaleString()} changes, then live.</p>
      <EventList events={events} testId="device-events" />
      {dialog?.kind === 'edit' && <EditDevice device={dialog.device} onClose={() => setDialog(null)} onSaved={() => void load()} />}
      {dialog?.kind === 'rotate' && <RotateToken id={dialog.id} onClose={() => setDialog(null)} />}
      {dialog?.kind === 'delete' && (
        <DeleteDevice
          id={dialog.id}
          onClose={() => setDialog(null)}
          onDeleted={(message) => {
            setNotice(message)
            setGone(message)
          }}
        />
      )}
    </section>
  )
}
