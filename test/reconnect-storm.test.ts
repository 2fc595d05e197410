// Server-paced reconnection: a restart spreads its clients' returns, and a refused upgrade's Retry-After is honoured.
import t from 'tap'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../lib/client'
import { FaultProxy } from './fault-proxy'
import { start, waitFor } from './helpers'

const CLIENTS = 1000
const WINDOW_MS = 5000
// The largest share of the clients any 100 ms may hold. An even spread over the window gives 2 %; the clients
// run in this one process, so their timers bunch a little; their own backoff alone would give 100 %.
const MAX_SHARE = 0.05

t.test(`${CLIENTS} clients told to come back over ${WINDOW_MS} ms after a restart do so evenly`, async (t) => {
  const old = await start({ shutdown: { reconnectWindowMs: WINDOW_MS } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  // The new server is up before the old one goes, behind the same address (a load balancer).
  const arrivals: number[] = []
  const fresh = await start({}, (app) => {
    app.addHook('onRequest', async () => { arrivals.push(performance.now()) })
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => fresh.app.close())
  const balancer = await FaultProxy.start(old.port)
  t.teardown(() => balancer.close())
  const clients: ReliableWebSocket[] = []
  t.teardown(() => { for (const ws of clients) ws.close() })
  const hints: number[] = []
  for (let i = 0; i < CLIENTS; i++) {
    // Their own backoff alone would bring them all back within 100 ms.
    const ws = new ReliableWebSocket(balancer.url('/ws'), { WebSocket, backoff: { initialDelayMs: 100 } })
    ws.addEventListener('reconnecting', (event) => { if (event.attempt === 1) hints.push(event.delayMs) })
    clients.push(ws)
  }
  await waitFor(() => old.app.wsStats.connections.active === CLIENTS, 20_000, 'every client connected')

  balancer.target = fresh.port
  const restartedAt = performance.now()
  await old.app.close()
  await waitFor(() => fresh.app.wsStats.connections.active === CLIENTS, 20_000, 'every client back')

  t.equal(hints.length, CLIENTS)
  t.ok(Math.min(...hints) >= 0 && Math.max(...hints) < WINDOW_MS, 'each hint falls inside the window')
  arrivals.sort((a, b) => a - b)
  let busiest = 0
  for (let i = 0, j = 0; i < arrivals.length; i++) {
    while (arrivals[i] - arrivals[j] >= 100) j++
    busiest = Math.max(busiest, i - j + 1)
  }

  t.ok(busiest <= CLIENTS * MAX_SHARE, `the busiest 100 ms held ${busiest} of ${CLIENTS} reconnections (at most ${CLIENTS * MAX_SHARE})`)
  const spread = arrivals[arrivals.length - 1] - restartedAt
  t.ok(spread >= WINDOW_MS * 0.8, `they came back over ${Math.round(spread)} ms`)
})

t.test("a refused upgrade's Retry-After (503 and 429) sets the next attempt's delay", async (t) => {
  const { app, url } = await start({ limits: { maxConnections: 1 } }, (app) => {
    app.get('/full', { websocket: true }, () => {})
    app.get('/slow', { websocket: true, onRequest: (_request, reply, done) => { reply.code(429).header('retry-after', new Date(Date.now() + 3000).toUTCString()).send(); done() } }, () => {})
    app.get('/down', { websocket: true, onRequest: (_request, reply, done) => { reply.code(503).send(); done() } }, () => {})
    app.get('/vague', { websocket: true, onRequest: (_request, reply, done) => { reply.code(503).header('retry-after', 'soon').send(); done() } }, () => {})
  })
  t.teardown(() => app.close())
  const holder = new WebSocket(url('/full'))
  await once(holder, 'open')
  const firstDelay = async (path: string): Promise<number> => {
    const ws = new ReliableWebSocket(url(path), { WebSocket, backoff: { initialDelayMs: 50, maxDelayMs: 50 } })
    const [event] = await once(ws as any, 'reconnecting')
    ws.close()
    return event.delayMs
  }
  t.equal(await firstDelay('/full'), 5000, "503 with the plugin's Retry-After: 5")
  const dated = await firstDelay('/slow')
  t.ok(dated > 1000 && dated <= 3000, `429 with an HTTP date: ${dated} ms`)
  t.ok(await firstDelay('/down') < 50, 'no Retry-After: the backoff decides')
  t.ok(await firstDelay('/vague') < 50, 'nor does one that is neither seconds nor a date')
  holder.close()
})
