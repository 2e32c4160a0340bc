/**
 * Takes the README's picture of the web console (docs/console.png), run by hand:
 *
 *     npm run build:console && node --import tsx scripts/console-screenshot.ts
 *
 * Starts a hub of its own (temporary data, ports the OS picks), gives it a few devices and
 * MQTT sessions that connect in waves and get attribute pushes for about 40 s — so the chart
 * of the last hour has a few samples (one per 10 s) — then logs in to the console in Debian's
 * Chromium and saves the overview.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { chromium } from 'playwright-core'
import { loadConfig } from '../src/config.js'
import { Hub } from '../src/hub.js'
import { createLogger } from '../src/observability/logger.js'

const OUT = join(import.meta.dirname, '..', 'docs', 'console.png')
const CHROMIUM = process.env.IOTHUB_TEST_CHROMIUM ?? '/usr/bin/chromium'
const WAVES = 4
const SAMPLE_MS = 10_000

const dataDir = mkdtempSync(join(tmpdir(), 'iothub-screenshot-'))
const config = loadConfig({}, [], { dataDir, mqttHost: '127.0.0.1', mqttPort: 0, httpPort: 0, coapHost: '127.0.0.1', coapPort: 0, node: 'iothub@demo', logLevel: 'warn' })
const hub = await Hub.open(config, { log: createLogger(config.logLevel) })
const { mqtt: mqttAddress, http } = await hub.start()
const api = `http://127.0.0.1:${http.port}`
const authorization = `Basic ${Buffer.from(`${config.apiUser}:${config.apiPassword}`).toString('base64')}`

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await fetch(`${api}${path}`, { method, headers: { authorization, 'content-type': 'application/json' }, body: JSON.stringify(body) })
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
  return (await response.json()) as T
}

const kinds = ['thermostat', 'door-sensor', 'meter', 'pump']
const devices = await call<{ id: string; token: string }[]>(
  'POST',
  '/v1/devices',
  Array.from({ length: 12 }, (_, i) => ({ id: `${kinds[i % kinds.length]}-${String(i + 1).padStart(2, '0')}`, name: `${kinds[i % kinds.length]} ${i + 1}`, owner: i < 8 ? 'alice' : 'bob', group: i % 2 ? 'floor-1' : 'floor-2' }))
)

const clients: MqttClient[] = []
async function connectWave(wave: number): Promise<void> {
  for (const [i, d] of devices.entries()) {
    if ((i + wave) % 2 && wave > 0) continue
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttAddress!.port}`, { clientId: `${d.id}-w${wave}`, username: d.id, password: d.token, reconnectPeriod: 0, protocolVersion: 4 })
    await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ temperature: 20 + i / 2 }), { qos: 1 })
    clients.push(client)
  }
}

for (let wave = 0; wave < WAVES; wave++) {
  await connectWave(wave)
  for (const d of devices.slice(0, 6)) await call('PATCH', `/v1/devices/${d.id}/attributes`, { setpoint: 18 + wave })
  // the last wave's first clients leave again: the chart shows both ways
  if (wave === WAVES - 1) for (const c of clients.splice(0, 5)) await c.endAsync()
  await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS))
}

// still busy while the picture is taken: the rates are the last 10 s
let tick = 0
const busy = setInterval(() => void call('PATCH', `/v1/devices/${devices[tick++ % 6]!.id}/attributes`, { tick }).catch(() => undefined), 200)
await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS))

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] })
const page = await browser.newPage({ viewport: { width: 1280, height: 1000 }, deviceScaleFactor: 1 })
await page.goto(api)
await page.getByLabel('User').fill(config.apiUser)
await page.getByLabel('Password').fill(config.apiPassword)
await page.getByRole('button', { name: 'Log in' }).click()
await page.locator('[data-testid="history-chart"][data-samples]:not([data-samples="0"]) canvas').waitFor({ timeout: 20_000 })
await page.locator('[data-testid="replicas"] tr', { hasText: 'iothub@demo' }).waitFor()
await page.screenshot({ path: OUT, fullPage: true })
console.log(`saved ${OUT}`)

clearInterval(busy)
await browser.close()
await Promise.all(clients.map((c) => c.endAsync(true)))
await hub.stop()
rmSync(dataDir, { recursive: true, force: true })
