/**
 * Starts one of this folder's worker threads, from compiled code or from source alike.
 *
 * Compiled (`npm start`), a worker is its `.js` file. Run from source (the tests, `tsx`), a worker
 * thread does not inherit tsx's loader on Node 20 — it has to register it again, on top of the
 * `--import tsx` it does inherit — and opening a SQLite store (two or three such threads) took
 * ~380 ms on an idle machine that way, 0.5–0.8 s per thread under a test run's load. So from
 * source a worker runs as one JavaScript file that esbuild (what tsx itself compiles with) bundles
 * from its sources, once per process and worker, without the process' node flags: a store opens
 * in ~80 ms. The bundle is written under `node_modules/.cache/iothub/workers/`, named by its
 * content, so processes running side by side share it and a changed source gets a file of its own;
 * bundles of a worker's earlier sources are removed once they are an hour old (a process started
 * before the change may still be starting threads from its own). The bundle carries its source
 * map, and the thread runs with `--enable-source-maps`: its stack traces name the `.ts` sources.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { basename, dirname, extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

/** `name`-worker.js when compiled; a bundle of `name`-worker.ts when run from source. */
export function startWorker(name: string, workerData: unknown): Worker {
  const here = fileURLToPath(import.meta.url)
  const extension = extname(here)
  if (extension === '.js') return new Worker(new URL(`./${name}-worker.js`, import.meta.url), { workerData })
  // the bundle is plain JavaScript: the process' `--import tsx` would only slow the thread's start
  return new Worker(bundled(join(dirname(here), `${name}-worker${extension}`)), { workerData, execArgv: ['--enable-source-maps'] })
}

/** Bundles already made by this process: source path → bundle path. */
const bundles = new Map<string, string>()

interface Esbuild {
  buildSync(options: Record<string, unknown>): { outputFiles: { text: string }[] }
}

function bundled(source: string): string {
  const known = bundles.get(source)
  if (known !== undefined) return known
  // a development dependency, needed only here: compiled code never comes this way
  const esbuild = createRequire(import.meta.url)('esbuild') as Esbuild
  const { outputFiles } = esbuild.buildSync({
    entryPoints: [source],
    bundle: true,
    // packages (better-sqlite3, pino, …) are loaded as they are, from the project's node_modules
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // stack traces point into the sources; their text is on disk, not copied into the map
    sourcemap: 'inline',
    sourcesContent: false,
    write: false
  })
  const code = outputFiles[0]!.text
  // three levels above this folder (src/store/sqlite): the project, whose node_modules the bundle's imports resolve from
  const folder = join(dirname(source), '..', '..', '..', 'node_modules', '.cache', 'iothub', 'workers')
  const name = basename(source, extname(source))
  const path = join(folder, `${name}-${createHash('sha256').update(code).digest('hex').slice(0, 16)}.mjs`)
  if (!existsSync(path)) {
    mkdirSync(folder, { recursive: true })
    // written whole under a name of its own, then renamed: a process beside this one never reads half a file
    const partial = `${path}.${process.pid}.${Date.now()}`
    writeFileSync(partial, code)
    renameSync(partial, path)
  }
  removeStale(folder, name, path)
  bundles.set(source, path)
  return path
}

/** How old a bundle of a worker's earlier sources must be to be removed. */
export const STALE_BUNDLE_MS = 60 * 60 * 1000

/** Removes `name`'s bundles other than `current` (and half-written ones) older than STALE_BUNDLE_MS. */
function removeStale(folder: string, name: string, current: string): void {
  const mine = new RegExp(`^${name}-[0-9a-f]{16}\\.mjs(\\.\\d+\\.\\d+)?$`)
  const before = Date.now() - STALE_BUNDLE_MS
  for (const file of readdirSync(folder)) {
    const path = join(folder, file)
    if (path === current || !mine.test(file)) continue
    try {
      if (statSync(path).mtimeMs < before) unlinkSync(path)
    } catch {
      // removed meanwhile by a process beside this one
    }
  }
}
