/** Devices: one page of `GET /v1/devices` with the hub's filters and search; create, edit, rotate, delete. */
import { useState } from 'preact/hooks'
import { api, query } from '../api/client'
import type { Device, Page } from '../api/types'
import { CreateDevice, DeleteDevice, EditDevice, RotateToken, type DeviceDialog } from '../components/device-actions'
import { ErrorLine } from '../components/errors'
import { Pager } from '../components/pager'
import { since } from '../format'
import { usePaged } from '../live/use-paged'
import { deviceHref } from '../routing'

interface Form {
  q: string
  owner: string
  group: string
  connected: string
}

export function Devices() {
  const empty: Form = { q: '', owner: '', group: '', connected: '' }
  const [form, setForm] = useState<Form>(empty)
  const [applied, setApplied] = useState<Form>(empty)
  const [dialog, setDialog] = useState<DeviceDialog>(null)
  const [notice, setNotice] = useState<string | null>(null)
  const paged = usePaged<Device>((cursor) => api<Page<Device>>('GET', `/v1/devices${query({ ...applied, limit: 50, cursor })}`), JSON.stringify(applied))

  const field = (name: keyof Form) => ({
    value: form[name],
    onInput: (e: Event) => setForm({ ...form, [name]: (e.currentTarget as HTMLInputElement).value })
  })
  const close = () => setDialog(null)

  return (
    <section>
      <h1>
        Devices{' '}
        <button type="button" class="primary" onClick={() => setDialog({ kind: 'create' })}>
          New device
        </button>
      </h1>
      <form
        class="filters"
        aria-label="Device filters"
        onSubmit={(e) => {
          e.preventDefault()
          setApplied(form)
        }}
      >
        <input type="search" placeholder="search id or name" aria-label="search" {...field('q')} />
        <input placeholder="owner" aria-label="owner" {...field('owner')} />
        <input placeholder="group" aria-label="group" {...field('group')} />
        <select aria-label="connected" {...field('connected')}>
          <option value="">connected or not</option>
          <option value="true">connected</option>
          <option value="false">not connected</option>
        </select>
        <button type="submit">Search</button>
      </form>
      <ErrorLine error={paged.error} />
      {notice && <p class="notice">{notice}</p>}
      <table data-testid="devices">
        <thead>
          <tr>
            <th>id</th>
            <th>name</th>
            <th>owner</th>
            <th>group</th>
            <th>created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {paged.rows.map((d) => (
            <tr key={d.id} data-device-id={d.id}>
              <td>
                <a href={deviceHref(d.id)}>{d.id}</a>
              </td>
              <td>{d.name}</td>
              <td>{d.owner}</td>
              <td>{d.group}</td>
              <td title={d.createdAt}>{since(d.createdAt)}</td>
              <td class="row-actions">
                <button type="button" onClick={() => setDialog({ kind: 'edit', device: d })}>
                  Edit
                </button>
                <button type="button" onClick={() => setDialog({ kind: 'rotate', id: d.id })}>
                  Rotate token
                </button>
                <button type="button" class="danger" onClick={() => setDialog({ kind: 'delete', id: d.id })}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
          {paged.rows.length === 0 && !paged.loading && (
            <tr>
              <td colSpan={6} class="muted">
                no devices
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager page={paged.pageNumber} hasPrev={paged.hasPrev} hasNext={paged.hasNext} onPrev={paged.prev} onNext={paged.next} shown={paged.rows.length} loading={paged.loading} />
      {dialog?.kind === 'create' && <CreateDevice onClose={close} onCreated={paged.reload} />}
      {dialog?.kind === 'edit' && <EditDevice device={dialog.device} onClose={close} onSaved={paged.reload} />}
      {dialog?.kind === 'rotate' && <RotateToken id={dialog.id} onClose={close} />}
      {dialog?.kind === 'delete' && (
        <DeleteDevice
          id={dialog.id}
          onClose={close}
          onDeleted={(message) => {
            setNotice(message)
            paged.reload()
          }}
        />
      )}
    </section>
  )
}
