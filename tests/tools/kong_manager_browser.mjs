// Drives a Kong Manager build in headless Chromium (Playwright) against a running Tollgate:
// creates a service and a route through the UI's forms and sees them listed, then checks
// them on the Admin API. Usage: node kong_manager_browser.mjs <gui url> <admin url>.
// Prints one line per check and "N passed, N failed"; exits 1 when a check failed.
// Selectors are the data-testid attributes Kong Manager's own Playwright suite uses.
import { chromium } from 'playwright-core'

const [gui, admin] = process.argv.slice(2)
if (!gui || !admin) {
  console.error('usage: node kong_manager_browser.mjs <gui url> <admin url>')
  process.exit(2)
}
let passed = 0
let failed = 0
const check = (name, ok, detail = '') => {
  if (ok) { passed++; console.log('ok  ', name) } else { failed++; console.log('FAIL', name, detail) }
}
const api = async (path) => {
  const r = await fetch(admin + path)
  return { status: r.status, body: r.status === 204 ? null : await r.json() }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
})
const page = await browser.newPage()
const adminCalls = []
const badCalls = []
page.on('response', (r) => {
  if (!r.url().startsWith(admin)) return
  const line = `${r.request().method()} ${r.url().slice(admin.length)} ${r.status()}`
  adminCalls.push(line)
  if (r.status() >= 400) badCalls.push(line)
})
page.on('requestfailed', (r) => {
  if (r.url().startsWith(admin)) badCalls.push(`${r.method()} ${r.url()} failed: ${r.failure()?.errorText}`)
})
page.setDefaultTimeout(20000)

try {
  // Overview: GET / through CORS.
  await page.goto(`${gui}/`)
  await page.waitForLoadState('networkidle')
  check('the overview loaded GET / from the Admin API', adminCalls.some((c) => c.startsWith('GET / 200')), adminCalls)

  // A service through the create form.
  await page.goto(`${gui}/services/create`)
  await page.getByTestId('gateway-service-name-input').fill('ui-service')
  await page.getByTestId('gateway-service-url-input').fill('http://example.com:8080/test')
  await page.getByTestId('form-actions').locator('.k-button.primary').click()
  await page.waitForSelector('.kong-ui-gateway-service-entity-config-card')
  const svc = await api('/services/ui-service')
  check('the service exists on the Admin API', svc.status === 200 && svc.body.host === 'example.com' &&
    svc.body.port === 8080 && svc.body.path === '/test', JSON.stringify(svc))

  // A route for it through the route form.
  await page.goto(`${gui}/routes/create`)
  const select = page.locator('.k-select').filter({ hasText: 'Service' })
  await select.locator('[data-testid="route-form-service-id"]').click()
  await select.locator(`[data-testid="select-item-${svc.body.id}"]`).click()
  await page.getByTestId('route-form-paths-input-1').fill('/ui')
  await page.getByTestId('route-form-name').fill('ui-route')
  await page.getByTestId('form-actions').locator('.k-button.primary').click()
  await page.getByTestId('name-property-value').filter({ hasText: 'ui-route' }).waitFor()
  const route = await api('/routes/ui-route')
  check('the route exists on the Admin API', route.status === 200 && route.body.service.id === svc.body.id &&
    JSON.stringify(route.body.paths) === '["/ui"]', JSON.stringify(route))

  // Both listed.
  await page.goto(`${gui}/services`)
  await page.locator('.kong-ui-entities-gateway-services-list').getByText('ui-service').waitFor()
  check('the services list shows the service', true)
  await page.goto(`${gui}/routes`)
  await page.locator('.kong-ui-entities-routes-list').getByText('ui-route').waitFor()
  check('the routes list shows the route', true)
  await page.goto(`${gui}/services/${svc.body.id}/routes`)
  await page.locator('.kong-ui-entities-routes-list').getByText('ui-route').waitFor()
  check("the service's routes tab shows the route", true)

  // A plugin through the form rendered from GET /schemas/plugins/basic-auth, scoped to
  // the service from its plugins tab.
  await page.goto(`${gui}/services/${svc.body.id}/plugins`)
  await page.click('.kong-ui-entities-plugins-list [data-testid="empty-state-action"]')
  await page.getByTestId('basic-auth-card').click()
  await page.locator('#config-hide_credentials').waitFor()
  await page.locator('#config-hide_credentials').check()
  await page.locator('[data-testid="form-actions"] .primary').click()
  await page.locator('td[data-testid="name"]').filter({ hasText: 'Basic Authentication' }).waitFor()
  const plugins = await api(`/services/${svc.body.id}/plugins`)
  const p = plugins.body.data[0] || {}
  check('the plugin exists on the Admin API', plugins.body.data.length === 1 && p.name === 'basic-auth' &&
    p.config.hide_credentials === true, JSON.stringify(plugins))

  // A consumer through its form.
  await page.goto(`${gui}/consumers/create`)
  await page.waitForSelector('.kong-ui-entities-consumer-form')
  await page.getByTestId('consumer-form-username').fill('ui-consumer')
  await page.getByTestId('form-actions').locator('.k-button.primary').click()
  await page.locator('[data-testid="username-plain-text"]').filter({ hasText: 'ui-consumer' }).waitFor()
  check('the consumer exists on the Admin API', (await api('/consumers/ui-consumer')).status === 200)

  // The other lists Tollgate has entities for load without a failed call.
  for (const list of ['plugins', 'consumers', 'upstreams', 'certificates', 'ca-certificates', 'snis']) {
    await page.goto(`${gui}/${list}`)
    await page.waitForLoadState('networkidle')
  }
} catch (e) {
  check('the UI flow', false, e.message.split('\n')[0])
  await page.screenshot({ path: process.env.SCREENSHOT || 'kong-manager-failure.png', fullPage: true }).catch(() => {})
}
check('no Admin API call failed', badCalls.length === 0, badCalls.join('; '))
await browser.close()
console.log(`${passed} passed, ${failed} failed`)
process.exit(failed ? 1 : 0)
