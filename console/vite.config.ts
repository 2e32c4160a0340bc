// The console is built into console/dist (by `npm run build:console`, which `npm install` runs)
// and served by the hub at `/` (src/api/console.ts), its assets under /assets/.
import { defineConfig } from 'vite'

export default defineConfig({
  // the hub serves index.html at `/` and the hashed files at /assets/
  base: '/',
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // one small app: a single script and style sheet, no preload helper fetching chunks
    modulePreload: false,
    chunkSizeWarningLimit: 200,
    sourcemap: false
  }
})
