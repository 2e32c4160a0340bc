/**
 * Databases of their own for tests, on the machine's PostgreSQL (127.0.0.1:5432, trust auth;
 * IOTHUB_TEST_DATABASE_URL names another server): each named by its prefix, the process id and a
 * counter, so test files running at once never share rows, and dropped (connections and all)
 * when the test is done.
 */
import pg from 'pg'

export const TEST_SERVER = process.env.IOTHUB_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

export interface TestDatabase {
  readonly name: string
  readonly url: string
  /** One query on this database (a connection per call: the hubs' pools stay undisturbed). */
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>
  drop(): Promise<void>
}

let databases = 0

/** Creates `<prefix>_<pid>_<n>`. */
export async function createDatabase(prefix: string): Promise<TestDatabase> {
  const name = `${prefix}_${process.pid}_${++databases}`
  await onServer(`CREATE DATABASE ${name}`)
  const url = databaseUrl(name)
  return {
    name,
    url,
    async query<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []) {
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      try {
        return (await client.query<R>(sql, params)).rows
      } finally {
        await client.end()
      }
    },
    drop: () => onServer(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  }
}

/** The connection string of database `name` on the test server. */
export function databaseUrl(name: string): string {
  const url = new URL(TEST_SERVER)
  url.pathname = `/${name}`
  return url.toString()
}

/** Runs one statement on the test server's own database (CREATE/DROP DATABASE, say). */
export async function onServer(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_SERVER })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}
