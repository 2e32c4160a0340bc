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

/**
 * A publish within a time (a push, published in its device's turn: dispatcher.ts, PUSH_WITHIN_MS, config.ts):
 * its tries end when the time does, however long the client's own timeout — against a server that
 * answers 503 at once, and one that never answers.
 */
describe('EmqxRestClient: a publish within a time', () => {
  let server: Server
  let baseUrl: string
  const seen: string[] = []
  let answer: 'unavailable' | 'never' | 'slowly' = 'unavailable'

  before(async () => {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`)
      req.resume()
      if (answer === 'unavailable') res.writeHead(503).end('busy')
      if (answer === 'slowly') setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"id":"1"}'), 300)
      // 'never': no answer at all; the client's deadline must end it
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  after(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  // the client's own tries: three, of a minute each
  const client = () => new EmqxRestClient({ baseUrl, apiKey: 'k', apiSecret: 's', version: 5, timeoutMs: 60_000, attempts: 3, backoffMs: 10 })
  const message = { topic: 'd/v1/devices/me/attributes', payload: Buffer.from('{}'), qos: 1 as const, retain: false }

  it('is tried again, as the client says, while its time lasts', async () => {
    answer = 'unavailable'
    seen.length = 0
    await assert.rejects(client().publish(message, { withinMs: 20_000 }), (error: unknown) => error instanceof EmqxApiError && error.status === 503)
    assert.equal(seen.length, 3)
  })

  it("takes an answer slower than the client's own timeout, when it comes within its time", async () => {
    answer = 'slowly'
    seen.length = 0
    const impatient = new EmqxRestClient({ baseUrl, apiKey: 'k', apiSecret: 's', version: 5, timeoutMs: 50, attempts: 3, backoffMs: 10 })
    await impatient.publish(message, { withinMs: 20_000 })
    assert.equal(seen.length, 1, 'one try, waited for')
  })

  it("ends with its time, not the client's minute: one try against a server that never answers", async () => {
    answer = 'never'
    seen.length = 0
    const started = Date.now()
    await assert.rejects(client().publish(message, { withinMs: 1000 }), (error: unknown) => error instanceof EmqxApiError && error.status === 0)
    // anything well under the client's minute tells the two apart
    assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`)
    assert.equal(seen.length, 1, 'no second try: the time was spent')
  })
})

/**
 * The client listing asks EMQX 5 for only the fields the hub reads (`fields=`, EMQX 5's
 * comma-separated list); an EMQX that refuses the parameter (400, as for any query parameter it
 * does not know) is asked again without it, and from then on.
 */
describe('EmqxRestClient: the client listing asks for the fields it reads', () => {
  let server: Server
  let baseUrl: string
  const seen: string[] = []
  /** Whether this server plays an EMQX that knows `fields`. */
  let knowsFields = true

  before(async () => {
    server = createServer((req, res) => {
      seen.push(req.url ?? '')
      req.resume()
      const url = new URL(req.url ?? '/', 'http://x')
      if (url.searchParams.has('fields') && !knowsFields) {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'BAD_REQUEST', message: 'unknown query parameter fields' }))
        return
      }
      const row: Record<string, unknown> = { clientid: 'c1', node: 'emqx@n1', username: 'd1', connected: true, connected_at: '2026-12-04T10:00:00.000+00:00', recv_oct: 12, send_oct: 34 }
      const fields = url.searchParams.get('fields')
      const data = fields ? [Object.fromEntries(fields.split(',').filter((f) => f in row).map((f) => [f, row[f]]))] : [row]
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data, meta: { page: 1, limit: 1000, hasnext: false, count: 1 } }))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  after(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  const listAll = async (client: EmqxRestClient) => {
    const clients = []
    for await (const page of client.clients()) clients.push(...page)
    return clients
  }

  it('EMQX 5 is asked for the fields the hub reads, and what it answers is read whole', async () => {
    seen.length = 0
    knowsFields = true
    const [listed] = await listAll(new EmqxRestClient({ baseUrl, apiKey: 'k', apiSecret: 's', version: 5 }))
    const fields = new URL(seen[0]!, 'http://x').searchParams.get('fields')?.split(',') ?? []
    for (const f of ['clientid', 'node', 'username', 'connected', 'connected_at', 'clean_start', 'expiry_interval', 'mountpoint']) assert.ok(fields.includes(f), `asks for ${f}`)
    assert.ok(!fields.includes('recv_oct'), 'not for counters it does not read')
    assert.equal(listed?.client.clientId, 'c1')
    assert.equal(listed?.client.username, 'd1')
    assert.equal(listed?.client.connectedAt, Date.parse('2026-12-04T10:00:00.000Z'))
  })

  it('an EMQX that refuses fields= is asked again without it, and not asked with it again', async () => {
    seen.length = 0
    knowsFields = false
    const client = new EmqxRestClient({ baseUrl, apiKey: 'k', apiSecret: 's', version: 5, attempts: 1 })
    assert.equal((await listAll(client))[0]?.client.clientId, 'c1')
    assert.equal((await listAll(client))[0]?.client.clientId, 'c1')
    assert.deepEqual(
      seen.map((u) => new URL(u, 'http://x').searchParams.has('fields')),
      [true, false, false]
    )
  })

  it('EMQX 4 is not asked for fields (its API has no such parameter)', async () => {
    seen.length = 0
    knowsFields = true
    await listAll(new EmqxRestClient({ baseUrl, apiKey: 'k', apiSecret: 's', version: 4, attempts: 1 }))
    assert.ok(seen.length > 0 && seen.every((u) => u.startsWith('/api/v4/clients?') && !u.includes('fields=')), seen.join(' '))
  })
})
