/**
 * Overview: `GET /v1/status` every few seconds — sessions by protocol and node, rates, the
 * store, replicas and their lag, the reconcile — and the last hour from `GET /v1/status/history`.
 */
import { useEffect, useState } from 'preact/hooks'
import { api } from '../api/client'
import type { Status, StatusHistory } from '../api/types'
import { HistoryChart } from '../components/chart'
import { ErrorLine, messageOf } from '../components/errors'
import { count, ms, rate, since } from '../format'

const STATUS_EVERY_MS = 3000

/** Calls `load` now and every `everyMs` while the view is shown. */
function usePolled<T>(load: () => Promise<T>, everyMs: number): { value: T | null; error: string | null } {
  const [value, setValue] = useState<T | null>(null)
  const [error, setError] = useState<string | null>(null)
  useEffect(() => {
    let stopped = false
    let timer: ReturnType<typeof setTimeout> | undefined
    const tick = async () => {
      try {
        const v = await load()
        if (stopped) return
        setValue(v)
        setError(null)
      } catch (e) {
        if (!stopped) setError(messageOf(e))
      }
      if (!stopped) timer = setTimeout(() => void tick(), everyMs)
    }
    void tick()
    return () => {
      stopped = true
      clearTimeout(timer)
    }
  }, [])
  return { value, error }
}

function Counts(props: { title: string; values: Record<string, number> }) {
  const entries = Object.entries(props.values)
  return (
    <div class="card">
      <h3>{props.title}</h3>
      {entries.length === 0 && <p class="muted">none connected</p>}
      <dl>
        {entries.map(([name, n]) => (
          <div key={name}>
            <dt>{name}</dt>
            <dd>{count(n)}</dd>
          </div>
        ))}
      </dl>
    </div>
  )
}

function Figure(props: { label: string; value: string; testId: string }) {
  return (
    <div class="figure">
      <span class="value" data-testid={props.testId}>
        {props.value}
      </span>
      <span class="label">{props.label}</span>
    </div>
  )
}

export function Overview() {
  const status = usePolled(() => api<Status>('GET', '/v1/status'), STATUS_EVERY_MS)
  const history = usePolled(() => api<StatusHistory>('GET', '/v1/status/history'), 10_000)
  const s = status.value
  const furthest = Math.max(0, ...(s?.replicas ?? []).map((r) => r.logPosition))

  return (
    <section>
      <h1>
        Overview {s && <span class={`badge ${s.ready ? 'ok' : 'bad'}`}>{s.ready ? 'ready' : 'not ready'}</span>}
      </h1>
      <p class="muted">Counts are the fleet's, refreshed by the hub every 15 s at most; rates are this replica's over the last 10 s.</p>
      <ErrorLine error={status.error} />
      {s && (
        <>
          {s.counts === null && <p class="error">the fleet could not be counted: see the checks below</p>}
          <div class="figures">
            <Figure label="connected sessions" value={count(s.counts?.connected)} testId="connected" />
            <Figure label="sessions" value={count(s.counts?.sessions)} testId="sessions" />
            <Figure label="devices" value={count(s.counts?.devices)} testId="devices" />
            <Figure label="subscription entities" value={count(s.counts?.subscriptions)} testId="subscriptions" />
            <Figure label="lifecycle events/s" value={rate(s.rates.lifecycleEventsPerSecond)} testId="events-rate" />
            <Figure label="pushes/s" value={rate(s.rates.pushesPerSecond)} testId="pushes-rate" />
          </div>
          <div class="card wide">
            <h3>Last hour</h3>
            <ErrorLine error={history.error} />
            <HistoryChart samples={history.value?.samples ?? []} />
          </div>
          <div class="cards">
            <Counts title="Connected by protocol" values={s.counts?.connectedByProtocol ?? {}} />
            <Counts title="Connected by node" values={s.counts?.connectedByNode ?? {}} />
            <div class="card">
              <h3>Store</h3>
              <dl>
                <div>
                  <dt>kind</dt>
                  <dd>{s.store.kind}</dd>
                </div>
                <div>
                  <dt>health</dt>
                  <dd class={s.store.healthy ? 'ok' : 'bad'}>{s.store.healthy ? 'healthy' : 'failing'}</dd>
                </div>
                <div>
                  <dt>commit p50</dt>
                  <dd>{ms(s.store.commitSecondsP50)}</dd>
                </div>
                <div>
                  <dt>commit p99</dt>
                  <dd>{ms(s.store.commitSecondsP99)}</dd>
                </div>
              </dl>
            </div>
            <div class="card">
              <h3>Reconcile</h3>
              {s.reconcile === null ? <p class="muted">none in embedded mode: the hub is the broker</p> : <pre>{JSON.stringify(s.reconcile, null, 2)}</pre>}
            </div>
          </div>
          <div class="card wide">
            <h3>Replicas</h3>
            <table data-testid="replicas">
              <thead>
                <tr>
                  <th>node</th>
                  <th>address</th>
                  <th>state</th>
                  <th>log position</th>
                  <th>lag (entries)</th>
                  <th>last seen</th>
                </tr>
              </thead>
              <tbody>
                {s.replicas.map((r) => (
                  <tr key={r.node}>
                    <td>
                      {r.node}
                      {r.self ? ' (this one)' : ''}
                    </td>
                    <td>{r.address ?? ''}</td>
                    <td class={r.live ? 'ok' : 'bad'}>{r.live ? 'live' : 'gone'}</td>
                    <td>{count(r.logPosition)}</td>
                    <td>{count(furthest - r.logPosition)}</td>
                    <td>{since(r.lastSeen)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
          <div class="card wide">
            <h3>Checks</h3>
            <dl>
              {Object.entries(s.checks).map(([name, check]) => (
                <div key={name}>
                  <dt>{name}</dt>
                  <dd class={check.ok ? 'ok' : 'bad'}>
                    {check.ok ? 'ok' : 'failing'}
                    {check.detail ? ` — ${check.detail}` : ''}
                  </dd>
                </div>
              ))}
            </dl>
          </div>
        </>
      )}
    </section>
  )
}
