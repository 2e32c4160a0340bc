/** A 400 raised by a handler, answered and counted by the error handler like a schema failure. */
export function badRequest(message: string): Error & { statusCode: number } {
  return Object.assign(new Error(message), { statusCode: 400 })
}
