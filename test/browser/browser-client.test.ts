// Needs Chromium (skipped without it, unless CI is set: see programs.ts) and the build (npm test runs it first).
// The browser build of fastify-reliable-ws/client in headless Chromium: the example app's chat page behind a proxy
// that cuts the connection, and a page whose upgrades are refused.
import t from 'tap'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import { launchChromium } from '../helpers/browser'
import { startExample } from '../helpers/example-app'
import { FaultProxy } from '../helpers/fault-proxy'
import { sleep, start, waitFor } from '../helpers/helpers'
import { CHROMIUM, needs } from '../helpers/programs'

t.test('the page reconnects after the connection drops, and every message appears once', needs(CHROMIUM), async (t) => {
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

t.test('a page whose upgrades are refused slows to slowDelayMs after slowAfter attempts: it never sees the status', needs(CHROMIUM), async (t) => {
  const client = readFileSync(join(__dirname, '..', '..', 'dist', 'browser', 'client.mjs'))
  const refusals: number[] = []
  const { app, url } = await start({}, (app) => {
    app.get('/', (_request, reply) => { reply.type('text/html').send('<!doctype html><title>refused</title>') })
    app.get('/client.mjs', (_request, reply) => { reply.type('text/javascript').send(client) })
    app.get('/ws', { websocket: true, onRequest: (_request, reply, done) => { refusals.push(Date.now()); reply.code(403).send(); done() } }, () => {})
  })
  t.teardown(() => app.close())
  const browser = await launchChromium()
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  await page.goto(url('/').replace('ws:', 'http:'))
  await page.evaluate(async (target) => {
    const { ReliableWebSocket } = await import('/client.mjs' as string)
    const events: unknown[] = (window as any).events = []
    const ws = new ReliableWebSocket(target, { backoff: { initialDelayMs: 20, maxDelayMs: 50, jitter: 'none', slowAfter: 4, slowDelayMs: 60_000 } })
    ws.addEventListener('close', (event: any) => events.push(['close', event.code, event.willReconnect]))
    ws.addEventListener('reconnecting', (event: any) => events.push(['reconnecting', event.attempt, event.delayMs]))
    ws.addEventListener('giveup', (event: any) => events.push(['giveup', event.reason, event.status]))
  }, url('/ws'))
  await waitFor(() => refusals.length === 4, 10_000, 'four refused upgrades')
  // At the backoff's pace (20-50 ms) the page would ask some thirty more times meanwhile.
  await sleep(1500)
  t.equal(refusals.length, 4, 'the server was asked four times, then left alone')
  const events = await page.evaluate(() => (window as any).events)
  t.same(events, [
    ['close', 1006, true], ['reconnecting', 1, 20],
    ['close', 1006, true], ['reconnecting', 2, 40],
    ['close', 1006, true], ['reconnecting', 3, 50],
    ['close', 1006, true], ['reconnecting', 4, 60_000]
  ], 'a refusal reads as a 1006 close before any open, the same as an unreachable server: retried, slowly after four')
})
