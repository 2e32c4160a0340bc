/**
 * GET /openapi.json and the Swagger UI at /docs, on a real hub in embedded mode and one in EMQX
 * mode: every route the hub registers (fastify's own list, not the document's) is in the
 * document with a summary and at least one example, operation ids are unique, and /docs serves
 * its page and every file the page loads from the hub itself — no address outside it.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import SwaggerParser from '@apidevtools/swagger-parser'
import type { FastifyInstance } from 'fastify'
import { routeKey } from '../../src/api/openapi/route-docs.js'
import { startTestHub, type TestHub } from '../helpers/hub.js'
import { startEmqxTestHub, type EmqxTestHub } from '../helpers/emqx-hub.js'

interface Media {
  example?: unknown
  examples?: Record<string, unknown>
}
interface Operation {
  summary?: string
  operationId?: string
  requestBody?: { content: Record<string, Media> }
  responses: Record<string, { content?: Record<string, Media> }>
  security?: unknown[]
}
interface Document {
  openapi: string
  info: { version: string }
  paths: Record<string, Record<string, Operation>>
}

/** The hub's fastify instance (private to Hub: read here to list what it registered). */
const apiOf = (hub: object): FastifyInstance => (hub as { api: FastifyInstance }).api

const HTTP_METHODS = ['get', 'post', 'put', 'patch', 'delete']

/** Method and URL of every route fastify holds, but the document's own (hidden) ones. */
function registeredRoutes(app: FastifyInstance): string[] {
  const routes: string[] = []
  // printRoutes' tree: "│   └── /:id (GET, HEAD)", each node's path continuing its parent's
  const tree = app.printRoutes({ commonPrefix: false, includeHooks: false })
  const parents: string[] = []
  for (const line of tree.split('\n')) {
    const match = /^((?:│ {3}| {4})*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (!match) continue
    const depth = match[1]!.length / 4
    const path = (parents[depth - 1] ?? '') + match[2]!
    parents[depth] = path
    for (const method of match[3]?.split(', ') ?? []) {
      if (method === 'HEAD' || method === 'OPTIONS') continue
      routes.push(routeKey(method, path))
    }
  }
  // nor the web console's page and assets (src/api/console.ts: no API; the tree shows /assets/* as /*)
  return routes.filter((r) => !/ \/(docs|openapi\.json)/.test(r) && !/^GET \/\*?$/.test(r))
}

const hasExample = (media: Media | undefined): boolean => media !== undefined && (media.example !== undefined || Object.keys(media.examples ?? {}).length > 0)

function checkDocument(doc: Document, routes: string[]): void {
  assert.equal(doc.openapi, '3.0.3')
  assert.match(doc.info.version, /^\d+\.\d+\.\d+/)
  const documented = new Map<string, Operation>()
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, operation] of Object.entries(item)) {
      if (HTTP_METHODS.includes(method)) documented.set(routeKey(method.toUpperCase(), path), operation)
    }
  }
  assert.ok(routes.length >= 20, `fastify lists ${routes.length} routes`)
  const missing = routes.filter((r) => !documented.has(r))
  assert.deepEqual(missing, [], 'routes the document does not describe')
  for (const route of routes) {
    const op = documented.get(route)!
    assert.ok(op.summary && op.summary.length > 3, `${route} has no summary`)
    const examples = [...Object.values(op.requestBody?.content ?? {}), ...Object.values(op.responses).flatMap((r) => Object.values(r.content ?? {}))].filter(hasExample)
    assert.ok(examples.length > 0, `${route} has no example`)
  }
  const ids = [...documented.values()].map((op) => op.operationId)
  assert.ok(ids.every((id) => typeof id === 'string' && id.length > 0), 'every operation has an id')
  assert.equal(new Set(ids).size, ids.length, 'operation ids are unique')
}

/** Valid OpenAPI 3.0 (against its JSON schema, then its own rules), examples and all. */
async function checkValid(doc: Document): Promise<void> {
  // validate() dereferences in place: it gets a copy
  await SwaggerParser.validate(structuredClone(doc) as never)
}

describe('OpenAPI on an embedded hub', () => {
  let hub: TestHub
  before(async () => {
    hub = await startTestHub()
  })
  after(() => hub.stop())

  it('describes every route the hub registers, with a summary and an example', async () => {
    const response = await fetch(`${hub.httpUrl}/openapi.json`)
    assert.equal(response.status, 200, 'served without credentials')
    assert.match(response.headers.get('content-type') ?? '', /application\/json/)
    const doc = (await response.json()) as Document
    await checkValid(doc)
    checkDocument(doc, registeredRoutes(apiOf(hub.hub)))
    // the routes keep their credentials: the probes are open, the rest asks for Basic or Bearer
    assert.deepEqual(doc.paths['/healthz']!.get!.security, [])
    assert.equal(doc.paths['/v1/sessions']!.get!.security, undefined)
    assert.equal((await hub.api('GET', '/v1/sessions', undefined, null)).status, 401)
  })

  it('serves Swagger UI at /docs, every file of it from the hub, nothing from elsewhere', async () => {
    // /docs and /docs/ write the page's links each their own way: both resolve on the hub
    for (const path of ['/docs', '/docs/']) {
      const page = await fetch(`${hub.httpUrl}${path}`)
      assert.equal(page.status, 200, path)
      assert.match(page.headers.get('content-type') ?? '', /text\/html/)
      const html = await page.text()
      const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
      assert.ok(assets.some((a) => a.endsWith('swagger-ui-bundle.js')), html)
      for (const asset of assets) {
        assert.doesNotMatch(asset, /^(https?:)?\/\//, `${asset} would be fetched from outside the hub`)
        const file = await fetch(new URL(asset, `${hub.httpUrl}${path}`))
        assert.equal(file.status, 200, `${path}: ${asset}`)
        assert.ok((await file.text()).length > 0, asset)
      }
    }
    // the page's script loads the document from the hub, and asks no validator elsewhere
    const initializer = await (await fetch(`${hub.httpUrl}/docs/static/swagger-initializer.js`)).text()
    assert.match(initializer, /resolveUrl\('\.\/json'\)/)
    assert.match(initializer, /validatorUrl: null/)
    const json = await fetch(`${hub.httpUrl}/docs/json`)
    assert.equal(json.status, 200)
  })
})

describe('OpenAPI on a hub in EMQX mode', () => {
  let t: EmqxTestHub
  before(async () => {
    t = await startEmqxTestHub({ version: 4 })
  })
  after(() => t.stop())

  it("describes every route, the WebHook receiver's and the reconcile's too", async () => {
    const doc = (await (await fetch(`${t.httpUrl}/openapi.json`)).json()) as Document
    const routes = registeredRoutes(apiOf(t.hub))
    assert.ok(routes.includes('POST /v1/hooks/emqx') && routes.includes('POST /v1/reconcile'))
    await checkValid(doc)
    checkDocument(doc, routes)
    assert.deepEqual(doc.paths['/v1/hooks/emqx']!.post!.security, [])
  })
})
