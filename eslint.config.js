// Lint is part of `npm test`: type-aware rules catch floating promises, which in a hub whose
// every event must be acknowledged only once durable would be silent data-loss bugs.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

/**
 * The direction of imports inside src/ (docs/ARCHITECTURE.md, "layers"): each folder may import
 * only the folders below it, so the layering cannot rot. From the bottom:
 *   domain ← store ← config, observability, tls, replicas ← registry ← devices, admission ← carrier
 *   ← embedded, emqx (the adapters: neither imports the other) ← api (with events) ← hub, cli, main.
 * Written as the folders (or root files) each layer must not import: a relative import naming
 * one of them is an error.
 */
const above = {
  domain: ['store', 'config', 'observability', 'tls', 'replicas', 'registry', 'devices', 'admission', 'carrier', 'embedded', 'emqx', 'events', 'api', 'hub', 'cli'],
  store: ['config', 'observability', 'tls', 'replicas', 'registry', 'devices', 'admission', 'carrier', 'embedded', 'emqx', 'events', 'api', 'hub', 'cli'],
  base: ['registry', 'devices', 'admission', 'carrier', 'embedded', 'emqx', 'events', 'api', 'hub', 'cli'],
  registry: ['devices', 'admission', 'carrier', 'embedded', 'emqx', 'events', 'api', 'hub', 'cli'],
  devices: ['carrier', 'embedded', 'emqx', 'events', 'api', 'hub', 'cli'],
  carrier: ['embedded', 'emqx', 'events', 'api', 'hub', 'cli'],
  embedded: ['emqx', 'events', 'api', 'hub', 'cli'],
  emqx: ['embedded', 'events', 'api', 'hub', 'cli'],
  api: ['embedded', 'emqx', 'hub', 'cli']
}
const layerFiles = {
  domain: ['src/domain/**', 'src/types/**'],
  store: ['src/store/**'],
  base: ['src/config.ts', 'src/port-in-use.ts', 'src/observability/**', 'src/tls/**', 'src/replicas/**'],
  registry: ['src/registry/**'],
  devices: ['src/devices/**', 'src/admission/**'],
  carrier: ['src/carrier/**'],
  embedded: ['src/embedded/**'],
  emqx: ['src/emqx/**'],
  // the event stream renders entities as the API does, and the API serves it: one layer
  api: ['src/api/**', 'src/events/**']
}
/** `../config.js`, `../../emqx/x.js`: a relative import whose path names the folder or root file. */
const naming = (names) => `^\\.{1,2}/(?:\\.\\./)*(?:${names.map((n) => `${n}/|${n}\\.js$`).join('|')})`
const importDirection = Object.entries(layerFiles).map(([layer, files]) => ({
  files,
  rules: {
    'no-restricted-imports': [
      'error',
      { patterns: [{ regex: naming(above[layer]), message: `${layer} must not import a layer above it (see the layers in eslint.config.js)` }] }
    ]
  }
}))

export default tseslint.config(
  { ignores: ['dist/**', 'dist-bench/**', 'data/**', 'node_modules/**', 'console/dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname }
    },
    rules: {
      // node:test's describe/it return promises the runner itself awaits
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] }] }
      ],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/require-await': 'off'
    }
  },
  ...importDirection,
  {
    files: ['bin/*.js', 'eslint.config.js'],
    ...tseslint.configs.disableTypeChecked
  }
)
