// Needs the build (`npm test` runs it first): the example app runs as `npm start` runs it, in its own process.
// The screenshot goes to a temporary directory; `npm run screenshot` runs this file with DASHBOARD_SCREENSHOT set to
// docs/dashboard.png, the README's picture.
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { launchChromium } from '../helpers/browser'
import { startExample } from '../helpers/example-app'
import { sleep } from '../helpers/helpers'
import { CHROMIUM, needs } from '../helpers/programs'

const root = join(__dirname, '..', '..')
// Two example apps in their own processes, three loads and a browser: more than tap's 30 s on a busy machine.
t.setTimeout(120_000)

/** Where the screenshot goes: DASHBOARD_SCREENSHOT (from the checkout's root), else a directory removed after the test. */
function screenshotPath (t: { teardown: (fn: () => unknown) => void }): string {
  const wanted = process.env.DASHBOARD_SCREENSHOT
  if (wanted !== undefined && wanted !== '') {
    const path = resolve(root, wanted)
    mkdirSync(dirname(path), { recursive: true })
    return path
  }
  const dir = mkdtempSync(join(tmpdir(), 'dashboard-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, 'dashboard.png')
}

async function stats (base: string): Promise<any> {
  return (await fetch(`${base}/health/ws`)).json()
}

t.test('npm run load: the load generator drives the running example app, then stops', async (t) => {
  const { base } = await startExample(t)
  const { stdout } = await promisify(execFile)('npm', ['run', 'load', '--silent', '--', '--url', base, '--seconds', '2', '--clients', '5'], { cwd: root })
  t.match(stdout, /^Load against http:\/\/127\.0\.0\.1:\d+ for 2 s with 5 clients/)
  t.match(stdout, /Done: [1-9]\d* connections, [1-9]\d* messages/)
  const after = await stats(base)
  t.ok(after.connections.opened >= 5, `${after.connections.opened} connections opened`)
  t.ok(after.messages.received > 0, 'messages arrived')
  t.equal(after.connections.active, 0, 'every client closed at the end')
})

t.test('npm run load without a server says it cannot connect, and fails', async (t) => {
  const closed = net.createServer().listen(0, '127.0.0.1')
  await once(closed, 'listening')
  const { port } = closed.address() as net.AddressInfo
  await new Promise((resolve) => closed.close(resolve))
  const run = promisify(execFile)('npm', ['run', 'load', '--silent', '--', '--url', `http://127.0.0.1:${port}`, '--seconds', '1'], { cwd: root })
  const err = await run.then(() => null, (err: { code: number, stdout: string, stderr: string }) => err)
  t.ok(err !== null, 'it exits non-zero')
  t.equal(err!.code, 1)
  t.equal(err!.stderr, `Cannot connect to ws://127.0.0.1:${port}/echo: ECONNREFUSED — start the example app first (npm start), or pass --url\n`)
  t.equal(err!.stdout, '', 'and starts no load')
})

t.test('the dashboard renders wsStats live, its numbers move under load, and a screenshot is saved', needs(CHROMIUM), async (t) => {
  const { base } = await startExample(t)
  const browser = await launchChromium()
  t.teardown(() => browser.close())
  const page = await browser.newPage({ viewport: { width: 1280, height: 960 } })
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(`${base}/dashboard`)
  const tile = async (name: string): Promise<string> => (await page.textContent(`#tile-${name}`))!.trim()
  const number = async (name: string): Promise<number> => Number(await tile(name))

  await page.waitForSelector('#status.live')
  await page.waitForFunction(() => document.getElementById('tile-active')!.textContent !== '–')
  t.equal(await page.locator('.uplot canvas').count(), 6, 'six charts drawn')
  t.equal(await number('active'), 1, 'the dashboard itself is the one connection')
  const closedBefore = await number('closed')

  await page.click('#load')
  await page.waitForFunction(() => Number(document.getElementById('tile-active')!.textContent) > 10, undefined, { timeout: 10_000 })
  await page.waitForFunction(() => Number(document.getElementById('tile-in')!.textContent) > 0, undefined, { timeout: 10_000 })
  t.ok(await page.isDisabled('#load'), 'the button waits while a load runs')
  t.ok(await number('in') > 0, `${await tile('in')} messages in per second`)
  await page.waitForFunction(() => document.getElementById('tile-p50')!.textContent !== '–', undefined, { timeout: 10_000 })
  t.ok(await number('p50') >= 0, `ping p50 ${await tile('p50')} ms`)
  await page.waitForFunction((before) => Number(document.getElementById('tile-closed')!.textContent) > before, closedBefore, { timeout: 10_000 })
  await page.waitForFunction(() => Number(document.getElementById('tile-timeouts')!.textContent) > 0, undefined, { timeout: 10_000 })
  await page.waitForFunction(() => Number(document.getElementById('tile-dropped')!.textContent) > 0, undefined, { timeout: 15_000 })
  t.pass('closes, heartbeat timeouts and drops all counted on the page')
  const server = await stats(base)
  t.ok(server.connections.opened > 10, 'the page shows what the server counts')

  // A few more seconds of history, so the charts have lines to show.
  await sleep(4000)
  const path = screenshotPath(t)
  const png = await page.screenshot({ path, fullPage: true })
  t.ok(png.length > 20_000, `a ${png.length}-byte screenshot at ${path}`)
  t.same(errors, [], 'no script error on the page')
})
