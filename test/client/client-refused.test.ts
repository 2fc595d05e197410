// The client against upgrades a server refuses with an HTTP status (ws, in Node, shows the response; a browser does
// not: see browser-client.test.ts): final or retried, what giveup says, and Retry-After honoured.
import t from 'tap'
import { once } from 'node:events'
import net from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import { GiveUpEvent, ReliableWebSocket, isRetryable } from '../../lib/client'
import type { CloseInfo, ReliableWebSocketOptions } from '../../lib/client'
import { sleep, start, waitFor } from '../helpers/helpers'

interface Refuser {
  /** `/refuse?status=401&retryAfter=1&refusals=2`: answered `status` (with Retry-After if given) `refusals` times, then accepted. */
  url: (query: string) => string
  /** When each upgrade request of that query arrived (ms, Date.now()). */
  arrivals: (query: string) => number[]
}

async function refuser (t: { teardown: (fn: () => unknown) => void }): Promise<Refuser> {
  const seen = new Map<string, number[]>()
  const server = await start({}, (app) => {
    app.get('/refuse', {
      websocket: true,
      onRequest: (request, reply, done) => {
        const query = request.url.slice(request.url.indexOf('?') + 1)
        const { status, retryAfter, refusals = 'Infinity' } = request.query as Record<string, string>
        const arrivals = seen.get(query) ?? []
        seen.set(query, arrivals)
        arrivals.push(Date.now())
        if (arrivals.length > Number(refusals)) return done()
        if (retryAfter !== undefined) reply.header('retry-after', retryAfter)
        reply.code(Number(status)).send()
        done()
      }
    }, (socket) => {
      // Any message cuts the connection: a drop after an accepted upgrade.
      socket.on('message', () => socket.terminate())
    })
  })
  t.teardown(() => server.app.close())
  return { url: (query) => server.url(`/refuse?${query}`), arrivals: (query) => seen.get(query) ?? [] }
}

function client (url: string, options: ReliableWebSocketOptions = {}): ReliableWebSocket {
  return new ReliableWebSocket(url, {
    WebSocket,
    ...options,
    backoff: { initialDelayMs: 5, maxDelayMs: 10, ...options.backoff }
  })
}

t.test('401, 403, 404 and the other 4xx are final: one attempt, then giveup with the status', async (t) => {
  const server = await refuser(t)
  for (const status of [401, 403, 404, 400, 410]) {
    const query = `status=${status}`
    const ws = client(server.url(query))
    const closes: Array<[number, boolean]> = []
    ws.addEventListener('close', (event) => closes.push([event.code, event.willReconnect]))
    const [giveup] = await once(ws as any, 'giveup') as [GiveUpEvent]
    t.same([giveup.reason, giveup.code, giveup.status], ['httpStatus', 1006, status], `${status}: giveup says why`)
    t.same(closes, [[1006, false]], `${status}: one close, with no reconnection to follow`)
    t.equal(ws.readyState, ws.CLOSED)
    await sleep(50)
    t.equal(server.arrivals(query).length, 1, `${status}: the server was asked once`)
  }
})

t.test('408, 429 and 5xx are retried until the server accepts; Retry-After sets the wait', async (t) => {
  const server = await refuser(t)
  const attempt = async (query: string): Promise<{ delays: number[], arrivals: number[] }> => {
    const ws = client(server.url(query))
    const delays: number[] = []
    ws.addEventListener('reconnecting', (event) => delays.push(event.delayMs))
    await once(ws as any, 'open')
    ws.close()
    return { delays, arrivals: server.arrivals(query) }
  }
  // Concurrently, so the seconds of Retry-After overlap.
  const [timeout, busy, down, broken] = await Promise.all([
    attempt('status=408&refusals=3'),
    attempt('status=429&retryAfter=1&refusals=1'),
    attempt('status=503&retryAfter=1&refusals=1'),
    attempt('status=500&refusals=3')
  ])
  t.equal(timeout.arrivals.length, 4, '408: refused three times, accepted at the fourth attempt')
  t.ok(timeout.delays.every((delay) => delay <= 10), '408 without Retry-After: the backoff decides')
  t.equal(broken.arrivals.length, 4, '500: likewise')
  for (const [status, { delays, arrivals }] of [[429, busy], [503, down]] as const) {
    t.same(delays, [1000], `${status}: the wait is Retry-After's second`)
    const waited = arrivals[1] - arrivals[0]
    t.ok(waited >= 990 && waited < 2500, `${status}: the server was asked again ${waited} ms later`)
  }
})

t.test('shouldReconnect sees the status and overrides the table', async (t) => {
  const server = await refuser(t)
  const seen: CloseInfo[] = []
  // An application that gets a fresh token after a 401, and will not wait for a busy server.
  const shouldReconnect = (close: CloseInfo): boolean => {
    seen.push(close)
    return close.status === 401 || (close.status !== 503 && isRetryable(close))
  }
  const refreshed = client(server.url('status=401&refusals=1'), { shouldReconnect })
  await once(refreshed as any, 'open')
  t.same(seen, [{ code: 1006, reason: '', wasClean: false, status: 401 }], 'the status is part of what the policy is shown')
  refreshed.send('drop')
  await once(refreshed as any, 'reconnected')
  t.same(seen[1], { code: 1006, reason: '', wasClean: false }, 'a later drop carries no status: the refusal was the first attempt\'s')
  refreshed.close()

  const impatient = client(server.url('status=503&retryAfter=1'), { shouldReconnect })
  const [giveup] = await once(impatient as any, 'giveup') as [GiveUpEvent]
  t.same([giveup.reason, giveup.status], ['httpStatus', 503])
  t.equal(server.arrivals('status=503&retryAfter=1').length, 1)
})

t.test('retries that run out after refusals: giveup says maxRetries, with the last status', async (t) => {
  const server = await refuser(t)
  const ws = client(server.url('status=503'), { backoff: { maxRetries: 2 } })
  const [giveup] = await once(ws as any, 'giveup') as [GiveUpEvent]
  t.same([giveup.reason, giveup.code, giveup.status], ['maxRetries', 1006, 503])
  t.equal(server.arrivals('status=503').length, 3)
})

t.test('a server that keeps refusing is asked slowAfter times at the backoff pace, then under slowDelayMs', async (t) => {
  const server = await refuser(t)
  const ws = client(server.url('status=503'), { backoff: { jitter: 'none', slowAfter: 4, slowDelayMs: 60_000 } })
  const delays: number[] = []
  ws.addEventListener('reconnecting', (event) => delays.push(event.delayMs))
  await waitFor(() => delays.length === 4, 3000, 'four refusals')
  await sleep(300)
  t.same(delays, [5, 10, 10, 60_000], 'the fourth refusal in a row waits the slow ceiling')
  t.equal(server.arrivals('status=503').length, 4, 'and no attempt came meanwhile')
  ws.close()
})

t.test('a server that accepts the upgrade and then closes has not refused: the backoff keeps its pace', async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  server.on('connection', (socket) => socket.close(1013))
  const ws = client(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, { backoff: { jitter: 'none', slowAfter: 2, slowDelayMs: 60_000 } })
  const delays: number[] = []
  ws.addEventListener('reconnecting', (event) => delays.push(event.delayMs))
  await waitFor(() => delays.length === 4, 3000, 'four closes')
  ws.close()
  t.same(delays, [5, 10, 10, 10], 'closed after an upgrade, never refused')
})
