/** Starts one of this folder's worker threads, from source (tsx) or compiled code alike. */
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'

/** `name`-worker.js when compiled; `name`-worker.ts when run from source (tests, tsx). */
export function startWorker(name: string, workerData: unknown): Worker {
  const extension = extname(fileURLToPath(import.meta.url))
  const url = new URL(`./${name}-worker${extension}`, import.meta.url)
  if (extension === '.js') return new Worker(url, { workerData })
  // On Node 20 a worker thread does not inherit tsx's loader, so it registers it first.
  const bootstrap = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(url.href)}) })`
  return new Worker(bootstrap, { eval: true, workerData })
}
