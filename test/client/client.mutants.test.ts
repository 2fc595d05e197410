// Behaviours of the reconnecting client that mutation testing found unchecked (docs/testing.md).
import t from 'tap'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../../lib/client'
import { FaultProxy } from '../helpers/fault-proxy'
import type { ReconnectingEvent, ReliableCloseEvent } from '../../lib/client'
import { sleep, start, subprotocolServer, waitFor } from '../helpers/helpers'

/** A plain route that records the close code of each connection. */
async function server (t: { teardown: (fn: () => unknown) => void }): Promise<{ url: string, codes: number[] }> {
  const codes: number[] = []
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('close', (code: number) => codes.push(code))
    })
  })
  t.teardown(() => app.close())
  return { url: url('/ws'), codes }
}

t.test('close codes: 3000 and 4999 are the bounds of the application range, 2999 and 5000 are refused', async (t) => {
  const { url, codes } = await server(t)
  for (const [code, outside] of [[3000, 2999], [4999, 5000]]) {
    const ws = new ReliableWebSocket(url, { WebSocket })
    await once(ws as any, 'open')
    t.throws(() => ws.close(outside), new RangeError(`close code must be 1000 or in 3000-4999, got ${outside}`), `${outside} refused`)
    t.equal(ws.readyState, ws.OPEN, 'a refused code leaves the client open')
    ws.close(code)
    await once(ws as any, 'close')
  }
  await waitFor(() => codes.length === 2, 3000, 'both closes seen by the server')
  t.same(codes, [3000, 4999])
})

t.test('Retry-After as an HTTP date sets the wait to that date, a past date to none; on other statuses the backoff decides', async (t) => {
  // Each path's first upgrade is refused with `status` and the Retry-After `header()` gives at that moment.
  const refusals: Record<string, { status: number, header: () => string }> = {
    '/soon': { status: 503, header: () => new Date(Date.now() + 2000).toUTCString() },
    '/past': { status: 429, header: () => 'Wed, 21 Oct 2015 07:28:00 GMT' },
    '/other': { status: 500, header: () => '1' },
    '/unreadable': { status: 503, header: () => 'soon' },
    '/infinite': { status: 503, header: () => 'Infinity' }
  }
  const asked = new Set<string>()
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/*', {
      websocket: true,
      onRequest: (request, reply, done) => {
        const refusal = refusals[request.url]
        if (asked.has(request.url) || refusal === undefined) return done()
        asked.add(request.url)
        reply.code(refusal.status).header('retry-after', refusal.header()).send()
        done()
      }
    }, () => {})
  })
  t.teardown(() => app.close())
  // The backoff alone would wait 300 ms exactly (no jitter) before the second attempt.
  const firstDelay = async (path: string): Promise<number> => {
    const ws = new ReliableWebSocket(url(path), { WebSocket, backoff: { initialDelayMs: 300, jitter: 'none' } })
    const [event] = await once(ws as any, 'reconnecting') as [ReconnectingEvent]
    ws.close()
    return event.delayMs
  }
  const [soon, past, other, unreadable, infinite] = await Promise.all(['/soon', '/past', '/other', '/unreadable', '/infinite'].map(firstDelay))
  // An HTTP date has whole seconds: 2 s ahead, floored, is 1 to 2 s ahead.
  t.ok(soon > 500 && soon <= 2000, `a date 1-2 s ahead: waits ${soon} ms`)
  t.equal(past, 0, 'a date past: no wait')
  t.equal(other, 300, 'a 500: Retry-After is not for it, the backoff decides')
  t.equal(unreadable, 300, 'neither seconds nor a date: the backoff decides')
  t.equal(infinite, 300, 'seconds that are not finite: the backoff decides')
})

t.test('close() on a client closing or closed does nothing more: one close event', async (t) => {
  const { url } = await server(t)
  const ws = new ReliableWebSocket(url, { WebSocket })
  const closes: number[] = []
  ws.addEventListener('close', (event) => closes.push(event.code))
  await once(ws as any, 'open')
  ws.close(3001)
  ws.close(3002)
  t.equal(ws.readyState, ws.CLOSING)
  await waitFor(() => closes.length > 0, 3000, 'the close event')
  ws.close(3003)
  await sleep(30)
  t.same(closes, [3001], 'the first close() decides; the later ones change nothing')
  t.equal(ws.readyState, ws.CLOSED)
})

t.test('a second close() while closing does not restart the close timeout', async (t) => {
  const { url } = await server(t)
  const proxy = await FaultProxy.start(Number(new URL(url).port))
  t.teardown(() => proxy.close())
  const ws = new ReliableWebSocket(proxy.url('/ws'), { WebSocket, connectTimeoutMs: 400, heartbeat: false })
  await once(ws as any, 'open')
  // The server never hears the close frame: the close timeout ends it.
  proxy.freeze()
  const closedAt = once(ws as any, 'close').then(() => Date.now())
  const startedAt = Date.now()
  ws.close()
  await sleep(300)
  ws.close()
  const elapsed = await closedAt - startedAt
  // Restarted by the second call it would end 700 ms after the first.
  t.ok(elapsed >= 390 && elapsed < 650, `closed ${elapsed} ms after the first close(), 400 ms the timeout`)
})

t.test('send() says true for a message written at once (no session); close() while waiting to reconnect is a clean close', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data: Buffer) => { if (data.toString() === 'restart') socket.close(1012) })
    })
  })
  t.teardown(() => app.close())
  const ws = new ReliableWebSocket(url('/ws'), { WebSocket, backoff: { initialDelayMs: 5000, jitter: 'none' } })
  await once(ws as any, 'open')
  t.equal(ws.send('restart'), true, 'written at once')
  await once(ws as any, 'reconnecting')
  const closed = once(ws as any, 'close')
  ws.close(3000, 'bye')
  const [event] = await closed as [ReliableCloseEvent]
  t.same([event.code, event.reason, event.wasClean, event.willReconnect], [3000, 'bye', true, false])
  t.equal(ws.readyState, ws.CLOSED)
})

t.test("in a page, close() lets go of the page's events: a closed client is not kept alive by them", async (t) => {
  const { url } = await server(t)
  // A stand-in page that records who listens to what.
  const listening = new Set<string>()
  const target = (name: string) => ({
    addEventListener: (type: string) => { listening.add(`${name}:${type}`) },
    removeEventListener: (type: string) => { listening.delete(`${name}:${type}`) }
  })
  const g = globalThis as any
  const window = target('window')
  Object.assign(g, { addEventListener: window.addEventListener, removeEventListener: window.removeEventListener, document: { visibilityState: 'visible', ...target('document') } })
  t.teardown(() => { delete g.addEventListener; delete g.removeEventListener; delete g.document })
  const ws = new ReliableWebSocket(url, { WebSocket })
  t.same([...listening].sort(), ['document:visibilitychange', 'window:online'])
  await once(ws as any, 'open')
  ws.close()
  t.same([...listening], [], 'no listener left once close() is called')
  await once(ws as any, 'close')
})

t.test("a server's retry hint sets the next delay only; a hint that does not parse leaves the backoff's", async (t) => {
  const server = await subprotocolServer(t)
  // The first connection is hinted 40 ms, the second a value that is not a count; the third stays.
  const hints = ['\u0000{"t":"retry","ms":40}', '\u0000{"t":"retry","ms":"soon"}']
  let connections = 0
  server.on('connection', (socket) => {
    socket.send('\u0000{"t":"welcome"}')
    const hint = hints[connections++]
    if (hint === undefined) return
    socket.send(hint)
    socket.close(1001)
  })
  const ws = new ReliableWebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/`, {
    WebSocket, backoff: { initialDelayMs: 300, jitter: 'none' }
  })
  const delays: number[] = []
  ws.addEventListener('reconnecting', (event) => delays.push((event as ReconnectingEvent).delayMs))
  await waitFor(() => connections === 3, 5000, 'the third connection')
  // The hint replaces the first attempt's 300 ms; the second attempt is the backoff's own, 600 ms.
  t.same(delays, [40, 600])
  ws.close()
})

t.test('a client in a session acknowledges every 64th message it receives, not each one', async (t) => {
  const { app, url } = await start({ heartbeat: false, resume: true }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => {
        for (let i = 0; i < Number(data.toString()); i++) socket.send(`message ${i}`)
      })
    })
  })
  t.teardown(() => app.close())
  const ws = new ReliableWebSocket(url('/ws'), { WebSocket })
  let received = 0
  ws.addEventListener('message', () => { received++ })
  await once(ws as any, 'open')
  ws.send('63')
  await waitFor(() => received === 63, 3000, '63 messages')
  await sleep(50)
  t.ok(app.wsStats.sessions.bufferedBytes > 0, 'after 63, the server still keeps them: no ack yet')
  ws.send('1')
  await waitFor(() => app.wsStats.sessions.bufferedBytes === 0, 3000, 'the ack of the 64th')
  t.equal(received, 64)
  ws.close()
})
