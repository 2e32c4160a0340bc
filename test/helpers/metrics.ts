/** Reads a running hub's /metrics as a scraper would. */
import type { ApiCall } from './api-client.js'

/** The value of one sample on /metrics, e.g. `iothub_rejected_inputs_total{reason="bad_topic"}` (0 when absent). */
export async function metricValue(api: ApiCall, sample: string): Promise<number> {
  const text = (await api<string>('GET', '/metrics', undefined, null)).body
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `))
  return line === undefined ? 0 : Number(line.slice(sample.length + 1))
}

/** `iothub_rejected_inputs_total` of one reason. */
export function rejectedCount(api: ApiCall, reason: string): Promise<number> {
  return metricValue(api, `iothub_rejected_inputs_total{reason="${reason}"}`)
}
