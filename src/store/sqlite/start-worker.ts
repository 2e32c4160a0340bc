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
 * bundles of a worker's earlier sources are removed once unused for an hour (each start of a thread
 * from a bundle marks it used; a process whose bundle was removed all the same writes it again from
 * what it keeps in memory, never from sources changed since). The bundle carries its source map,
 * and the thread runs with `--enable-source-maps`: its stack traces name the `.ts` sources.
 */
import { createHash } from 'node:crypto'
import { mkdirSync, readdirSync, renameSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs'
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

/** Bundles already made by this process: source path → the bundle's path and code. */
const bundles = new Map<string, { path: string; code: string }>()

interface Esbuild {
  buildSync(options: Record<string, unknown>): { outputFiles: { text: string }[] }
}

function bundled(source: string): string {
  const known = bundles.get(source)
  if (known !== undefined) {
    // this process' sources as it bundled them, even if they changed on disk since
    written(known.path, known.code)
    return known.path
  }
  // three levels above this folder (src/store/sqlite): the project, whose node_modules the bundle's imports resolve from
  const folder = join(dirname(source), '..', '..', '..', 'node_modules', '.cache', 'iothub', 'workers')
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
    // stack traces point into the sources (named relative to the bundle's folder, where the
    // thread resolves them); their text is on disk, not copied into the map
    sourcemap: 'inline',
    sourcesContent: false,
    outdir: folder,
    write: false
  })
  const code = outputFiles[0]!.text
  const name = basename(source, extname(source))
  const path = join(folder, `${name}-${createHash('sha256').update(code).digest('hex').slice(0, 16)}.mjs`)
  written(path, code)
  removeStale(folder, name, path)
  bundles.set(source, { path, code })
  return path
}

/** Makes sure the bundle is at `path`, and marks it used now (removeStale spares it for an hour). */
function written(path: string, code: string): void {
  try {
    const now = new Date()
    utimesSync(path, now, now)
    return
  } catch {
    // not there (yet, or removed): written below
  }
  mkdirSync(dirname(path), { recursive: true })
  // written whole under a name of its own, then renamed: a process beside this one never reads half a file
  const partial = `${path}.${process.pid}.${Date.now()}`
  writeFileSync(partial, code)
  renameSync(partial, path)
}

/** How long a bundle of a worker's earlier sources must have been unused to be removed. */
export const STALE_BUNDLE_MS = 60 * 60 * 1000

/** Removes `name`'s bundles other than `current` (and half-written ones) unused for STALE_BUNDLE_MS. */
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
