/**
 * The web console in a real browser: Debian's Chromium (`apt-get install chromium`; .ci/run
 * installs it) driven by playwright-core, headless, over a hub started by the test.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { chromium, type Browser, type Page } from 'playwright-core'
import { CONSOLE_DIST } from '../../src/api/console.js'

export const CHROMIUM = process.env.IOTHUB_TEST_CHROMIUM ?? '/usr/bin/chromium'
const CONSOLE_SOURCES = join(CONSOLE_DIST, '..')

/** Why the browser tests cannot run here, or undefined when they can. */
export function browserMissing(): string | undefined {
  return existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is not installed: apt-get install -y chromium (.ci/run does this on CI)`
}

function newestChange(path: string): number {
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.mtimeMs
  return Math.max(stat.mtimeMs, ...readdirSync(path).map((name) => newestChange(join(path, name))))
}

/**
 * Builds console/dist when it is missing or older than its sources (`npm install` builds it;
 * a test after an edit of console/src must not test the build before it).
 */
export function ensureConsoleBuilt(): void {
  const index = join(CONSOLE_DIST, 'index.html')
  const sources = ['src', 'index.html', 'vite.config.ts'].map((name) => newestChange(join(CONSOLE_SOURCES, name)))
  if (existsSync(index) && statSync(index).mtimeMs >= Math.max(...sources)) return
  execFileSync(process.execPath, [join('node_modules', 'vite', 'bin', 'vite.js'), 'build', 'console', '--logLevel', 'warn'], { stdio: 'inherit' })
}

export async function launchBrowser(): Promise<Browser> {
  // as root (CI, this machine) Chromium's sandbox cannot start
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] })
}

/** Logs in through the console's form and waits for the views. */
export async function logIn(page: Page, url: string, user = 'admin', password = 'public'): Promise<void> {
  await page.goto(url)
  await page.getByLabel('User').fill(user)
  await page.getByLabel('Password').fill(password)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.getByRole('link', { name: 'Sessions' }).waitFor()
}
