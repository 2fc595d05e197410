// Behaviours of the reconnecting client that mutation testing found unchecked (docs/testing.md).
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../lib/client'
import type { ReconnectingEvent } from '../lib/client'
import { start, waitFor } from './helpers'

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
    t.throws(() => ws.close(outside), RangeError, `${outside} refused`)
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
    '/other': { status: 500, header: () => '1' }
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
  const [soon, past, other] = await Promise.all(['/soon', '/past', '/other'].map(firstDelay))
  // An HTTP date has whole seconds: 2 s ahead, floored, is 1 to 2 s ahead.
  t.ok(soon > 500 && soon <= 2000, `a date 1-2 s ahead: waits ${soon} ms`)
  t.equal(past, 0, 'a date past: no wait')
  t.equal(other, 300, 'a 500: Retry-After is not for it, the backoff decides')
})
