/**
 * Paging of the native list routes (`GET /v1/sessions`, `GET /v1/subscriptions`): `limit`, and
 * an opaque `cursor` — the last id of the previous page, encoded so clients do not build their
 * own — answered as `{ data, next }`.
 */
import { badRequest } from './bad-request.js'

const encodeCursor = (id: string): string => Buffer.from(id, 'utf8').toString('base64url')

/** The id a cursor stands for, or null when it is not one this API gave out. */
const decodeCursor = (cursor: string): string | null => {
  const id = Buffer.from(cursor, 'base64url').toString('utf8')
  return id.length > 0 && encodeCursor(id) === cursor ? id : null
}

/** The querystring schema of a list route: its own filters, then `limit` and `cursor`. */
export function pagedQuerySchema<F extends Record<string, object>>(filters: F) {
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...filters,
      limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
      cursor: { type: 'string', minLength: 1, maxLength: 4096 }
    }
  } as const
}

/** The 200 answer's schema: `{ data: [item], next }`. */
export function pageSchema<S extends object>(item: S) {
  return {
    type: 'object',
    required: ['data', 'next'],
    properties: { data: { type: 'array', items: item }, next: { type: ['string', 'null'] } }
  } as const
}

/** The id to list after, from the request's cursor (a 400 when it is not one of ours). */
export function afterCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined
  const after = decodeCursor(cursor)
  if (after === null) throw badRequest('querystring/cursor is not a cursor this API gave out')
  return after
}

/** The answer: the page's items and, when more follow, the cursor to the next page. */
export function page<T, R>(items: T[], more: boolean, idOf: (item: T) => string, render: (item: T) => R): { data: R[]; next: string | null } {
  const last = items.at(-1)
  return { data: items.map(render), next: more && last ? encodeCursor(idOf(last)) : null }
}
