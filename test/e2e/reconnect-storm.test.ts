// Server-paced reconnection: a restart spreads its clients' returns, and a refused upgrade's Retry-After is honoured.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../../lib/client'
import { FaultProxy } from '../helpers/fault-proxy'
import { busiest, start, waitFor } from '../helpers/helpers'

// A thousand clients in this process take a loaded machine (the suite at double parallelism) a minute to connect.
t.setTimeout(240_000)

const CLIENTS = 1000
const WINDOW_MS = 5000
// The most any 100 ms of the window may be given: the server hands each client a moment in its own slot
// (CLIENTS slots over the window), so a stretch of 100 ms holds at most one slot more than its share. Random
// moments alone would bunch (about 3.5 % in the busiest 100 ms for 1,000 uniform draws); one delay for all, 100 %.
const MAX_PER_100MS = Math.ceil(CLIENTS * 100 / WINDOW_MS) + 1

// What is judged is what the server told the clients (their delays, exact data) and what load cannot bring
// about (a client back before its moment, the window shortened). When the clients actually arrive depends on
// how busy the machine is: with the whole suite running in parallel, stalled timers fire together and bunch
// arrivals that were spread evenly, so the arrivals' busiest 100 ms is reported, not judged.
t.test(`${CLIENTS} clients told to come back over ${WINDOW_MS} ms after a restart are given evenly spread moments, and none comes back early`, async (t) => {
  const old = await start({ shutdown: { reconnectWindowMs: WINDOW_MS } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  // The new server is up before the old one goes, behind the same address (a load balancer).
  const arrivals: number[] = []
  const fresh = await start({}, (app) => {
    app.addHook('onRequest', async () => { arrivals.push(Date.now()) })
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => fresh.app.close())
  const balancer = await FaultProxy.start(old.port)
  t.teardown(() => balancer.close())
  const clients: ReliableWebSocket[] = []
  t.teardown(() => { for (const ws of clients) ws.close() })
  const hints: number[] = []
  // Each client's delay and when it was back, by client.
  const early: number[] = []
  let back = 0
  for (let i = 0; i < CLIENTS; i++) {
    // Their own backoff alone would bring them all back within 100 ms.
    const ws = new ReliableWebSocket(balancer.url('/ws'), { WebSocket, backoff: { initialDelayMs: 100 } })
    let hint = -1
    ws.addEventListener('reconnecting', (event) => { if (event.attempt === 1) hints.push(hint = event.delayMs) })
    ws.addEventListener('reconnected', () => {
      back++
      const after = Date.now() - restartedAt
      // Date.now() counts whole milliseconds.
      if (after < hint - 1) early.push(after - hint)
    })
    clients.push(ws)
  }
  await waitFor(() => old.app.wsStats.connections.active === CLIENTS, 60_000, 'every client connected')

  balancer.target = fresh.port
  const restartedAt = Date.now()
  await old.app.close()
  // The server counts a connection before its client has had the welcome and said 'reconnected'.
  await waitFor(() => fresh.app.wsStats.connections.active === CLIENTS && back === CLIENTS, 60_000, 'every client back')

  t.equal(hints.length, CLIENTS, 'every client was given a moment')
  t.ok(Math.min(...hints) >= 0 && Math.max(...hints) < WINDOW_MS, 'each inside the window')
  const scheduled = [...hints].sort((a, b) => a - b)
  const most = busiest(scheduled, 100)
  t.ok(most <= MAX_PER_100MS, `the busiest 100 ms of the window was given ${most} of ${CLIENTS} clients (at most ${MAX_PER_100MS})`)
  t.ok(scheduled[CLIENTS - 1] - scheduled[0] >= WINDOW_MS * 0.95, 'the moments cover the window')
  t.equal(back, CLIENTS)
  t.same(early, [], 'no client came back before its moment')
  arrivals.sort((a, b) => a - b)
  const spread = arrivals[arrivals.length - 1] - restartedAt
  t.ok(spread >= WINDOW_MS * 0.9, `they came back over ${spread} ms`)
  t.comment(`arrivals at the server: ${busiest(arrivals, 100)} in the busiest 100 ms (load decides this one)`)
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
