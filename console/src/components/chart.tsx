/** The overview's chart (uPlot): connected sessions and lifecycle events/s over the last hour. */
import { useEffect, useRef } from 'preact/hooks'
import uPlot from 'uplot'
import type { StatusSample } from '../api/types'

function dataOf(samples: StatusSample[]): uPlot.AlignedData {
  return [
    samples.map((s) => Date.parse(s.at) / 1000),
    samples.map((s) => s.connected),
    samples.map((s) => s.lifecycleEventsPerSecond),
    samples.map((s) => s.pushesPerSecond)
  ]
}

function options(width: number): uPlot.Options {
  return {
    width,
    height: 260,
    series: [
      {},
      { label: 'connected sessions', stroke: '#2563eb', width: 2, scale: 'sessions' },
      { label: 'lifecycle events/s', stroke: '#16a34a', width: 1.5, scale: 'rate' },
      { label: 'pushes/s', stroke: '#d97706', width: 1.5, scale: 'rate' }
    ],
    scales: { sessions: { range: (_u, _min, max) => [0, Math.max(1, max)] }, rate: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
    axes: [{}, { scale: 'sessions', label: 'sessions' }, { scale: 'rate', side: 1, label: 'per second', grid: { show: false } }]
  }
}

export function HistoryChart(props: { samples: StatusSample[] }) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)

  useEffect(() => {
    const element = box.current!
    plot.current = new uPlot(options(element.clientWidth || 600), dataOf([]), element)
    const resized = new ResizeObserver(() => plot.current?.setSize({ width: element.clientWidth, height: 260 }))
    resized.observe(element)
    return () => {
      resized.disconnect()
      plot.current?.destroy()
      plot.current = null
    }
  }, [])

  useEffect(() => plot.current?.setData(dataOf(props.samples)), [props.samples])

  return <div class="chart" ref={box} data-testid="history-chart" data-samples={props.samples.length} />
}
