#!/usr/bin/env node
/* global URL, console, process */
// The installed `iothub` command: runs the compiled hub and CLI, which `npm run build` makes in
// dist/ (`npm start` builds first). Without dist/ it says so rather than showing a stack trace.
import { existsSync } from 'node:fs'

const main = new URL('../dist/main.js', import.meta.url)
if (!existsSync(main)) {
  console.error(`iothub: ${main.pathname} is missing: run "npm run build" in ${new URL('..', import.meta.url).pathname} first`)
  process.exit(1)
}
await import(main.href)
