/**
 * The parser of `application/json` bodies: fastify's own (which refuses `__proto__` keys), after
 * a look at how deeply the text nests. A body nested past `IOTHUB_MAX_JSON_DEPTH` is refused
 * with 400 before it is parsed: routes walk what they get recursively (validation, storing,
 * pushing), and a body thousands of levels deep would overflow the stack there.
 */
import type { FastifyInstance } from 'fastify'
import { nestsDeeperThan } from '../domain/bounded-json.js'
import { badRequest } from './bad-request.js'

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The text a JSON body was parsed from (without a byte order mark): a route that passes the
     * body on as JSON sends this rather than serializing what was parsed from it again.
     */
    jsonText: string | undefined
  }
}

export function parseJsonBodiesWithin(app: FastifyInstance, maxDepth: number): void {
  const parse = app.getDefaultJsonParser('error', 'ignore')
  app.decorateRequest('jsonText', undefined)
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = body as string
    if (nestsDeeperThan(text, maxDepth)) return done(badRequest(`body is JSON nested more than ${maxDepth} levels deep`), undefined)
    // the parser drops a byte order mark too; a body that does not parse is refused, text and all
    request.jsonText = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text
    void parse(request, text, done)
  })
}
