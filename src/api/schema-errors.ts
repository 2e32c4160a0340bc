/**
 * Turns Ajv's validation errors into one message that names what is wrong: the field, and for
 * unknown fields their name (Ajv knows it; fastify's default message drops it). When a body may
 * be one thing or another (a device or an array of devices), the errors of the branch that
 * does not fit its type are left out — they only say "must be array" about an object.
 */
import type { FastifySchemaValidationError } from 'fastify/types/schema.js'

const BRANCH_TYPE_MISMATCH = /^#\/oneOf\/\d+\/type$/

export function formatSchemaErrors(errors: FastifySchemaValidationError[], dataVar: string): Error {
  const specific = errors.filter((e) => e.keyword !== 'oneOf' && !BRANCH_TYPE_MISMATCH.test(e.schemaPath))
  const chosen = specific.length > 0 ? specific : errors.filter((e) => e.keyword !== 'oneOf')
  const message = (chosen.length > 0 ? chosen : errors).map((e) => describe(e, dataVar)).join('; ')
  return new Error(message)
}

function describe(error: FastifySchemaValidationError, dataVar: string): string {
  const where = `${dataVar}${error.instancePath}`
  const unknown = (error.params as { additionalProperty?: string }).additionalProperty
  if (unknown !== undefined) return `${where} has an unknown field "${unknown}"`
  return `${where} ${error.message ?? 'is invalid'}`
}
