/** The native listings' paging (`limit`, the opaque `cursor` from `next`) on the command line, with `--all` to follow it. */
import type { Command } from 'commander'
import { call, query, type Connection } from './connection.js'
import { wholeNumber } from './output.js'

export interface Page<T> {
  data: T[]
  next: string | null
}

export function pagingOptions(command: Command): Command {
  return command
    .option('--limit <n>', 'most items per page (at most 1000)', wholeNumber(1, 1000), 100)
    .option('--cursor <cursor>', 'the page after this cursor (printed after a page with more)')
    .option('--all', 'every page, one after another')
}

/** One page, or with `all` every page from the cursor on, as one. */
export async function listPages<T>(
  connection: Connection,
  path: string,
  filters: Record<string, string | number | boolean | undefined>,
  paging: { limit: number; cursor?: string; all?: boolean }
): Promise<Page<T>> {
  const data: T[] = []
  let cursor = paging.cursor
  for (;;) {
    const page = await call<Page<T>>(connection, 'GET', `${path}${query({ ...filters, limit: paging.limit, cursor })}`)
    data.push(...page.data)
    if (!paging.all || page.next === null) return { data, next: page.next }
    cursor = page.next
  }
}
