/**
 * EmqxRestClient against a real HTTP server that answers a status and then stalls in the middle
 * of its body (a listing page cut off on its way): the request's timeout covers the body, a read
 * is asked again, and a change (a publish) is not — it may have been made already.
 */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { EmqxApiError, EmqxRestClient } from '../../src/emqx/emqx-rest.js'

describe('EmqxRestClient: a body that stalls after the status', () => {
  let server: Server
  let baseUrl: string
  /** Requests seen, by method and path. */
  const seen: string[] = []
  /** How many of the next requests stall mid-body. */
  let stalls = 0

  before(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`)
      req.resume()
      const body = JSON.stringify({ data: [{ clientid: 'c1', node: 'emqx@n1', connected: true }], meta: { page: 1, limit: 1000, hasnext: false, count: 1 } })
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length) })
      if (stalls > 0) {
        stalls--
        res.write(body.slice(0, 10)) // and nothing more: the client's timeout must end it
        return
      }
      res.end(body)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  after(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  const client = () => new EmqxRestClient({ baseUrl, apiKey: 'k', apiSecret: 's', version: 5, timeoutMs: 300, attempts: 3, backoffMs: 10 })

  it('a listing page whose body stalls is read again, and the run goes on', async () => {
    seen.length = 0
    stalls = 1
    const pages: string[][] = []
    for await (const page of client().clients()) pages.push(page.map((c) => c.client.clientId))
    assert.deepEqual(pages, [['c1']])
    assert.equal(seen.filter((s) => s.startsWith('GET /api/v5/clients?')).length, 2, 'asked twice: the stalled answer, then a whole one')
  })

  it('a read whose body stalls every time fails clearly after its attempts', async () => {
    seen.length = 0
    stalls = 3
    await assert.rejects(
      async () => {
        for await (const page of client().clients()) void page
      },
      (error: unknown) => error instanceof EmqxApiError && /body could not be read/.test(error.message)
    )
    assert.equal(seen.length, 3)
  })

  it('a publish whose answer stalls is not sent again: EMQX may have published it', async () => {
    seen.length = 0
    stalls = 1
    await assert.rejects(
      client().publish({ topic: 'd/v1/devices/me/attributes', payload: Buffer.from('{}'), qos: 1, retain: false }),
      (error: unknown) => error instanceof EmqxApiError && /body could not be read/.test(error.message)
    )
    assert.deepEqual(seen, ['POST /api/v5/publish'])
    stalls = 0
  })
})
