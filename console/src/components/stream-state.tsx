import type { StreamState } from '../api/event-stream'

/** Whether a view's event stream is live. */
export function StreamBadge(props: { state: StreamState }) {
  const { state } = props
  const text = state.kind === 'live' ? 'live' : state.kind === 'connecting' ? 'connecting…' : state.kind === 'retrying' ? `reconnecting (${state.detail})` : `stopped: ${state.detail}`
  return (
    <span class={`badge stream-${state.kind}`} data-testid="stream-state">
      {text}
    </span>
  )
}
