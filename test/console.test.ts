/**
 * The web console (issue 15 item 4) in a real browser against a real hub: logging in (and not
 * with a wrong password), the overview's figures and chart, sessions appearing live and kicked,
 * devices created (token shown once), edited, rotated and deleted, an attribute pushed from a
 * device's page to a subscribed mqtt.js client, the events tail, and pages asked for one at a
 * time. Every wait is on the page's state or a client's event, none on time.
 */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Browser, Page } from 'playwright-core'
import type { MqttClient } from 'mqtt'
import { browserMissing, ensureConsoleBuilt, launchBrowser, logIn } from './helpers/console-browser.js'
import { connectClient, startTestHub, type TestHub } from './helpers/hub.js'

/** Room for a busy 2-core machine; a page that is right is right well within it. */
const WAIT = { timeout: 20_000 }

/** `promise`, or a failure naming `what` once WAIT has passed. */
function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT.timeout} ms`)), WAIT.timeout)))
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}
/** Resolves when the broker closes the client's connection. */
const closeOf = (client: MqttClient) => within(new Promise<void>((resolve) => client.once('close', () => resolve())), 'close of the connection')
const messageOf = (client: MqttClient) => within(new Promise<[string, Buffer]>((resolve) => client.once('message', (topic, payload) => resolve([topic, payload]))), 'message')

const missing = browserMissing()
const onCi = Boolean(process.env.CI) && process.env.CI !== 'false'

if (missing !== undefined && onCi) {
  it('Chromium is installed (the console tests need it on CI)', () => assert.fail(`${missing}. .ci/run must install it before the tests run.`))
} else {
  describe('web console in Chromium', { skip: missing }, () => {
    let t: TestHub
    let browser: Browser
    let page: Page
    /** Every API call the console made, to check what it asks for. */
    const requests: { method: string; url: URL }[] = []

    before(async () => {
      ensureConsoleBuilt()
      // the paging test holds 30 sessions of one device
      t = await startTestHub({ maxSessionsPerDevice: 50 })
      browser = await launchBrowser()
    })
    after(async () => {
      await browser?.close()
      await t?.stop()
    })

    const open = async (hash: string) => {
      await page.evaluate((h) => (location.hash = h), hash)
    }
    const row = (table: string, attribute: string, value: string) => page.locator(`[data-testid="${table}"] tr[${attribute}="${value}"]`)

    it('keeps a wrong password on the login form, with the hub’s refusal and no browser prompt', async () => {
      const context = await browser.newContext()
      const p = await context.newPage()
      await p.goto(t.httpUrl)
      await p.getByLabel('User').fill('admin')
      await p.getByLabel('Password').fill('not-the-password')
      const refused = p.waitForResponse((r) => r.url().endsWith('/v1/replicas'))
      await p.getByRole('button', { name: 'Log in' }).click()
      const answer = await refused
      assert.equal(answer.status(), 401)
      // the challenge would open the browser's own password prompt over the form
      assert.equal(answer.headers()['www-authenticate'], undefined)
      await p.getByRole('alert').waitFor(WAIT)
      assert.equal(await p.getByRole('form', { name: 'Log in' }).isVisible(), true)
      assert.equal(await p.getByRole('link', { name: 'Sessions' }).count(), 0)
      assert.equal(await p.evaluate(() => sessionStorage.length), 0)
      await context.close()
    })

    it('logs in and shows the overview: the fleet’s figures, replicas and the last hour’s chart', async () => {
      const context = await browser.newContext()
      page = await context.newPage()
      page.on('request', (r) => {
        const url = new URL(r.url())
        if (url.pathname.startsWith('/v1/')) requests.push({ method: r.method(), url })
      })
      await logIn(page, t.httpUrl)
      const device = await t.createDevice({ owner: 'ann' })
      const client = await t.connect({ clientId: 'overview-1', username: device.id, password: device.token })
      // counts are refreshed by the hub every 15 s at most
      await page.locator('[data-testid="connected"]', { hasText: /^1$/ }).waitFor(WAIT)
      await page.locator('[data-testid="devices"]', { hasText: /^1$/ }).waitFor(WAIT)
      await page.locator('[data-testid="replicas"] tr', { hasText: 'iothub@test' }).waitFor(WAIT)
      await page.locator('[data-testid="history-chart"] canvas').waitFor(WAIT)
      await page.getByText('none in embedded mode').waitFor(WAIT)
      await client.endAsync()
    })

    it('shows a session that connects without a reload, and kicks it', async () => {
      await open('#/sessions')
      await page.locator('[data-testid="stream-state"]', { hasText: 'live' }).waitFor(WAIT)
      let loads = 0
      page.on('load', () => loads++)
      const device = await t.createDevice({ owner: 'bob' })
      const client = await t.connect({ clientId: 'live-1', username: device.id, password: device.token })
      await row('sessions', 'data-client-id', 'live-1').waitFor(WAIT)
      await row('sessions', 'data-client-id', 'live-1').getByText('connected').waitFor(WAIT)
      assert.equal(loads, 0, 'the page was not reloaded')
      const closed = closeOf(client)
      await row('sessions', 'data-client-id', 'live-1').getByRole('button', { name: 'Kick' }).click()
      await closed
      // a clean session ends with its connection: its row goes
      await row('sessions', 'data-client-id', 'live-1').waitFor({ ...WAIT, state: 'detached' })
      assert.equal(loads, 0)
    })

    it('pages sessions through the hub: one page asked for at a time, with its filters', async () => {
      const device = await t.createDevice({ owner: 'cat' })
      const clients: MqttClient[] = []
      for (let i = 0; i < 30; i++) clients.push(await t.connect({ clientId: `paged-${String(i).padStart(2, '0')}`, username: device.id, password: device.token }))
      await open('#/sessions')
      await page.getByLabel('device id').fill(device.id)
      await page.getByLabel('page size').selectOption('25')
      // the listing before the search (every session; the page size applies at once) may hold the
      // same rows: what tells the searched page is its answer
      const searched = page.waitForResponse((r) => new URL(r.url()).pathname === '/v1/sessions' && new URL(r.url()).searchParams.get('deviceId') === device.id, WAIT)
      await page.getByRole('button', { name: 'Search' }).click()
      await searched
      await page.waitForFunction(() => document.querySelectorAll('[data-testid="sessions"] tbody tr').length === 25, undefined, WAIT)
      await row('sessions', 'data-client-id', 'paged-24').waitFor(WAIT)
      await page.getByRole('button', { name: 'Next ›' }).click()
      await row('sessions', 'data-client-id', 'paged-29').waitFor(WAIT)
      assert.equal(await page.locator('[data-testid="sessions"] tbody tr').count(), 5)
      const last = requests.filter((r) => r.url.pathname === '/v1/sessions').at(-1)!.url
      assert.equal(last.searchParams.get('deviceId'), device.id)
      assert.equal(last.searchParams.get('limit'), '25')
      assert.ok(last.searchParams.get('cursor'))
      // a search by part of the client id (the default): paged-10 … paged-19
      await page.getByLabel('client id', { exact: true }).fill('ed-1')
      await page.getByRole('button', { name: 'Search' }).click()
      await row('sessions', 'data-client-id', 'paged-29').waitFor({ ...WAIT, state: 'detached' })
      await row('sessions', 'data-client-id', 'paged-19').waitFor(WAIT)
      assert.equal(await page.locator('[data-testid="sessions"] tbody tr').count(), 10)
      const contains = requests.filter((r) => r.url.pathname === '/v1/sessions').at(-1)!.url
      assert.equal(contains.searchParams.get('clientIdContains'), 'ed-1')
      // the whole id, matched exactly: the one session, not paged-10 … paged-19 with it
      await page.getByLabel('client id match').selectOption('exact')
      await page.getByLabel('client id', { exact: true }).fill('paged-1')
      await page.getByRole('button', { name: 'Search' }).click()
      // no session is paged-1
      await page.locator('[data-testid="sessions"] tbody td', { hasText: 'no sessions' }).waitFor(WAIT)
      await page.getByLabel('client id', { exact: true }).fill('paged-12')
      await page.getByRole('button', { name: 'Search' }).click()
      await row('sessions', 'data-client-id', 'paged-12').waitFor(WAIT)
      assert.equal(await page.locator('[data-testid="sessions"] tbody tr').count(), 1)
      const exact = requests.filter((r) => r.url.pathname === '/v1/sessions').at(-1)!.url
      assert.deepEqual([exact.searchParams.get('clientId'), exact.searchParams.get('clientIdContains')], ['paged-12', null])
      await Promise.all(clients.map((c) => c.endAsync()))
    })

    it('creates a device and shows its token once, edits it, rotates its token and deletes it', async () => {
      await open('#/devices')
      await page.getByRole('button', { name: 'New device' }).click()
      const dialog = page.getByRole('dialog', { name: 'New device' })
      await dialog.getByLabel('Id').fill('console-made')
      await dialog.getByLabel('Owner').fill('dora')
      await dialog.getByLabel('Name').fill('first name')
      await dialog.getByRole('button', { name: 'Create' }).click()
      const token = (await page.getByTestId('token').textContent({ timeout: WAIT.timeout }))!.trim()
      assert.ok(token.length >= 16)
      // the token it shows is the device's MQTT password
      const first = await connectClient(t.mqttUrl, { clientId: 'made-1', username: 'console-made', password: token })
      await first.endAsync()
      await page.getByRole('button', { name: 'Close' }).click()
      await row('devices', 'data-device-id', 'console-made').waitFor(WAIT)
      // shown once: nowhere on the page after
      assert.equal((await page.content()).includes(token), false)

      await row('devices', 'data-device-id', 'console-made').getByRole('button', { name: 'Edit' }).click()
      const edit = page.getByRole('dialog', { name: 'Edit console-made' })
      await edit.getByLabel('Name').fill('second name')
      await edit.getByRole('button', { name: 'Save' }).click()
      await row('devices', 'data-device-id', 'console-made').getByText('second name').waitFor(WAIT)
      assert.equal((await t.api<{ name: string }>('GET', '/v1/devices/console-made')).body.name, 'second name')

      const held = await connectClient(t.mqttUrl, { clientId: 'made-2', username: 'console-made', password: token })
      const kicked = closeOf(held)
      await row('devices', 'data-device-id', 'console-made').getByRole('button', { name: 'Rotate token' }).click()
      await page.getByRole('dialog').getByRole('button', { name: 'Rotate' }).click()
      const rotated = (await page.getByTestId('token').textContent({ timeout: WAIT.timeout }))!.trim()
      assert.notEqual(rotated, token)
      await kicked
      await assert.rejects(connectClient(t.mqttUrl, { clientId: 'made-3', username: 'console-made', password: token }), 'the old token is refused')
      const third = await connectClient(t.mqttUrl, { clientId: 'made-3', username: 'console-made', password: rotated })
      await third.endAsync()
      await page.getByRole('button', { name: 'Close' }).click()

      await row('devices', 'data-device-id', 'console-made').getByRole('button', { name: 'Delete' }).click()
      await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click()
      await row('devices', 'data-device-id', 'console-made').waitFor({ ...WAIT, state: 'detached' })
      await page.getByText('deleted console-made').waitFor(WAIT)
      assert.equal((await t.api('GET', '/v1/devices/console-made')).status, 404)
    })

    it('pushes an attribute change from a device’s page to the client subscribed to it', async () => {
      const device = await t.createDevice({ owner: 'eve' })
      const client = await t.connect({ clientId: 'pushed-1', username: device.id, password: device.token })
      await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })
      await open(`#/devices/${device.id}`)
      await row('device-sessions', 'data-client-id', 'pushed-1').waitFor(WAIT)
      await page.locator('[data-testid="device-subscriptions"] tr', { hasText: 'v1/devices/me/attributes' }).waitFor(WAIT)
      const received = messageOf(client)
      await page.getByRole('form', { name: 'Push attributes' }).locator('textarea').fill('{"colour":"blue"}')
      await page.getByRole('button', { name: 'Push attributes' }).click()
      const [topic, payload] = await received
      assert.equal(topic, 'v1/devices/me/attributes')
      assert.deepEqual(JSON.parse(payload.toString()), { colour: 'blue' })
      await page.getByTestId('push-result').getByText('pushed to 1 session').waitFor(WAIT)
      // the change comes back as the device's event, and the page shows it
      await page.locator('[data-testid="device-events"] tr[data-type="device.property"]').first().waitFor(WAIT)
      await page.locator('[data-property="attributes"]', { hasText: 'blue' }).waitFor(WAIT)
      await client.endAsync()
    })

    it('tails events live, filtered', async () => {
      await open('#/events')
      await page.getByRole('checkbox', { name: 'session.connected' }).check()
      await page.getByRole('button', { name: 'Apply' }).click()
      await page.locator('[data-testid="stream-state"]', { hasText: 'live' }).waitFor(WAIT)
      const device = await t.createDevice({ owner: 'fay' })
      const client = await t.connect({ clientId: 'tailed-1', username: device.id, password: device.token })
      await row('events', 'data-client-id', 'tailed-1').waitFor(WAIT)
      // the filter holds: only connects
      const types = await page.locator('[data-testid="events"] tbody tr[data-type]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-type')))
      assert.ok(types.length > 0)
      assert.deepEqual([...new Set(types)], ['session.connected'])
      await client.endAsync()
    })

    it('asks the hub for one page of any listing, never for the whole fleet', () => {
      const listings = requests.filter((r) => r.method === 'GET' && ['/v1/sessions', '/v1/devices', '/v1/subscriptions'].includes(r.url.pathname))
      // the views above listed sessions, devices and a device's subscription entities
      assert.deepEqual(new Set(listings.map((r) => r.url.pathname)), new Set(['/v1/sessions', '/v1/devices', '/v1/subscriptions']))
      for (const { url } of listings) {
        const limit = Number(url.searchParams.get('limit'))
        assert.ok(limit >= 1 && limit <= 100, `one page of at most 100: ${url.pathname}${url.search}`)
      }
    })

    it('sends a signed-out browser back to the login form when the API refuses its credentials', async () => {
      await page.evaluate(() => sessionStorage.setItem('iothub.credentials', `Basic ${btoa('admin:stale')}`))
      await open('#/devices')
      await page.reload()
      await page.getByRole('form', { name: 'Log in' }).waitFor(WAIT)
    })
  })
}
