// Needs Debian's Chromium (.ci/run installs it) and the build (npm test runs it first).
// The example app's chat page, whose client is the browser build of fastify-reliable-ws/client,
// in headless Chromium behind a proxy that cuts the connection.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import { launchChromium } from './browser'
import { startExample } from './example-app'
import { FaultProxy } from './fault-proxy'

t.test('the page reconnects after the connection drops, and every message appears once', async (t) => {
  const { port } = await startExample(t)
  const proxy = await FaultProxy.start(port)
  t.teardown(() => proxy.close())
  const browser = await launchChromium()
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  const lines = (): Promise<string[]> => page.$$eval('#log div', (divs) => divs.map((div) => div.textContent ?? ''))
  const say = async (text: string): Promise<void> => {
    await page.fill('#text', text)
    await page.press('#text', 'Enter')
  }

  await page.goto(`http://127.0.0.1:${proxy.port}/`)
  await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('connected'))
  await say('one')
  await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('guest: one'))

  // The connection drops, and stays down for a while: what the user sends meanwhile is queued.
  proxy.refuse = true
  proxy.cut()
  await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('connection lost'))
  await say('two')
  await say('three')
  // Someone else speaks while the page is away: its session keeps the message for it.
  const other = new WebSocket(`ws://127.0.0.1:${port}/chat`)
  await once(other, 'open')
  other.send(JSON.stringify({ name: 'other', text: 'while you were away' }))
  await once(other, 'message')
  other.close()
  proxy.refuse = false
  await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('reconnected'), undefined, { timeout: 15_000 })
  await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('guest: three'), undefined, { timeout: 5000 })
  await say('four')
  await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('guest: four'))

  const chat = (await lines()).filter((line) => /^(guest|other): /.test(line))
  t.same(chat, ['guest: one', 'other: while you were away', 'guest: two', 'guest: three', 'guest: four'], 'each message once, in order')
  t.notOk((await lines()).some((line) => line.startsWith('session lost')), 'the session was resumed')
  t.ok((await lines()).some((line) => /^connection lost \(1006\), retrying in \d+ ms$/.test(line)), 'the page was told, with the code')
})
