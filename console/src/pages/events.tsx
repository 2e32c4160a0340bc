/** Events: a live tail of `GET /v1/events`, with the hub's filters (types, device, owner). */
import { useEffect, useRef, useState } from 'preact/hooks'
import { api } from '../api/client'
import { openEventStream, type StreamState } from '../api/event-stream'
import { EVENT_TYPES, type HubEvent, type Replica } from '../api/types'
import { ErrorLine, messageOf } from '../components/errors'
import { EventList, logPosition } from '../components/event-list'
import { StreamBadge } from '../components/stream-state'

/** Rows kept on the page; older ones scroll away. */
const KEEP = 500
/** How far back the tail starts: the events among the hub's last changes. */
const BACK = 100

interface Form {
  types: string[]
  deviceId: string
  owner: string
}

export function Events() {
  const empty: Form = { types: [], deviceId: '', owner: '' }
  const [form, setForm] = useState<Form>(empty)
  const [applied, setApplied] = useState<Form>(empty)
  const [events, setEvents] = useState<HubEvent[]>([])
  const [paused, setPaused] = useState(false)
  const [stream, setStream] = useState<StreamState>({ kind: 'connecting' })
  const [error, setError] = useState<string | null>(null)
  // where a paused tail resumes: after the last event it showed
  const lastSeq = useRef<number | undefined>(undefined)

  useEffect(() => {
    setEvents([])
    lastSeq.current = undefined
  }, [applied])

  useEffect(() => {
    if (paused) return undefined
    let close: (() => void) | undefined
    let stopped = false
    logPosition(() => api<{ data: Replica[] }>('GET', '/v1/replicas'))
      .then((position) => {
        if (stopped) return
        setError(null)
        close = openEventStream({
          filters: {
            ...(applied.types.length > 0 ? { types: applied.types.join(',') } : {}),
            ...(applied.deviceId ? { deviceId: applied.deviceId } : {}),
            ...(applied.owner ? { owner: applied.owner } : {})
          },
          after: lastSeq.current ?? Math.max(0, position - BACK),
          onState: setStream,
          onEvent: (event) => {
            lastSeq.current = event.seq
            setEvents((list) => [event, ...list.slice(0, KEEP - 1)])
          }
        })
      })
      .catch((e: unknown) => setError(messageOf(e)))
    return () => {
      stopped = true
      close?.()
    }
  }, [applied, paused])

  const toggle = (type: string) => setForm({ ...form, types: form.types.includes(type) ? form.types.filter((t) => t !== type) : [...form.types, type] })

  return (
    <section>
      <h1>
        Events {paused ? <span class="badge">paused</span> : <StreamBadge state={stream} />}
      </h1>
      <form
        class="filters"
        aria-label="Event filters"
        onSubmit={(e) => {
          e.preventDefault()
          setApplied(form)
        }}
      >
        <fieldset class="types">
          <legend>types (none: all)</legend>
          {EVENT_TYPES.map((type) => (
            <label key={type} class="check">
              <input type="checkbox" checked={form.types.includes(type)} onInput={() => toggle(type)} />
              {type}
            </label>
          ))}
        </fieldset>
        <input placeholder="device id" aria-label="device id" value={form.deviceId} onInput={(e) => setForm({ ...form, deviceId: e.currentTarget.value })} />
        <input placeholder="owner" aria-label="owner" value={form.owner} onInput={(e) => setForm({ ...form, owner: e.currentTarget.value })} />
        <button type="submit">Apply</button>
        <button type="button" onClick={() => setPaused(!paused)}>
          {paused ? 'Resume' : 'Pause'}
        </button>
      </form>
      <p class="muted">Starts with the matching events among the hub's last {BACK} changes, then live; the newest first.</p>
      <ErrorLine error={error} />
      <EventList events={events} testId="events" />
    </section>
  )
}
