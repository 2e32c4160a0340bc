/**
 * What can be done to a device, in dialogs: create (its token shown once), edit, rotate its
 * token (the new one shown once), delete.
 */
import { useState } from 'preact/hooks'
import { api } from '../api/client'
import type { Device } from '../api/types'
import { Dialog, TokenDialog } from './dialog'
import { ErrorLine, messageOf } from './errors'

/** A JSON object typed in a box, or the reason it is not one. */
export function parseObject(text: string, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (e) {
    throw new Error(`${what} is not JSON: ${messageOf(e)}`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${what} must be a JSON object`)
  return value as Record<string, unknown>
}

interface Fields {
  id: string
  name: string
  owner: string
  group: string
  desc: string
  ext: string
}

function DeviceFields(props: { fields: Fields; set: (f: Fields) => void; creating: boolean }) {
  const input = (name: keyof Fields, label: string, hint?: string) => (
    <label>
      {label}
      <input name={name} value={props.fields[name]} placeholder={hint} onInput={(e) => props.set({ ...props.fields, [name]: e.currentTarget.value })} />
    </label>
  )
  return (
    <div class="form">
      {props.creating && input('id', 'Id', 'made by the hub when empty')}
      {input('name', 'Name')}
      {props.creating && input('owner', 'Owner')}
      {input('group', 'Group')}
      {input('desc', 'Description')}
      <label>
        Ext (JSON object)
        <textarea name="ext" rows={3} value={props.fields.ext} onInput={(e) => props.set({ ...props.fields, ext: e.currentTarget.value })} />
      </label>
    </div>
  )
}

export function CreateDevice(props: { onClose: () => void; onCreated: (id: string) => void }) {
  const [fields, setFields] = useState<Fields>({ id: '', name: '', owner: '', group: '', desc: '', ext: '{}' })
  const [error, setError] = useState<string | null>(null)
  const [created, setCreated] = useState<{ id: string; token: string } | null>(null)

  if (created) return <TokenDialog deviceId={created.id} token={created.token} onClose={props.onClose} />
  const create = async () => {
    try {
      const ext = parseObject(fields.ext, 'ext')
      const body = Object.fromEntries(Object.entries({ id: fields.id, name: fields.name, owner: fields.owner, group: fields.group, desc: fields.desc }).filter(([, v]) => v !== ''))
      const device = await api<{ id: string; token: string }>('POST', '/v1/devices', { ...body, ext })
      setCreated(device)
      props.onCreated(device.id)
    } catch (e) {
      setError(messageOf(e))
    }
  }
  return (
    <Dialog
      title="New device"
      onClose={props.onClose}
      actions={
        <button type="button" class="primary" onClick={() => void create()}>
          Create
        </button>
      }
    >
      <DeviceFields fields={fields} set={setFields} creating />
      <ErrorLine error={error} />
    </Dialog>
  )
}

export function EditDevice(props: { device: Device; onClose: () => void; onSaved: () => void }) {
  const d = props.device
  const [fields, setFields] = useState<Fields>({ id: d.id, name: d.name, owner: d.owner, group: d.group, desc: d.desc, ext: JSON.stringify(d.ext ?? {}, null, 2) })
  const [error, setError] = useState<string | null>(null)
  const save = async () => {
    try {
      const ext = parseObject(fields.ext, 'ext')
      await api('PATCH', `/v1/devices/${encodeURIComponent(d.id)}`, { name: fields.name, group: fields.group, desc: fields.desc, ext })
      props.onSaved()
      props.onClose()
    } catch (e) {
      setError(messageOf(e))
    }
  }
  return (
    <Dialog
      title={`Edit ${d.id}`}
      onClose={props.onClose}
      actions={
        <button type="button" class="primary" onClick={() => void save()}>
          Save
        </button>
      }
    >
      <DeviceFields fields={fields} set={setFields} creating={false} />
      <ErrorLine error={error} />
    </Dialog>
  )
}

export function RotateToken(props: { id: string; onClose: () => void }) {
  const [kick, setKick] = useState(true)
  const [error, setError] = useState<string | null>(null)
  const [rotated, setRotated] = useState<{ token: string; kicked: number } | null>(null)
  if (rotated) return <TokenDialog deviceId={props.id} token={rotated.token} note={`${rotated.kicked} session(s) kicked.`} onClose={props.onClose} />
  const rotate = async () => {
    try {
      setRotated(await api<{ token: string; kicked: number }>('POST', `/v1/devices/${encodeURIComponent(props.id)}/token?kick=${kick}`))
    } catch (e) {
      setError(messageOf(e))
    }
  }
  return (
    <Dialog
      title={`Rotate the token of ${props.id}`}
      onClose={props.onClose}
      actions={
        <button type="button" class="danger" onClick={() => void rotate()}>
          Rotate
        </button>
      }
    >
      <p>The old token is refused for new connections at once.</p>
      <label class="check">
        <input type="checkbox" name="kick" checked={kick} onInput={(e) => setKick(e.currentTarget.checked)} />
        also kick its connected sessions
      </label>
      <ErrorLine error={error} />
    </Dialog>
  )
}

export function DeleteDevice(props: { id: string; onClose: () => void; onDeleted: (message: string) => void }) {
  const [error, setError] = useState<string | null>(null)
  const remove = async () => {
    try {
      const r = await api<{ sessionsEnded: number; subscriptionsDeleted: number }>('DELETE', `/v1/devices/${encodeURIComponent(props.id)}`)
      props.onDeleted(`deleted ${props.id}: ${r.sessionsEnded} session(s) ended, ${r.subscriptionsDeleted} subscription entit${r.subscriptionsDeleted === 1 ? 'y' : 'ies'} deleted`)
      props.onClose()
    } catch (e) {
      setError(messageOf(e))
    }
  }
  return (
    <Dialog
      title={`Delete ${props.id}?`}
      onClose={props.onClose}
      actions={
        <button type="button" class="danger" onClick={() => void remove()}>
          Delete
        </button>
      }
    >
      <p>Its sessions are kicked and ended, its subscription entities deleted, and its token refused from then on.</p>
      <ErrorLine error={error} />
    </Dialog>
  )
}

/** Which dialog a device view has open. */
export type DeviceDialog = { kind: 'edit'; device: Device } | { kind: 'rotate'; id: string } | { kind: 'delete'; id: string } | { kind: 'create' } | null
