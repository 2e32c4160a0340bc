/**
 * The OpenAPI document, generated from the route schemas by @fastify/swagger: `GET /openapi.json`,
 * and Swagger UI at `/docs` from @fastify/swagger-ui's bundled files (nothing fetched from a CDN,
 * no validator called). Summaries, descriptions and examples come from one table (route-docs.ts)
 * applied as each route is documented, so route files stay as they are.
 *
 * Both are served without credentials, as EMQX serves its /api-docs: the document holds the
 * routes' shapes and made-up examples, no secrets and no data of the fleet; every route it
 * describes still asks for the API's credentials. Registered before the routes: the document
 * is made of the routes registered after it.
 */
import { PACKAGE_VERSION } from '../../package-version.js'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifyInstance } from 'fastify'
import { documentRoute } from './route-docs.js'

/** Paths served without credentials: the document and the UI with its files. */
export const isOpenApiPath = (route: string): boolean => route === '/openapi.json' || route === '/docs' || route.startsWith('/docs/')


export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'iothub',
        version: PACKAGE_VERSION,
        description:
          'Session, subscription and device entities of an IoT hub over MQTT and CoAP, its change events, and the EMQX v4 and tKeel core compatible routes. ' +
          'Every route but the probes, the metrics, the EMQX WebHook receiver and this document asks for HTTP Basic credentials (IOTHUB_API_USER / IOTHUB_API_PASSWORD), or the Bearer token IOTHUB_API_TOKEN when one is set.'
      },
      components: {
        securitySchemes: {
          basic: { type: 'http', scheme: 'basic' },
          bearer: { type: 'http', scheme: 'bearer' }
        }
      },
      security: [{ basic: [] }, { bearer: [] }]
    },
    transform: documentRoute
  })
  await app.register(swaggerUi, { routePrefix: '/docs' })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
}
