/** Paging cursors: the last id of the previous page, encoded so clients do not build their own. */
export const encodeCursor = (id: string): string => Buffer.from(id, 'utf8').toString('base64url')

/** The id a cursor stands for, or null when it is not one this API gave out. */
export const decodeCursor = (cursor: string): string | null => {
  const id = Buffer.from(cursor, 'base64url').toString('utf8')
  return id.length > 0 && encodeCursor(id) === cursor ? id : null
}
