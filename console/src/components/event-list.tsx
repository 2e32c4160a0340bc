/** Events as rows, newest first, each opening to its JSON. */
import { useState } from 'preact/hooks'
import type { HubEvent } from '../api/types'
import { time } from '../format'

/** What an event says in a few words: the reason of an end, the topics of a (un)subscribe, a property's name. */
function detailOf(e: HubEvent): string {
  if (e.reason) return e.reason
  if (e.topics) return e.topics.map((t) => t.topic).join(', ')
  if (e.type === 'device.property') return `${e.name ?? ''} ${JSON.stringify(e.value)}`.slice(0, 160)
  if (e.subscription) return e.subscription.topic
  if (e.tookOver) return `took over ${e.tookOver}`
  return ''
}

export function EventList(props: { events: HubEvent[]; testId: string }) {
  const [open, setOpen] = useState<number | null>(null)
  return (
    <table class="events" data-testid={props.testId}>
      <thead>
        <tr>
          <th>seq</th>
          <th>time</th>
          <th>type</th>
          <th>device</th>
          <th>client</th>
          <th>detail</th>
        </tr>
      </thead>
      <tbody>
        {props.events.map((e) => [
          <tr key={e.seq} data-type={e.type} data-client-id={e.clientId ?? ''} onClick={() => setOpen(open === e.seq ? null : e.seq)}>
            <td>{e.seq}</td>
            <td title={e.time}>{time(e.time)}</td>
            <td>{e.type}</td>
            <td>{e.deviceId}</td>
            <td>{e.clientId ?? ''}</td>
            <td class="detail">{detailOf(e)}</td>
          </tr>,
          open === e.seq && (
            <tr key={`${e.seq}-json`} class="json">
              <td colSpan={6}>
                <pre>{JSON.stringify(e, null, 2)}</pre>
              </td>
            </tr>
          )
        ])}
        {props.events.length === 0 && (
          <tr>
            <td colSpan={6} class="muted">
              no events yet
            </td>
          </tr>
        )}
      </tbody>
    </table>
  )
}

/** The position of the change log this hub has followed to: where "the last N changes" start. */
export async function logPosition(load: () => Promise<{ data: { self: boolean; logPosition: number }[] }>): Promise<number> {
  const { data } = await load()
  return data.find((r) => r.self)?.logPosition ?? 0
}
