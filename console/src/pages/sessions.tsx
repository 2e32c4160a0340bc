/**
 * Sessions: one page of `GET /v1/sessions` with the hub's own filters, kept current from the
 * event stream (live/session-page.ts), each connected session with a kick.
 */
import { useEffect, useRef, useState } from 'preact/hooks'
import { api, query } from '../api/client'
import { openEventStream, type StreamState } from '../api/event-stream'
import type { HubEvent, Page, Session } from '../api/types'
import { ErrorLine, messageOf } from '../components/errors'
import { Pager } from '../components/pager'
import { StreamBadge } from '../components/stream-state'
import { since } from '../format'
import { applySessionEvent, type SessionFilters } from '../live/session-page'
import { usePaged } from '../live/use-paged'
import { deviceHref } from '../routing'

const SESSION_TYPES = 'session.connected,session.disconnected,session.ended,session.subscribed,session.unsubscribed'
const PAGE_SIZES = [25, 50, 100]

interface Form {
  /** A client id, or part of one (`clientIdMatch`). */
  clientId: string
  /** `contains`: the sessions whose client id holds `clientId`; `exact`: the one session of that id (the store's index, not a read of every row). */
  clientIdMatch: 'contains' | 'exact'
  deviceId: string
  protocol: string
  connected: string
}

function filtersOf(form: Form): SessionFilters {
  return {
    ...(form.clientId ? (form.clientIdMatch === 'exact' ? { clientId: form.clientId } : { clientIdContains: form.clientId }) : {}),
    ...(form.deviceId ? { deviceId: form.deviceId } : {}),
    ...(form.protocol ? { protocol: form.protocol } : {}),
    ...(form.connected ? { connected: form.connected === 'true' } : {})
  }
}

export function Sessions() {
  const empty: Form = { clientId: '', clientIdMatch: 'contains', deviceId: '', protocol: '', connected: '' }
  const [form, setForm] = useState<Form>(empty)
  const [applied, setApplied] = useState<Form>(empty)
  const [limit, setLimit] = useState(50)
  const [stream, setStream] = useState<StreamState>({ kind: 'connecting' })
  const [notice, setNotice] = useState<string | null>(null)
  const filters = filtersOf(applied)
  // the events that came while a page was asked for: applied to it once it arrives
  const meanwhile = useRef<HubEvent[] | null>(null)

  const paged = usePaged<Session>(
    (cursor) => api<Page<Session>>('GET', `/v1/sessions${query({ ...filters, limit, cursor })}`),
    JSON.stringify([applied, limit]),
    {
      loading: () => (meanwhile.current = []),
      loaded: (rows, range) => {
        const events = meanwhile.current ?? []
        meanwhile.current = null
        return events.reduce((page, event) => applySessionEvent(page, event, filters), { rows, ...range }).rows
      }
    }
  )
  const range = useRef({ afterId: paged.step.afterId, untilId: paged.untilId, filters })
  range.current = { afterId: paged.step.afterId, untilId: paged.untilId, filters }

  useEffect(
    () =>
      openEventStream({
        filters: { types: SESSION_TYPES },
        onState: setStream,
        // what happened while the stream was closed is read afresh
        onOpen: paged.reload,
        onEvent: (event) => {
          meanwhile.current?.push(event)
          const { afterId, untilId, filters } = range.current
          paged.setRows((rows) => applySessionEvent({ rows, afterId, untilId }, event, filters).rows)
        }
      }),
    [paged.reload, paged.setRows]
  )

  const kick = async (id: string) => {
    try {
      await api('DELETE', `/v1/sessions/${encodeURIComponent(id)}`)
      setNotice(`kicked ${id}`)
    } catch (e) {
      setNotice(`kick ${id}: ${messageOf(e)}`)
    }
  }

  const field = (name: keyof Form) => ({
    value: form[name],
    onInput: (e: Event) => setForm({ ...form, [name]: (e.currentTarget as HTMLInputElement).value })
  })

  return (
    <section>
      <h1>
        Sessions <StreamBadge state={stream} />
      </h1>
      <form
        class="filters"
        aria-label="Session filters"
        onSubmit={(e) => {
          e.preventDefault()
          setApplied(form)
        }}
      >
        <select aria-label="client id match" {...field('clientIdMatch')}>
          <option value="contains">client id contains</option>
          <option value="exact">client id is</option>
        </select>
        <input placeholder="client id" aria-label="client id" {...field('clientId')} />
        <input placeholder="device id" aria-label="device id" {...field('deviceId')} />
        <select aria-label="protocol" {...field('protocol')}>
          <option value="">any protocol</option>
          <option value="mqtt">MQTT</option>
          <option value="coap">CoAP</option>
        </select>
        <select aria-label="state" {...field('connected')}>
          <option value="">connected or offline</option>
          <option value="true">connected</option>
          <option value="false">offline</option>
        </select>
        <select aria-label="page size" value={String(limit)} onInput={(e) => setLimit(Number(e.currentTarget.value))}>
          {PAGE_SIZES.map((n) => (
            <option key={n} value={String(n)}>
              {n} a page
            </option>
          ))}
        </select>
        <button type="submit">Search</button>
      </form>
      <ErrorLine error={paged.error} />
      {notice && <p class="notice">{notice}</p>}
      <table data-testid="sessions">
        <thead>
          <tr>
            <th>client id</th>
            <th>device</th>
            <th>protocol</th>
            <th>node</th>
            <th>peer</th>
            <th>state</th>
            <th>since</th>
            <th>topics</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {paged.rows.map((s) => (
            <tr key={s.id} data-client-id={s.clientId}>
              <td>{s.clientId}</td>
              <td>{s.deviceId ? <a href={deviceHref(s.deviceId)}>{s.deviceId}</a> : <em>superuser</em>}</td>
              <td>{s.protocol}</td>
              <td>{s.node}</td>
              <td>{s.peerHost ? `${s.peerHost}:${s.peerPort}` : ''}</td>
              <td class={s.connected ? 'ok' : 'muted'}>{s.connected ? 'connected' : `offline (${s.disconnectReason ?? ''})`}</td>
              <td title={s.connected ? s.connectedAt : (s.disconnectedAt ?? '')}>{since(s.connected ? s.connectedAt : s.disconnectedAt)}</td>
              <td title={s.topics.map((t) => t.topic).join('\n')}>{s.topics.length}</td>
              <td>
                {/* offline: the hub discards the persistent session, as EMQX's kick does */}
                <button type="button" class="danger" onClick={() => void kick(s.id)}>
                  {s.connected ? 'Kick' : 'Discard'}
                </button>
              </td>
            </tr>
          ))}
          {paged.rows.length === 0 && !paged.loading && (
            <tr>
              <td colSpan={9} class="muted">
                no sessions
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager page={paged.pageNumber} hasPrev={paged.hasPrev} hasNext={paged.hasNext} onPrev={paged.prev} onNext={paged.next} shown={paged.rows.length} loading={paged.loading} />
    </section>
  )
}
