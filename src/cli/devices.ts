/**
 * `iothub devices create [--count N] [--owner O]`: registers devices through a running hub's API
 * (the hub keeps devices in memory, so writing its store behind its back would not be seen)
 * and prints one JSON line per device: `{"id":…,"token":…}`.
 */
import { parseArgs } from 'node:util'
import { DEFAULT_API_PASSWORD, DEFAULT_API_USER } from '../config.js'

export const DEVICES_HELP = `usage: iothub devices create [--count N] [--owner O] [--group G] [--api URL]

Creates devices on a running hub and prints {"id","token"} per line.
  --count N    how many (default 1, at most 100000)
  --owner O    owner of the new devices
  --group G    group of the new devices
  --api URL    the hub's HTTP API (default http://127.0.0.1:$IOTHUB_HTTP_PORT, port 8081)
Credentials: IOTHUB_API_USER / IOTHUB_API_PASSWORD (default admin/public).`

const BATCH = 10_000

export async function devicesCommand(argv: readonly string[], out: (line: string) => void = console.log): Promise<number> {
  const [action, ...rest] = argv
  if (action !== 'create') {
    console.error(DEVICES_HELP)
    return 2
  }
  const { values } = parseArgs({
    args: [...rest],
    options: { count: { type: 'string', default: '1' }, owner: { type: 'string' }, group: { type: 'string' }, api: { type: 'string' } },
    strict: true
  })
  const count = Number(values.count)
  if (!Number.isInteger(count) || count < 1 || count > 100_000) {
    console.error(`--count must be a whole number from 1 to 100000, got "${values.count}"`)
    return 2
  }
  const api = values.api ?? `http://127.0.0.1:${process.env.IOTHUB_HTTP_PORT || '8081'}`
  const user = process.env.IOTHUB_API_USER || DEFAULT_API_USER
  const password = process.env.IOTHUB_API_PASSWORD || DEFAULT_API_PASSWORD
  const template = { ...(values.owner ? { owner: values.owner } : {}), ...(values.group ? { group: values.group } : {}) }

  for (let done = 0; done < count; done += BATCH) {
    const body = Array.from({ length: Math.min(BATCH, count - done) }, () => template)
    let response: Response
    try {
      response = await fetch(`${api}/v1/devices`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` },
        body: JSON.stringify(body)
      })
    } catch (error) {
      console.error(`no hub answers at ${api} (${(error as Error).message}); start one with "npm start" or pass --api`)
      return 1
    }
    if (response.status !== 201) {
      console.error(`the hub refused: HTTP ${response.status} ${await response.text()}`)
      return 1
    }
    for (const device of (await response.json()) as { id: string; token: string }[]) {
      out(JSON.stringify({ id: device.id, token: device.token }))
    }
  }
  return 0
}
