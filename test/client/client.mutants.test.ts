// Behaviours of the reconnecting client that mutation testing found unchecked (docs/testing.md).
import t from 'tap'
import { once } from 'node:events'
import { createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../../lib/client'
import { FaultProxy } from '../helpers/fault-proxy'
import type { ReconnectingEvent, ReliableCloseEvent, SessionLostEvent } from '../../lib/client'
import { encodeControl, PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
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
    '/soon': { status: 503, header: () => new Date(Date.now() + 3000).toUTCString() },
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
  // An HTTP date has whole seconds: 3 s ahead, floored, is 2 to 3 s ahead when the server writes it (the client
  // reads it up to 1.5 s later and still waits over 500 ms; the backoff's 300 and no wait are both below).
  t.ok(soon > 500 && soon <= 3000, `a date 2-3 s ahead: waits ${soon} ms`)
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
  // Restarting the close timeout would arm the client's timer again (and end the close 700 ms after the first call).
  const real = globalThis.setTimeout
  let timers = 0
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => { timers++; return real(...args) }) as typeof setTimeout
  try {
    ws.close()
  } finally {
    globalThis.setTimeout = real
  }
  t.equal(timers, 0, 'the second close() arms no timer')
  const elapsed = await closedAt - startedAt
  t.ok(elapsed >= 390, `closed ${elapsed} ms after the first close(), 400 ms the timeout`)
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

type Teardown = { teardown: (fn: () => unknown) => void }

/** A server that plays the subprotocol by hand: the test sends each welcome; every connection's frames are kept. */
async function scripted (t: Teardown): Promise<{ url: string, conns: Array<{ offered: string[], frames: string[], socket: WebSocket }> }> {
  const server = await subprotocolServer(t)
  const conns: Array<{ offered: string[], frames: string[], socket: WebSocket }> = []
  server.on('connection', (socket, request) => {
    const conn = { offered: String(request.headers['sec-websocket-protocol']).split(/, */), frames: [] as string[], socket }
    socket.on('message', (data) => conn.frames.push(data.toString()))
    conns.push(conn)
  })
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`, conns }
}

/** A TCP server that accepts and then does nothing (`hold`), or cuts every connection at once. */
async function tcpServer (t: Teardown, hold: boolean): Promise<string> {
  const sockets = new Set<Socket>()
  const server: Server = createServer((socket) => {
    if (!hold) return socket.destroy()
    sockets.add(socket)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => { for (const s of sockets) s.destroy(); server.close(resolve) }))
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}/`
}

/** A stand-in page whose 'online' event the test can fire (to every client listening); records who listens. */
function page (t: Teardown): { listening: () => string[], wake: () => void } {
  const listeners = new Map<string, Set<() => void>>()
  const target = (name: string) => ({
    addEventListener: (type: string, listener: () => void) => {
      const key = `${name}:${type}`
      listeners.set(key, (listeners.get(key) ?? new Set()).add(listener))
    },
    removeEventListener: (type: string, listener: () => void) => { listeners.get(`${name}:${type}`)?.delete(listener) }
  })
  const g = globalThis as any
  const window = target('window')
  Object.assign(g, { addEventListener: window.addEventListener, removeEventListener: window.removeEventListener, document: { visibilityState: 'visible', ...target('document') } })
  t.teardown(() => { delete g.addEventListener; delete g.removeEventListener; delete g.document })
  return {
    listening: () => [...listeners].flatMap(([key, set]) => [...set].map(() => key)),
    wake: () => { for (const listener of listeners.get('window:online') ?? []) listener() }
  }
}

const [A, B] = ['a'.repeat(32), 'b'.repeat(32)]
const [S1, S2, S3, S4] = ['1', '2', '3', '4'].map((d) => d.repeat(32))
const ack = (n: number): string => encodeControl({ t: 'ack', n })

t.test('each welcome decides the session: acks free what the server has; another id, or the same one not resumed, loses it; a token without a session is no secret', async (t) => {
  const { url, conns } = await scripted(t)
  const ws = new ReliableWebSocket(url, { WebSocket, heartbeat: false, backoff: { initialDelayMs: 20, jitter: 'none' } })
  t.teardown(() => ws.close())
  const lost: unknown[][] = []
  ws.addEventListener('sessionlost', (event) => lost.push([...(event as SessionLostEvent).unconfirmed]))
  const welcome = async (i: number, fields: object): Promise<typeof conns[number]> => {
    await waitFor(() => conns.length > i, 3000, `connection ${i + 1}`)
    const opened = once(ws as any, 'open')
    conns[i].socket.send(encodeControl({ t: 'welcome', ...fields }))
    await opened
    return conns[i]
  }
  const cut = async (i: number, code?: number): Promise<void> => {
    const closed = once(ws as any, 'close')
    if (code === undefined) conns[i].socket.terminate()
    else conns[i].socket.close(code)
    await closed
  }

  // A session begins: its secret is acknowledged at once (the server may let go of the one before).
  const c1 = await welcome(0, { session: A, token: S1 })
  ws.send('m1'); ws.send('m2'); ws.send('m3')
  await waitFor(() => c1.frames.length === 4, 3000, 'three messages')
  t.same(c1.frames, [ack(0), 'm1', 'm2', 'm3'], 'the welcome acknowledged first, as an ack')
  // The server has two of them; what the client sends next is written at once.
  ws.addEventListener('message', () => ws.send('m4'), { once: true })
  c1.socket.send(ack(2))
  c1.socket.send('go')
  await waitFor(() => c1.frames.length === 5, 3000, 'm4 written after the ack')
  t.equal(c1.frames[4], 'm4')
  await cut(0)
  ws.send('m5')

  // A welcome naming another session, even one saying resumed, loses the client's: what the server had not
  // acknowledged is reported, what was queued and never sent goes to the new session.
  const c2 = await welcome(1, { session: B, token: S2, resumed: true, n: 0 })
  t.same(c2.offered, [PROTOCOL, resumeToken(A, S1, 1)])
  t.same(lost, [['m3', 'm4']])
  await waitFor(() => c2.frames.length === 2, 3000, 'm5 in the new session')
  t.same(c2.frames, [ack(0), 'm5'])
  await cut(1)

  // The same id in a welcome that does not say resumed: a new session all the same.
  const c3 = await welcome(2, { session: B, token: S3 })
  t.same(c3.offered, [PROTOCOL, resumeToken(B, S2, 0)])
  t.same(lost, [['m3', 'm4'], ['m5']])
  // 4800 ends the session at once: the next attempt offers no resume.
  await cut(2, 4800)
  t.same(lost, [['m3', 'm4'], ['m5'], []])

  // A welcome without a session: its token is not kept, and not acknowledged.
  const c4 = await welcome(3, { token: S4 })
  t.same(c4.offered, [PROTOCOL])
  ws.send('m6')
  await waitFor(() => c4.frames.includes('m6'), 3000, 'm6')
  t.same(c4.frames, ['m6'], 'nothing but the message')
  // 4800 without a session loses nothing.
  await cut(3, 4800)
  const c5 = await welcome(4, {})
  t.same(c5.offered, [PROTOCOL])
  t.equal(lost.length, 3, 'no sessionlost without a session')
})

t.test("a 'sessionlost' listener that closes the client: the connection is not made ready, nothing reconnects", async (t) => {
  const { url, conns } = await scripted(t)
  const ws = new ReliableWebSocket(url, { WebSocket, heartbeat: false, backoff: { initialDelayMs: 20, jitter: 'none' } })
  let opens = 0
  ws.addEventListener('open', () => { opens++ })
  ws.addEventListener('sessionlost', () => ws.close())
  await waitFor(() => conns.length === 1, 3000, 'connection 1')
  conns[0].socket.send(encodeControl({ t: 'welcome', session: A, token: S1 }))
  await waitFor(() => opens === 1, 3000, 'open')
  conns[0].socket.terminate()
  await waitFor(() => conns.length === 2, 3000, 'connection 2')
  const closed = once(ws as any, 'close')
  conns[1].socket.send(encodeControl({ t: 'welcome', session: B, token: S2 }))
  const [event] = await closed as [ReliableCloseEvent]
  t.equal(event.willReconnect, false)
  t.equal(opens, 1, 'no open after close()')
  t.equal(ws.readyState, ws.CLOSED)
})

t.test('the one timer fires once per deadline, not in a loop; a connect timeout is an unclean close', async (t) => {
  const url = await tcpServer(t, true)
  const real = globalThis.setTimeout
  let timers = 0
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => { timers++; return real(...args) }) as typeof setTimeout
  t.teardown(() => { globalThis.setTimeout = real })
  const started = Date.now()
  const ws = new ReliableWebSocket(url, { WebSocket, connectTimeoutMs: 200, shouldReconnect: () => false })
  const [event] = await once(ws as any, 'close') as [ReliableCloseEvent]
  const count = timers
  globalThis.setTimeout = real
  t.ok(Date.now() - started >= 190, 'not before the timeout')
  t.same([event.code, event.reason, event.wasClean], [1006, 'Connect timeout', false])
  // The connect timeout is one timer; a timer re-armed in a loop until its deadline would be hundreds.
  t.ok(count <= 10, `${count} timers`)
})

t.test("close() in a 'reconnecting' listener leaves no timer behind", async (t) => {
  const url = await tcpServer(t, false)
  const ws = new ReliableWebSocket(url, { WebSocket, backoff: { initialDelayMs: 20, jitter: 'none' } })
  ws.addEventListener('error', () => {})
  ws.addEventListener('reconnecting', () => ws.close())
  const closes: boolean[] = []
  ws.addEventListener('close', (event) => closes.push((event as ReliableCloseEvent).willReconnect))
  await waitFor(() => closes.length === 2, 3000, 'the close that reconnects, then the application close')
  t.same(closes, [true, false])
  t.equal(ws.readyState, ws.CLOSED)
  // A timer left armed would fire here on a client with no socket.
  await sleep(100)
  t.equal(ws.readyState, ws.CLOSED)
})

t.test('a server that answers every ping keeps the connection past the ping timeout', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const ws = new ReliableWebSocket(url('/ws'), { WebSocket, heartbeat: { intervalMs: 20, timeoutMs: 1000 } })
  t.teardown(() => ws.close())
  let closes = 0
  ws.addEventListener('close', () => { closes++ })
  await once(ws as any, 'open')
  // A ping goes out after 20 ms of silence; its timeout, a second later, finds it answered (a pong held up a
  // whole second by a stalled event loop would fail this, not a slow one).
  await sleep(1500)
  t.equal(closes, 0)
  t.equal(ws.readyState, ws.OPEN)
})

t.test('a page waking the client: nothing while it connects, no ping without the subprotocol or with heartbeat off', async (t) => {
  const { wake } = page(t)
  const hold = await tcpServer(t, true)
  const connecting = new ReliableWebSocket(hold, { WebSocket, connectTimeoutMs: 200, shouldReconnect: () => false })
  connecting.addEventListener('error', () => {})
  const timedOut = once(connecting as any, 'close')
  wake()
  const [event] = await timedOut as [ReliableCloseEvent]
  t.equal(event.reason, 'Connect timeout', 'the connect timeout still runs after a wake')

  const plainFrames: string[] = []
  const { app, url: plainUrl } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data: Buffer) => plainFrames.push(data.toString()))
    })
  })
  t.teardown(() => app.close())
  const { url: frameUrl, conns } = await scripted(t)
  // Heartbeats that would be due by the time of the wake, were they run without the subprotocol.
  const plain = new ReliableWebSocket(plainUrl('/ws'), { WebSocket, subprotocol: false, heartbeat: { intervalMs: 1, timeoutMs: 1000 } })
  t.teardown(() => plain.close())
  const framed = new ReliableWebSocket(frameUrl, { WebSocket, heartbeat: false })
  t.teardown(() => framed.close())
  await once(plain as any, 'open')
  await waitFor(() => conns.length === 1, 3000, 'the framed connection')
  const opened = once(framed as any, 'open')
  conns[0].socket.send(encodeControl({ t: 'welcome' }))
  await opened
  await sleep(10)
  wake()
  framed.send('after')
  plain.send('after')
  await waitFor(() => conns[0].frames.includes('after') && plainFrames.includes('after'), 3000, 'after')
  t.same(conns[0].frames, ['after'], 'heartbeat off: no ping')
  t.same(plainFrames, ['after'], 'no subprotocol: no ping')
})

t.test("in a page, a client that gives up lets go of the page's events", async (t) => {
  const { listening } = page(t)
  const url = await tcpServer(t, false)
  const ws = new ReliableWebSocket(url, { WebSocket, shouldReconnect: () => false })
  ws.addEventListener('error', () => {})
  t.same(listening().sort(), ['document:visibilitychange', 'window:online'])
  await once(ws as any, 'giveup')
  t.same(listening(), [])
})

t.test('a message sent while the socket closes is counted in bufferedAmount and goes on the next connection', async (t) => {
  const received: string[] = []
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data: Buffer) => received.push(data.toString()))
    })
  })
  t.teardown(() => app.close())
  const sockets: WebSocket[] = []
  class Recorded extends WebSocket {
    constructor (...args: ConstructorParameters<typeof WebSocket>) {
      super(...args)
      sockets.push(this)
    }
  }
  const ws = new ReliableWebSocket(url('/ws'), { WebSocket: Recorded, backoff: { initialDelayMs: 20, jitter: 'none' } })
  t.teardown(() => ws.close())
  ws.send('a')
  ws.send('b')
  await once(ws as any, 'open')
  sockets[0].close()
  t.equal(ws.send('abc'), true)
  t.equal(ws.bufferedAmount - sockets[0].bufferedAmount, 3, 'the queued message counts')
  await waitFor(() => received.includes('abc'), 3000, 'abc on the next connection')
  t.same(received, ['a', 'b', 'abc'])
})

t.test('a page waking the client while its ping is unanswered re-arms the one timer for the ping deadline, not in a loop', async (t) => {
  const { wake } = page(t)
  const { url, conns } = await scripted(t)
  const ws = new ReliableWebSocket(url, { WebSocket, heartbeat: { intervalMs: 20, timeoutMs: 5000 } })
  t.teardown(() => ws.close())
  await waitFor(() => conns.length === 1, 3000, 'connection')
  const opened = once(ws as any, 'open')
  conns[0].socket.send(encodeControl({ t: 'welcome' }))
  await opened
  // The server never answers: the ping stays out for five seconds.
  await waitFor(() => conns[0].frames.length === 1, 3000, 'the ping')
  const real = globalThis.setTimeout
  let timers = 0
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => { timers++; return real(...args) }) as typeof setTimeout
  t.teardown(() => { globalThis.setTimeout = real })
  wake()
  await new Promise((resolve) => real(resolve, 200))
  globalThis.setTimeout = real
  t.ok(timers <= 5, `${timers} timers in 200 ms`)
  t.equal(ws.readyState, ws.OPEN, 'the ping deadline is not yet reached')
})
