/** A modal box over the page: a title, its content, and buttons to close or act. */
import type { ComponentChildren } from 'preact'

export function Dialog(props: { title: string; children: ComponentChildren; onClose: () => void; actions?: ComponentChildren }) {
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-label={props.title}>
        <h2>{props.title}</h2>
        {props.children}
        <div class="actions">
          {props.actions}
          <button type="button" onClick={props.onClose}>
            Close
          </button>
        </div>
      </div>
    </div>
  )
}

/** A device's token, which the hub shows once: at creation and at each rotation. */
export function TokenDialog(props: { deviceId: string; token: string; note?: string; onClose: () => void }) {
  return (
    <Dialog title="Device token" onClose={props.onClose}>
      <p>
        Device <code>{props.deviceId}</code>: its MQTT username is its id, its password this token. <strong>It is shown only now</strong> — the hub
        shows it to no one again; rotate it if it is lost.
      </p>
      <pre class="token" data-testid="token">
        {props.token}
      </pre>
      {props.note && <p>{props.note}</p>}
    </Dialog>
  )
}
