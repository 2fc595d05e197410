// The reconnecting client against the plugin over real sockets (ws as the WebSocket class, as in Node 20).
import t from 'tap'
import { once } from 'node:events'
import net from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import type { FastifyInstance } from 'fastify'
import { DropEvent, GiveUpEvent, PROTOCOL, ReconnectingEvent, ReliableCloseEvent, ReliableWebSocket } from '../../lib/client'
import type { ReliableWebSocketOptions } from '../../lib/client'
import { FaultProxy } from '../helpers/fault-proxy'
import { loopDelay, sleep, start, subprotocolServer, waitFor } from '../helpers/helpers'

type Log = Array<[string, ...unknown[]]>

/** A client on ws with short delays, and a log of every event it fires. */
function client (url: string, options: ReliableWebSocketOptions = {}): { ws: ReliableWebSocket, log: Log, received: unknown[] } {
  const ws = new ReliableWebSocket(url, {
    WebSocket,
    connectTimeoutMs: 2000,
    ...options,
    backoff: { initialDelayMs: 30, maxDelayMs: 100, ...options.backoff }
  })
  const log: Log = []
  const received: unknown[] = []
  ws.addEventListener('open', () => log.push(['open']))
  ws.addEventListener('message', (event) => received.push(event.data))
  // Each event is checked to be of its exported class, so a listener can rely on `instanceof`.
  const typed = <E>(event: E, type: new (...args: any[]) => E): E => {
    if (!(event instanceof type)) throw new Error(`${String(event)} is not a ${type.name}`)
    return event
  }
  ws.addEventListener('close', (e) => log.push(['close', typed(e, ReliableCloseEvent).code, e.reason, e.willReconnect]))
  ws.addEventListener('reconnecting', (e) => log.push(['reconnecting', typed(e, ReconnectingEvent).attempt, e.code]))
  ws.addEventListener('reconnected', () => log.push(['reconnected']))
  ws.addEventListener('giveup', (e) => log.push(['giveup', typed(e, GiveUpEvent).reason, e.code]))
  ws.addEventListener('drop', (e) => log.push(['drop', typed(e, DropEvent).reason, e.data]))
  return { ws, log, received }
}

/** An echo route that also obeys "close:<code>" and records every message in arrival order. */
async function echoServer (t: { teardown: (fn: () => unknown) => void }, options = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, port: number, seen: string[] }> {
  const seen: string[] = []
  const server = await start(options, (app) => {
    app.get('/echo', { websocket: true }, (socket) => {
      socket.on('message', (data: Buffer, isBinary: boolean) => {
        const text = data.toString()
        if (!isBinary && text.startsWith('close:')) return socket.close(Number(text.slice(6)), 'asked')
        if (!isBinary) seen.push(text)
        socket.send(data, { binary: isBinary })
      })
    })
  })
  t.teardown(() => server.app.close())
  return { ...server, seen }
}

/** A ws server speaking the subprotocol by hand, so a test sees the client's control frames too. */
async function protocolServer (t: { teardown: (fn: () => unknown) => void }): Promise<{ url: (path: string) => string, seen: string[], mute: { on: boolean }, chatter: { on: boolean } }> {
  const mute = { on: false }
  // While on, every client gets a message every 30 ms.
  const chatter = { on: false }
  const talk = setInterval(() => { if (chatter.on) for (const c of server.clients) c.send('news') }, 30)
  t.teardown(() => clearInterval(talk))
  const server = await subprotocolServer(t)
  const seen: string[] = []
  server.on('connection', (socket) => {
    socket.send('\u0000{"t":"welcome"}')
    socket.on('message', (data) => {
      const text = data.toString()
      seen.push(text)
      if (text.startsWith('close:')) socket.close(Number(text.slice(6)))
      else if (text === '\u0000{"t":"ping"}' && !mute.on) socket.send('\u0000{"t":"pong"}')
    })
  })
  return { url: (path) => `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}${path}`, seen, mute, chatter }
}

function closed (ws: ReliableWebSocket): Promise<unknown> {
  return once(ws as any, 'close')
}

t.test('opens on the subprotocol and carries text, binary and text that starts with U+0000', async (t) => {
  const { url } = await echoServer(t)
  const { ws, received } = client(url('/echo'))
  t.equal(ws.readyState, ReliableWebSocket.CONNECTING)
  await once(ws as any, 'open')
  t.equal(ws.readyState, ws.OPEN)
  t.equal(ws.protocol, PROTOCOL)
  t.equal(ws.extensions, '')
  t.equal(ws.url, url('/echo'))
  ws.binaryType = 'arraybuffer'
  t.equal(ws.binaryType, 'arraybuffer')
  ws.send('hello')
  ws.send(new Uint8Array([0, 1, 2]))
  ws.send('\u0000starts with the mark')
  ws.sendJSON({ a: 1 })
  await waitFor(() => received.length === 4, 2000, 'echoes')
  t.equal(received[0], 'hello')
  t.same([...new Uint8Array(received[1] as ArrayBuffer)], [0, 1, 2])
  t.equal(received[2], '\u0000starts with the mark', 'escaped on the way out and back, unescaped for the app')
  t.equal(received[3], '{"a":1}')
  ws.close(1000, 'done')
  await closed(ws)
  t.equal(ws.readyState, ws.CLOSED)
})

t.test('reconnects after a retryable close; what was sent meanwhile arrives once, in order', async (t) => {
  const { url, seen } = await echoServer(t)
  const { ws, log } = client(url('/echo'))
  await once(ws as any, 'open')
  ws.send('before')
  ws.send('close:1012')
  await once(ws as any, 'reconnecting')
  t.equal(ws.readyState, ws.CONNECTING, 'waiting for the next attempt counts as connecting')
  for (const text of ['a', 'b', 'c']) t.ok(ws.send(text), `${text} queued`)
  t.equal(ws.bufferedAmount, 3, 'queued bytes count in bufferedAmount')
  await once(ws as any, 'reconnected')
  await waitFor(() => seen.length === 4, 2000, 'queued messages')
  t.same(seen, ['before', 'a', 'b', 'c'])
  t.same(log, [['open'], ['close', 1012, 'asked', true], ['reconnecting', 1, 1012], ['open'], ['reconnected']])
  ws.close()
  await closed(ws)
})

t.test('a final close code gives up; what is queued or sent after is dropped, visibly', async (t) => {
  const { url } = await echoServer(t)
  const { ws, log } = client(url('/echo'))
  await once(ws as any, 'open')
  ws.send('close:1008')
  await once(ws as any, 'giveup')
  t.equal(ws.readyState, ws.CLOSED)
  t.notOk(ws.send('late'), 'send after giving up returns false')
  t.same(log, [['open'], ['close', 1008, 'asked', false], ['giveup', 'closeCode', 1008], ['drop', 'closed', 'late']])
  t.equal(ws.protocol, '', 'no connection, no protocol')
  t.equal(ws.extensions, '')
  t.equal(ws.binaryType, 'blob', "no connection and none chosen: the browser's default")
})

t.test('binaryType carries over to the next connection; close() from a close listener stops the reconnection', async (t) => {
  const { url } = await echoServer(t)
  const { ws, log, received } = client(url('/echo'))
  t.equal(ws.binaryType, 'nodebuffer', "until one is chosen, the socket's own")
  await once(ws as any, 'open')
  ws.binaryType = 'arraybuffer'
  ws.send('close:1012')
  await once(ws as any, 'reconnected')
  ws.send(new Uint8Array([7]))
  await waitFor(() => received.length === 1, 2000, 'binary echo')
  t.type(received[0], ArrayBuffer, 'the new connection delivers ArrayBuffers too')
  ws.addEventListener('close', (event) => { if (event.willReconnect) ws.close() })
  ws.send('close:1012')
  await waitFor(() => ws.readyState === ws.CLOSED, 2000, 'closed')
  await sleep(100)
  t.notOk(log.slice(5).some(([type]) => type === 'reconnecting' || type === 'open'), 'no further attempt')
  t.same(log.slice(-2), [['close', 1012, 'asked', true], ['close', 1000, '', false]])
})

t.test('shouldReconnect overrides the table', async (t) => {
  const { url } = await echoServer(t)
  const codes: number[] = []
  const { ws, log } = client(url('/echo'), { shouldReconnect: ({ code }) => { codes.push(code); return code === 4001 } })
  await once(ws as any, 'open')
  ws.send('close:4001')
  await once(ws as any, 'reconnected')
  ws.send('close:1001')
  await once(ws as any, 'giveup')
  t.same(codes, [4001, 1001])
  t.same(log.filter(([type]) => type === 'giveup'), [['giveup', 'closeCode', 1001]])
})

t.test('gives up after maxRetries failed attempts in a row', async (t) => {
  const unused = net.createServer()
  unused.listen(0, '127.0.0.1')
  await once(unused, 'listening')
  const port = (unused.address() as net.AddressInfo).port
  await new Promise((resolve) => unused.close(resolve))
  const { ws, log } = client(`ws://127.0.0.1:${port}/`, { backoff: { maxRetries: 3, initialDelayMs: 5 } })
  let errors = 0
  ws.onerror = () => { errors++ }
  await once(ws as any, 'giveup')
  t.same(log.filter(([type]) => type === 'reconnecting').map(([, attempt]) => attempt), [1, 2, 3])
  t.same(log.at(-1), ['giveup', 'maxRetries', 1006])
  t.equal(errors, 4, "each refused attempt fires 'error'")
})

t.test('an attempt that never opens is abandoned after connectTimeoutMs', async (t) => {
  const accepted = new Set<net.Socket>()
  const silent = net.createServer((socket) => { accepted.add(socket); socket.on('error', () => {}) })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => { for (const socket of accepted) socket.destroy(); silent.close() })
  const started = Date.now()
  const { ws, log } = client(`ws://127.0.0.1:${(silent.address() as net.AddressInfo).port}/`, { connectTimeoutMs: 100 })
  await once(ws as any, 'reconnecting')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 95 && elapsed < 1500, `abandoned after ${elapsed} ms`)
  t.same(log[0], ['close', 1006, 'Connect timeout', true])
  ws.close()
  t.same(log.at(-1), ['close', 1000, '', false], 'close() between attempts ends at once')
  t.equal(ws.readyState, ws.CLOSED)
  ws.close()
  t.equal(log.length, 3, 'a second close() does nothing')

  // A browser's WebSocket has no terminate(): the attempt is closed instead.
  class BrowserLike extends WebSocket {}
  Object.defineProperty(BrowserLike.prototype, 'terminate', { value: undefined })
  const browser = client(`ws://127.0.0.1:${(silent.address() as net.AddressInfo).port}/`, { connectTimeoutMs: 50, WebSocket: BrowserLike as any })
  await once(browser.ws as any, 'reconnecting')
  t.same(browser.log[0], ['close', 1006, 'Connect timeout', true])
  browser.ws.close()
})

t.test('a half-open server is found within interval + timeout, and the client reconnects', async (t) => {
  const lag = loopDelay()
  const { port } = await echoServer(t)
  const proxy = await FaultProxy.start(port)
  t.teardown(() => proxy.close())
  const { ws, log } = client(proxy.url('/echo'), { heartbeat: { intervalMs: 100, timeoutMs: 100 } })
  await once(ws as any, 'open')
  await sleep(250) // a few heartbeats over a healthy link first
  t.equal(ws.readyState, ws.OPEN, 'a quiet but live server is not taken for dead')
  proxy.freeze()
  const frozenAt = Date.now()
  await once(ws as any, 'close')
  const elapsed = Date.now() - frozenAt
  const held = lag()
  t.ok(elapsed <= 200 + 300 + held, `found dead ${elapsed} ms after the path went silent (bound 200 ms + scheduling)`)
  t.same(log[1], ['close', 1006, 'Heartbeat timeout', true])
  proxy.frozen = false
  await once(ws as any, 'reconnected')
  ws.send('through again')
  await waitFor(() => log.length > 0 && ws.bufferedAmount === 0, 1000, 'sent')
  ws.close()
  await closed(ws)
})

t.test('application close() while the server is unreachable ends after connectTimeoutMs', async (t) => {
  const { port } = await echoServer(t)
  const proxy = await FaultProxy.start(port)
  t.teardown(() => proxy.close())
  const { ws, log } = client(proxy.url('/echo'), { connectTimeoutMs: 150, heartbeat: false })
  await once(ws as any, 'open')
  proxy.freeze()
  ws.send('queued? no: sent into the frozen link')
  ws.close(4000, 'bye')
  t.equal(ws.readyState, ws.CLOSING)
  t.notOk(ws.send('after close'), 'refused while closing')
  await closed(ws)
  t.same(log.slice(-2), [['drop', 'closed', 'after close'], ['close', 1006, 'Close timeout', false]])
  t.throws(() => ws.close(1001), RangeError, 'a browser may only close with 1000 or 3000-4999')
})

t.test('a full queue refuses the newest message and says so', async (t) => {
  const { url } = await echoServer(t)
  const { ws, log } = client(url('/echo'), { queue: { maxMessages: 2 } })
  t.ok(ws.send('one'))
  t.ok(ws.send('two'))
  t.notOk(ws.send('three'))
  t.same(log, [['drop', 'queueFull', 'three']])
  ws.close()
  t.same(log.slice(1), [['drop', 'closed', 'one'], ['drop', 'closed', 'two']], 'close() drops what is still queued')
  await closed(ws)
})

t.test('a server that echoes the name back without speaking the subprotocol gets no heartbeats', async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => { for (const c of server.clients) c.terminate(); server.close(resolve) }))
  const frames: string[] = []
  server.on('connection', (socket) => socket.on('message', (data) => frames.push(data.toString())))
  const started = Date.now()
  const { ws } = client(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, { connectTimeoutMs: 150, heartbeat: { intervalMs: 30, timeoutMs: 30 } })
  await once(ws as any, 'open')
  t.ok(Date.now() - started >= 140, 'open once the welcome had had connectTimeoutMs to come')
  t.equal(ws.protocol, PROTOCOL, 'ws picked the first protocol offered')
  await sleep(200)
  t.equal(ws.readyState, ws.OPEN, 'no welcome, no heartbeat: never taken for dead')
  ws.send('plain')
  ws.send('\u0000not escaped')
  await waitFor(() => frames.length === 2, 1000, 'message')
  t.same(frames, ['plain', '\u0000not escaped'], 'no ping ever reached it, and text went as it was')
  ws.close()
  await closed(ws)
})

t.test('subprotocol: false offers only the application protocols', async (t) => {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const offered: string[] = []
  server.on('connection', (_socket, request) => offered.push(String(request.headers['sec-websocket-protocol'])))
  const { ws } = client(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, { subprotocol: false, protocols: 'chat' })
  await once(ws as any, 'open')
  t.same(offered, ['chat'])
  t.equal(ws.protocol, 'chat')
  ws.close()
  await closed(ws)
})

t.test('on<event> handlers run before listeners', async (t) => {
  const { url } = await echoServer(t)
  const order: string[] = []
  const { ws } = client(url('/echo'))
  ws.onopen = () => order.push('onopen')
  ws.addEventListener('open', () => order.push('listener'))
  const listener = (): void => { order.push('removed') }
  ws.addEventListener('open', listener)
  ws.removeEventListener('open', listener)
  await once(ws as any, 'open')
  t.same(order, ['onopen', 'listener'])
  ws.onclose = (event) => order.push(`onclose ${event.code}`)
  ws.close()
  await closed(ws)
  t.same(order.at(-1), 'onclose 1005')
})

t.test('a timer that fires before its wall-clock deadline waits out the rest', async (t) => {
  const { url } = await echoServer(t)
  const { ws, log } = client(url('/echo'), { backoff: { initialDelayMs: 100, maxDelayMs: 100, jitter: 'none' } })
  await once(ws as any, 'open')
  ws.send('close:1012')
  await once(ws as any, 'reconnecting')
  const realNow = Date.now
  // The clock steps back 80 ms just as the timer comes due.
  Date.now = () => realNow() - 80
  t.teardown(() => { Date.now = realNow })
  const started = realNow()
  await once(ws as any, 'open')
  Date.now = realNow
  const waited = realNow() - started
  t.ok(waited >= 150, `the attempt waited for the deadline by the clock (${waited} ms)`)
  t.same(log.slice(-2), [['open'], ['reconnected']])
  ws.close()
  await closed(ws)
})

t.test('in a page: coming back online or visible tries at once and checks the heartbeat', async (t) => {
  const { url, seen, mute } = await protocolServer(t)
  // The two things the client looks for in a browser page, on a stand-in page.
  const page = new EventTarget()
  const document = Object.assign(new EventTarget(), { visibilityState: 'visible' })
  const g = globalThis as any
  Object.assign(g, { addEventListener: page.addEventListener.bind(page), removeEventListener: page.removeEventListener.bind(page), document })
  t.teardown(() => { delete g.addEventListener; delete g.removeEventListener; delete g.document })

  const { ws, log } = client(url('/echo'), { backoff: { initialDelayMs: 60_000, maxDelayMs: 60_000, jitter: 'none' }, heartbeat: { intervalMs: 60_000, timeoutMs: 60_000 } })
  await once(ws as any, 'open')
  ws.send('close:1012')
  await once(ws as any, 'reconnecting')
  document.visibilityState = 'hidden'
  document.dispatchEvent(new Event('visibilitychange'))
  await sleep(50)
  t.equal(log.at(-1)?.[0], 'reconnecting', 'a hidden page does not hurry')
  document.visibilityState = 'visible'
  const started = Date.now()
  page.dispatchEvent(new Event('online'))
  await once(ws as any, 'reconnected')
  t.ok(Date.now() - started < 1000, 'back online: reconnected without waiting the minute')

  // Open, with a heartbeat deadline a minute off: waking checks it against the clock now.
  const before = seen.length
  const realNow = Date.now
  Date.now = () => realNow() + 61_000
  try {
    document.dispatchEvent(new Event('visibilitychange'))
  } finally {
    Date.now = realNow
  }
  await waitFor(() => seen.length > before, 1000, 'a ping')
  t.same(seen.slice(before), ['\u0000{"t":"ping"}'], 'the overdue ping went out at once')

  // A ping the server has not answered yet: waking keeps waiting for it, up to timeoutMs.
  mute.on = true
  const patient = client(url('/'), { heartbeat: { intervalMs: 50, timeoutMs: 10_000 } })
  await waitFor(() => seen.filter((text) => text === '\u0000{"t":"ping"}').length === 2, 2000, 'an unanswered ping')
  document.dispatchEvent(new Event('visibilitychange'))
  await sleep(100)
  t.equal(patient.ws.readyState, ws.OPEN, 'still open')
  t.equal(seen.filter((text) => text === '\u0000{"t":"ping"}').length, 2, 'and no second ping')
  patient.ws.close()
  ws.close()
  await closed(ws)
  page.dispatchEvent(new Event('online'))
  t.equal(ws.readyState, ws.CLOSED, 'a closed client no longer listens to the page')
})

t.test('a server that keeps talking is never pinged', async (t) => {
  const { url, seen, chatter } = await protocolServer(t)
  // Ten times the chatter's period, so that a loaded machine delaying a message or two does not open a silence.
  const { ws } = client(url('/'), { heartbeat: { intervalMs: 300, timeoutMs: 300 } })
  await once(ws as any, 'open')
  chatter.on = true
  await sleep(900)
  chatter.on = false
  t.same(seen.filter((text) => text.includes('"ping"')), [], 'its messages are signs of life enough')
  t.equal(ws.readyState, ws.OPEN)
  ws.close()
  await closed(ws)
})

t.test('without a session, what was queued offline is sent once: later reconnections do not send it again', async (t) => {
  const { url, seen } = await echoServer(t)
  const { ws } = client(url('/echo'))
  await once(ws as any, 'open')
  ws.send('close:1012')
  await once(ws as any, 'reconnecting')
  ws.send('queued 1')
  ws.send('queued 2')
  await once(ws as any, 'reconnected')
  for (let i = 0; i < 2; i++) {
    ws.send('close:1012')
    await once(ws as any, 'reconnected')
  }
  ws.send('last')
  await waitFor(() => seen.includes('last'), 2000, 'the last message')
  t.same(seen, ['queued 1', 'queued 2', 'last'], 'each once, through three reconnections')
  t.equal(ws.bufferedAmount, 0, 'nothing left queued')
  ws.close()
  await closed(ws)
})

t.test('giving up drops what is still queued, each message reported', async (t) => {
  const { app, url } = await start({}, (app) => {
    app.get('/down', { websocket: true, onRequest: (_request, reply, done) => { reply.code(503).send(); done() } }, () => {})
  })
  t.teardown(() => app.close())
  const { ws, log } = client(url('/down'), { backoff: { maxRetries: 2, initialDelayMs: 5 } })
  ws.send('one')
  ws.send('two')
  await once(ws as any, 'giveup')
  t.same(log.filter(([type]) => type === 'drop'), [['drop', 'closed', 'one'], ['drop', 'closed', 'two']])
  t.equal(ws.bufferedAmount, 0)
})

t.test('the retry count starts again after a connection that stayed up minUptimeMs, and only then', async (t) => {
  const { url } = await echoServer(t)
  const UPTIME = 1000
  const { ws, log } = client(url('/echo'), { backoff: { minUptimeMs: UPTIME, initialDelayMs: 5, maxDelayMs: 20 } })
  const attempts = (): unknown[] => log.filter(([type]) => type === 'reconnecting').map(([, attempt]) => attempt)
  await once(ws as any, 'open')
  ws.send('close:1012')
  await once(ws as any, 'reconnected')
  ws.send('close:1012') // up for a round trip: far less than minUptimeMs
  await once(ws as any, 'reconnected')
  t.same(attempts(), [1, 2], 'short-lived connections keep counting')
  await sleep(UPTIME + 100)
  ws.send('close:1012')
  await once(ws as any, 'reconnected')
  t.same(attempts(), [1, 2, 1], 'a connection that stayed up minUptimeMs starts the count again')
  ws.close()
  await closed(ws)
})

t.test("a Retry-After sets the next attempt's delay only; the one after follows the backoff again", async (t) => {
  let requests = 0
  const { app, url } = await start({}, (app) => {
    app.get('/ws', {
      websocket: true,
      onRequest: (_request, reply, done) => {
        requests++
        if (requests === 1) reply.code(503).header('retry-after', '0.3').send()
        done()
      }
    }, (socket) => {
      // The second connection (the first accepted) closes at once: a failure with no hint of its own.
      if (requests === 2) socket.close(1012)
    })
  })
  t.teardown(() => app.close())
  const { ws } = client(url('/ws'), { backoff: { initialDelayMs: 20, maxDelayMs: 20 } })
  const delays: number[] = []
  ws.addEventListener('reconnecting', (event) => delays.push(event.delayMs))
  await once(ws as any, 'reconnected')
  t.equal(delays.length, 2)
  t.equal(delays[0], 300, 'the hint')
  t.ok(delays[1] < 20, `then the backoff: ${delays[1]} ms`)
  ws.close()
  await closed(ws)
})
