/**
 * The hub's own version, from its package.json: the nearest one above this module that is
 * iothub's, wherever the module was compiled to (dist/, or dist-bench/src/ for the benchmarks,
 * or run from src/ by tsx) — a fixed relative path holds for only one of those.
 */
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

function readVersion(): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  for (let dir = here; ; ) {
    const candidate = path.join(dir, 'package.json')
    if (existsSync(candidate)) {
      const pkg = JSON.parse(readFileSync(candidate, 'utf8')) as { name?: string; version?: string }
      if (pkg.name === 'iothub' && typeof pkg.version === 'string') return pkg.version
    }
    const parent = path.dirname(dir)
    if (parent === dir) throw new Error(`iothub's package.json not found above ${here}`)
    dir = parent
  }
}

export const PACKAGE_VERSION = readVersion()
