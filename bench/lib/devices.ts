/**
 * Registering bench devices with the hub through its API, as an operator would: `POST
 * /v1/devices` with an array of `{ id }` (at most MAX_DEVICES_PER_REQUEST a request), each
 * answered with its token. Shared by the client-side children that log devices in with their
 * tokens (fanout-fleet.ts, coap-fleet.ts).
 */
import type { Dispatcher } from 'undici'
import { MAX_DEVICES_PER_REQUEST } from '../../src/api/routes/devices.js'

/** HTTP Basic `authorization` header of `user:password`. */
export const basicAuthHeader = (apiAuth: string): string => `Basic ${Buffer.from(apiAuth).toString('base64')}`

/** Registers `ids` through `api` (an undici Pool or Client on the hub's HTTP API); resolves with their tokens, in the order of `ids`. */
export async function registerDevices(api: Dispatcher, apiAuth: string, ids: readonly string[]): Promise<string[]> {
  const tokenOf = new Map<string, string>()
  const authorization = basicAuthHeader(apiAuth)
  for (let from = 0; from < ids.length; from += MAX_DEVICES_PER_REQUEST) {
    const batch = ids.slice(from, from + MAX_DEVICES_PER_REQUEST).map((id) => ({ id }))
    const answer = await api.request({ path: '/v1/devices', method: 'POST', headers: { 'content-type': 'application/json', authorization }, body: JSON.stringify(batch) })
    const text = await answer.body.text()
    if (answer.statusCode !== 201) throw new Error(`POST /v1/devices answered ${answer.statusCode}: ${text.slice(0, 300)}`)
    for (const d of JSON.parse(text) as { id: string; token: string }[]) tokenOf.set(d.id, d.token)
  }
  return ids.map((id) => {
    const token = tokenOf.get(id)
    if (token === undefined) throw new Error(`POST /v1/devices gave no token for ${id}`)
    return token
  })
}
