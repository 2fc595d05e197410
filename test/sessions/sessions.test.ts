// Resumable sessions end to end: the plugin with `resume`, the client, and a proxy that cuts the connection.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { ReliableWebSocket, SessionLostEvent } from '../../lib/client'
import type { ReliableWebSocketOptions } from '../../lib/client'
import { PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
import { FaultProxy } from '../helpers/fault-proxy'
import { closeEvent, sleep, start, subprotocolServer, waitFor } from '../helpers/helpers'

type Teardown = { teardown: (fn: () => unknown) => void }
interface Handled { id: string, resumed: boolean }

/** A route with sessions that records what its handler saw and every message its app received. */
async function sessionServer (t: Teardown, resume: object | true = true, options = {}): Promise<{ app: FastifyInstance, port: number, handled: Array<Handled | null>, received: unknown[] }> {
  const handled: Array<Handled | null> = []
  const received: unknown[] = []
  const server = await start(options, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume } } }, (socket) => {
      const session = socket.session
      handled.push(session === null ? null : { id: session.id, resumed: session.resumed })
      socket.on('message', (data: Buffer, isBinary: boolean) => {
        received.push(isBinary ? [...data] : data.toString())
        const text = data.toString()
        if (text.startsWith('echo:')) socket.send(text.slice(5))
      })
    })
    app.get('/other', { websocket: true, config: { reliable: { resume } } }, () => {})
  })
  t.teardown(() => server.app.close())
  return { app: server.app, port: server.port, handled, received }
}

// No slow phase: with retries every few ms, cuts every few ms can fail ten upgrades in a row within a tenth of a second.
function client (url: string, options: ReliableWebSocketOptions = {}): { ws: ReliableWebSocket, received: unknown[], lost: SessionLostEvent[] } {
  const ws = new ReliableWebSocket(url, { WebSocket, ...options, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity, ...options.backoff } })
  const received: unknown[] = []
  const lost: SessionLostEvent[] = []
  ws.addEventListener('message', (event) => received.push(typeof event.data === 'string' ? event.data : [...new Uint8Array(event.data)]))
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  return { ws, received, lost }
}

async function proxied (t: Teardown, port: number): Promise<FaultProxy> {
  const proxy = await FaultProxy.start(port)
  t.teardown(() => proxy.close())
  return proxy
}

t.test('a session begins with the connection; the handler and the client both see it', async (t) => {
  const { app, port, handled } = await sessionServer(t)
  const { ws } = client(`ws://127.0.0.1:${port}/s`)
  await once(ws as any, 'open')
  t.equal(handled.length, 1)
  t.match(handled[0], { id: /^[0-9a-f]{32}$/, resumed: false })
  t.equal(ws.session, handled[0]!.id)
  t.equal(app.wsStats.sessions.active, 1)
  t.equal(app.wsSessions.get(handled[0]!.id)?.connected, true)
  ws.close()
  await once(ws as any, 'close')
})

t.test('a plain client on a route with sessions has none, and works as before', async (t) => {
  const { app, port, handled } = await sessionServer(t)
  const plain = new WebSocket(`ws://127.0.0.1:${port}/s`)
  const seen: string[] = []
  plain.on('message', (data) => seen.push(data.toString()))
  await once(plain, 'open')
  plain.send('echo:plain')
  await waitFor(() => seen.length === 1, 2000, 'echo')
  t.same(handled, [null], 'socket.session is null')
  t.same(seen, ['plain'], 'no welcome, no control frames')
  t.equal(app.wsStats.sessions.active, 0)
  plain.close()
})

t.test('after a cut the client resumes: what either side sent meanwhile arrives once, in order', async (t) => {
  const { app, port, handled, received } = await sessionServer(t)
  const proxy = await proxied(t, port)
  const { ws, received: got, lost } = client(proxy.url('/s'))
  await once(ws as any, 'open')
  ws.send('echo:a')
  await waitFor(() => got.length === 1, 2000, 'first echo')
  const id = ws.session!

  proxy.refuse = true
  proxy.cut()
  await once(ws as any, 'close')
  await waitFor(() => app.wsSessions.get(id)?.connected === false, 2000, 'the server to notice')
  const session = app.wsSessions.get(id)!
  t.ok(session.send('while away 1'), 'the app sends to a session whose client is away')
  t.ok(session.send(Buffer.from([1, 2, 3])))
  t.ok(session.send(Buffer.from('a buffer sent as text'), { binary: false }))
  t.ok(ws.send('queued 1'))
  ws.send(new Uint8Array([9]))
  proxy.refuse = false

  await once(ws as any, 'reconnected')
  t.equal(ws.session, id, 'same session')
  await waitFor(() => got.length === 4 && received.length === 3, 2000, 'replay and resend')
  t.same(got, ['a', 'while away 1', [1, 2, 3], 'a buffer sent as text'], 'the replay kept text as text and binary as binary')
  t.same(received, ['echo:a', 'queued 1', [9]])
  t.same(handled.map((h) => h!.resumed), [false, true], 'the handler ran again, told it is a resumption')
  t.same(lost, [])
  const stats = app.wsStats.sessions
  t.equal(stats.resumed, 1)
  t.equal(stats.replayed, 3)
  t.equal(stats.active, 1)
  ws.close()
  await once(ws as any, 'close')
})

t.test('10,000 messages each way through 20 random cuts: each delivered exactly once, in order', async (t) => {
  const TOTAL = 10_000
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 100_000)
  t.comment(`FUZZ_SEED=${seed}`)
  let state = seed
  const random = (): number => { state = (state * 1103515245 + 12345) % 2147483648; return state / 2147483648 }

  const fromClient: string[] = []
  let serverSession: any = null
  const server = await start({}, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { maxBufferedMessages: 5000, maxBufferedBytes: 1 << 24 } } } }, (socket) => {
      serverSession = socket.session
      socket.on('message', (data: Buffer) => fromClient.push(data.toString()))
    })
  })
  t.teardown(() => server.app.close())
  const proxy = await proxied(t, server.port)
  const { ws, received: fromServer, lost } = client(proxy.url('/s'), { queue: { maxMessages: 5000 } })
  await once(ws as any, 'open')

  // Both sides keep sending, cuts or not, each within its window.
  let clientSent = 0
  let serverSent = 0
  const pump = setInterval(() => {
    for (let i = 0; i < 25 && clientSent < TOTAL; i++) {
      if (!ws.send(`c${clientSent}`)) break
      clientSent++
    }
    for (let i = 0; i < 25 && serverSent < TOTAL && serverSession.unacknowledged < 4000; i++) {
      if (!serverSession.send(`s${serverSent}`)) throw new Error('server session refused a message')
      serverSent++
    }
  }, 2)
  t.teardown(() => clearInterval(pump))
  // Only cuts of a live connection in the middle of the transfer count.
  let cuts = 0
  const deadline = Date.now() + 30_000
  while ((fromClient.length < TOTAL || fromServer.length < TOTAL) && Date.now() < deadline) {
    // Each cut comes 5-30 ms into a connection: on a machine too busy to reconnect within a pause, cuts at a fixed
    // pace would land in handshakes only, and nothing would move.
    await waitFor(() => ws.readyState === ws.OPEN, 10_000, 'the reconnection')
    await sleep(5 + random() * 25)
    if (fromClient.length < TOTAL || fromServer.length < TOTAL) cuts += proxy.cut() > 0 ? 1 : 0
  }
  clearInterval(pump)
  await waitFor(() => fromClient.length >= TOTAL && fromServer.length >= TOTAL, 10_000, 'everything')
  t.ok(cuts >= 20, `${cuts} cuts`)
  const expected = (prefix: string): string[] => Array.from({ length: TOTAL }, (_, i) => `${prefix}${i}`)
  t.equal(fromClient.length, TOTAL, 'the server app received 10,000 messages')
  t.ok(fromClient.every((text, i) => text === `c${i}`), 'client to server: each once, in order')
  t.equal(fromServer.length, TOTAL, 'the client app received 10,000 messages')
  t.ok(fromServer.every((text, i) => text === `s${i}`), 'server to client: each once, in order')
  if (fromClient.some((text, i) => text !== `c${i}`)) t.same(fromClient, expected('c'))
  t.same(lost, [], 'the session was never lost')
  // A cut during a handshake ends no session connection: count the connections resumed.
  t.ok(server.app.wsStats.sessions.resumed >= 20, `${server.app.wsStats.sessions.resumed} connections cut and resumed`)
  ws.close()
  await once(ws as any, 'close')
})

t.test('a client that resumes before the server noticed the drop takes its session over', async (t) => {
  const { app, port, handled, received } = await sessionServer(t)
  const proxy = await proxied(t, port)
  const disconnects: string[] = []
  app.websocketServer.on('connection', (socket: any) => socket.on('close', () => disconnects.push(socket.session === null ? 'detached' : 'attached')))
  const { ws, received: got } = client(proxy.url('/s'), { heartbeat: { intervalMs: 50, timeoutMs: 50 } })
  await once(ws as any, 'open')
  proxy.freeze() // the old path goes silent both ways; the server sees nothing
  ws.send('sent into the void')
  await once(ws as any, 'close')
  proxy.frozen = false
  await once(ws as any, 'reconnected')
  ws.send('echo:after')
  await waitFor(() => got.length === 1, 2000, 'echo')
  t.same(received, ['sent into the void', 'echo:after'], 'the message lost with the old path was resent, once')
  t.same(handled.map((h) => h!.resumed), [false, true])
  await waitFor(() => disconnects.length === 1, 2000, 'the old socket to end')
  t.same(disconnects, ['detached'], 'the old socket was cut loose from the session, then ended')
  t.equal(app.wsStats.sessions.active, 1)
  ws.close()
  await once(ws as any, 'close')
})

t.test('a session whose client stays away past ttlMs expires; the client is told and starts afresh', async (t) => {
  const { app, port, handled } = await sessionServer(t, { ttlMs: 100 })
  const proxy = await proxied(t, port)
  const { ws, lost } = client(proxy.url('/s'), { backoff: { initialDelayMs: 300, maxDelayMs: 300, jitter: 'none' } })
  await once(ws as any, 'open')
  const first = ws.session
  ws.send('echo:x') // written, maybe not acknowledged: its fate is reported
  await sleep(20)
  proxy.cut()
  await waitFor(() => app.wsStats.sessions.expired === 1, 3000, 'expiry')
  t.equal(app.wsSessions.get(first!), undefined)
  await once(ws as any, 'reconnected')
  t.not(ws.session, first, 'a new session')
  t.equal(lost.length, 1, "'sessionlost' fired once")
  t.type(lost[0], SessionLostEvent)
  t.same(lost[0].unconfirmed, ['echo:x'], 'with the message the server had not acknowledged')
  t.same(handled.map((h) => h!.resumed), [false, false])
  t.equal(app.wsStats.sessions.active, 1)
  ws.close()
  await once(ws as any, 'close')
})

t.test('a client that falls too far behind ends its session with 4800, and begins a new one', async (t) => {
  const { app, port } = await sessionServer(t, { maxBufferedMessages: 5 })
  const { ws, lost } = client(`ws://127.0.0.1:${port}/s`)
  const codes: number[] = []
  ws.addEventListener('close', (event) => codes.push(event.code))
  await once(ws as any, 'open')
  const session = app.wsSessions.get(ws.session!)!
  for (let i = 0; i < 4; i++) t.ok(session.send(`m${i}`))
  t.ok(session.sendJSON({ m: 4 }))
  t.throws(() => session.sendJSON(undefined), { code: 'FST_RELIABLE_WS_NOT_JSON' }, 'a value with no JSON form throws, as on a socket')
  t.notOk(session.send('one too many'), 'the sixth unacknowledged message ends the session')
  t.equal(session.ended, true)
  t.notOk(session.send('after'), 'an ended session sends nothing')
  await once(ws as any, 'reconnected')
  t.same(codes, [4800])
  t.equal(lost.length, 1)
  t.equal(app.wsStats.sessions.overflowed, 1)
  t.equal(app.wsStats.sessions.active, 1, 'the new one')

  ws.close()
  await once(ws as any, 'close')

  // A session overflowing while its client is away ends too; the client finds out when it comes back.
  const raw = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
  const [welcome] = await once(raw, 'message')
  const away = app.wsSessions.get(JSON.parse(welcome.toString().slice(1)).session)!
  raw.terminate()
  await waitFor(() => !away.connected, 2000, 'the server to notice')
  for (let i = 0; i < 5; i++) t.ok(away.send(`queued ${i}`))
  t.notOk(away.send('one too many'))
  t.equal(away.ended, true)
  t.equal(app.wsStats.sessions.overflowed, 2)
})

t.test('resume requests that do not fit get a fresh session', async (t) => {
  const { app, port, handled } = await sessionServer(t)
  const welcome = async (path: string, token?: string): Promise<any> => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, token === undefined ? PROTOCOL : [PROTOCOL, token])
    const [data] = await once(ws, 'message')
    ws.close()
    return JSON.parse(data.toString().slice(1))
  }
  const first = await welcome('/s')
  t.match(first, { t: 'welcome', session: /^[0-9a-f]{32}$/, resumed: false, n: 0 })
  await waitFor(() => app.wsSessions.get(first.session)?.connected === false, 2000, 'detached')
  const unknown = await welcome('/s', resumeToken('f'.repeat(32), first.token, 0))
  t.equal(unknown.resumed, false, 'an unknown session')
  t.not(unknown.session, 'f'.repeat(32))
  const elsewhere = await welcome('/other', resumeToken(first.session, first.token, 0))
  t.equal(elsewhere.resumed, false, "another route's session")
  const greedy = await welcome('/s', resumeToken(first.session, first.token, 5))
  t.equal(greedy.resumed, false, 'a client claiming messages never sent')
  const guessed = await welcome('/s', resumeToken(first.session, 'e'.repeat(32), 0))
  t.equal(guessed.resumed, false, 'a wrong secret')
  t.equal(app.wsSessions.get(first.session)?.ended, false, 'the session asked for is left as it was, for its own client')
  t.equal(app.wsStats.sessions.resumeRefused, 4)
  t.equal(app.wsStats.sessions.resumed, 0)
  const rightful = await welcome('/s', resumeToken(first.session, first.token, 0))
  t.match(rightful, { session: first.session, resumed: true }, 'its own client still resumes it')
  t.not(rightful.token, first.token, 'with a new secret')
  const malformed = await welcome('/s', 'reliable-ws.resume.xyz.1')
  t.equal(malformed.resumed, false, 'a malformed token is no resume request')
  t.equal(handled.filter((h) => h!.resumed).length, 1, 'only the rightful resume')
})

t.test('acknowledging messages never sent is a protocol error', async (t) => {
  const { app, port } = await sessionServer(t)
  const ws = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
  await once(ws, 'message')
  ws.send('\u0000{"t":"ack","n":3}')
  t.equal((await closeEvent(ws)).code, 1002)
  t.equal(app.wsStats.limits.protocolErrors, 1)
})

t.test('the server acknowledges every 64 messages and answers pings with its count', async (t) => {
  const { port } = await sessionServer(t)
  const ws = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
  const controls: string[] = []
  ws.on('message', (data) => { const text = data.toString(); if (text.charCodeAt(0) === 0) controls.push(text.slice(1)) })
  await once(ws, 'open')
  for (let i = 0; i < 130; i++) ws.send(`m${i}`)
  ws.send('\u0000{"t":"ping"}')
  await waitFor(() => controls.length === 4, 2000, 'acks and pong')
  t.same(controls.slice(1).map((text) => JSON.parse(text)), [{ t: 'ack', n: 64 }, { t: 'ack', n: 128 }, { t: 'pong', n: 130 }])
  ws.close()
})

t.test("a session's messages are watched for backpressure but never dropped", async (t) => {
  const { app, port } = await sessionServer(t, { maxBufferedBytes: 16 << 20 }, { backpressure: { highWaterMark: 1024, lowWaterMark: 0 } })
  const reader = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
  const [welcome] = await once(reader, 'message')
  reader.pause() // a reader that stops reading: the kernel's buffers fill, then ws's
  const session = app.wsSessions.get(JSON.parse(welcome.toString().slice(1)).session)!
  const big = 'x'.repeat(64 * 1024)
  let accepted = 0
  for (let i = 0; i < 128; i++) accepted += session.send(big) ? 1 : 0
  t.equal(accepted, 128, '8 MiB accepted, far above highWaterMark, within the session limit')
  await waitFor(() => app.wsStats.backpressure.events >= 1, 2000, 'the crossing')
  t.equal(app.wsStats.backpressure.events, 1, 'one crossing: the reader is still stalled')
  t.equal(app.wsStats.messages.dropped, 0)
  let count = 0
  reader.on('message', () => { count++ })
  reader.resume()
  await waitFor(() => count === 128, 5000, 'every message once the reader reads again')
  reader.close()
})

t.test('the client ignores control frames it cannot use, and resumes from what the server acknowledged', async (t) => {
  const server = await subprotocolServer(t)
  const id = 'a'.repeat(32)
  const offers: string[] = []
  const got: string[][] = []
  server.on('connection', (socket, request) => {
    offers.push(String(request.headers['sec-websocket-protocol']))
    const messages: string[] = []
    got.push(messages)
    const resumed = got.length > 1
    socket.send(`\u0000{"t":"welcome","session":"${id}","token":"${'c'.repeat(32)}","resumed":${resumed},"n":${resumed ? 2 : 0}}`)
    if (!resumed) {
      socket.send('\u0000{bad')
      socket.send(`\u0000{"t":"welcome","session":"${'b'.repeat(32)}","resumed":false,"n":0}`)
      socket.send('\u0000{"t":"ack","n":5}')
    }
    socket.on('message', (data) => {
      // The client's acks (one right after each welcome) are not data.
      if (data.toString().charCodeAt(0) === 0) return
      messages.push(data.toString())
      if (messages.length === 3) {
        socket.send('\u0000{"t":"ack","n":2}')
        socket.send('\u0000{"t":"pong","n":1}')
        socket.send('\u0000{"t":"retry","ms":"soon"}')
        socket.close(1012)
      }
    })
  })
  const url = `ws://127.0.0.1:${(server.address() as any).port}/`
  const { ws, lost } = client(url)
  const delays: number[] = []
  ws.addEventListener('reconnecting', (event) => delays.push(event.delayMs))
  await once(ws as any, 'open')
  t.equal(ws.session, id, 'a second welcome changes nothing')
  for (const text of ['m1', 'm2', 'm3']) ws.send(text)
  await once(ws as any, 'reconnected')
  await waitFor(() => got.length === 2 && got[1].length === 1, 2000, 'the resend')
  t.same(got, [['m1', 'm2', 'm3'], ['m3']], 'only what the server had not acknowledged was sent again')
  t.same(offers[1].split(/, */), [PROTOCOL, resumeToken(id, 'c'.repeat(32), 0)], 'the resume request named the session, the secret and the count received')
  t.ok(delays[0] < 20, 'a retry hint that is not a count leaves the backoff in charge')
  t.same(lost, [])
  ws.close()
})

t.test('closing a client in a session drops what it never sent, and lets go of what it sent', async (t) => {
  const { port, received } = await sessionServer(t)
  const proxy = await proxied(t, port)
  const { ws } = client(proxy.url('/s'))
  const dropped: unknown[] = []
  ws.addEventListener('drop', (event) => dropped.push(event.data))
  await once(ws as any, 'open')
  ws.send('sent 1')
  ws.send('sent 2')
  await waitFor(() => received.length === 2, 2000, 'both received')
  proxy.refuse = true
  proxy.cut()
  await once(ws as any, 'close')
  ws.send('never sent')
  ws.close()
  t.same(dropped, ['never sent'], 'only the message that was never written is reported dropped')
  t.same(received, ['sent 1', 'sent 2'])
})

t.test('messages the rate limit drops keep their numbers: a resume neither resends nor loses count', async (t) => {
  const { port, received } = await sessionServer(t, true, { limits: { messagesPerSecond: 1, burst: 3, onRateLimit: 'drop' } })
  const first = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
  const [welcome] = await once(first, 'message')
  const { session: id, token } = JSON.parse(welcome.toString().slice(1))
  for (let i = 1; i <= 5; i++) first.send(`m${i}`)
  await waitFor(() => received.length === 3, 2000, 'the admitted three')
  await sleep(50)
  first.terminate()
  await sleep(50)
  const again = new WebSocket(`ws://127.0.0.1:${port}/s`, [PROTOCOL, resumeToken(id, token, 0)])
  const [resumed] = await once(again, 'message')
  t.match(JSON.parse(resumed.toString().slice(1)), { t: 'welcome', session: id, resumed: true, n: 5 },
    'all five counted: the client will not send the dropped two again as later messages')
  t.same(received, ['m1', 'm2', 'm3'])
  again.close()
})

t.test('a session message sent while its socket is closing waits for the resume', async (t) => {
  const { app, port } = await sessionServer(t)
  const proxy = await proxied(t, port)
  const { ws, received } = client(proxy.url('/s'))
  await once(ws as any, 'open')
  const session = app.wsSessions.get(ws.session!)!
  const socket = [...app.websocketServer.clients][0] as any
  socket.close(1012, 'restart')
  let called = false
  t.ok(session.send('during the close', undefined), 'accepted by the session')
  t.ok(socket.send('through the socket', () => { called = true }), 'the socket passes it to its session')
  t.equal(socket.bufferedAmount, 0, 'nothing counted against the closing socket')
  await once(ws as any, 'reconnected')
  await waitFor(() => received.length === 2, 2000, 'replay')
  t.same(received, ['during the close', 'through the socket'])
  t.ok(called, 'the callback ran')
  t.ok(socket.send('through the closed socket'), 'a closed socket still reaches its client through the session')
  await waitFor(() => received.length === 3, 2000, 'the third')
  ws.close()
})

t.test('a session resumed after its socket was seen to close keeps no expiry: it lives on past ttlMs, and a second absence expires it once', async (t) => {
  const TTL = 600
  const { app, port } = await sessionServer(t, { ttlMs: TTL })
  const proxy = await proxied(t, port)
  const { ws, lost } = client(proxy.url('/s'))
  await once(ws as any, 'open')
  const id = ws.session!
  const session = app.wsSessions.get(id)!
  proxy.refuse = true
  proxy.cut()
  await waitFor(() => !session.connected, 2000, 'the server to see the socket close')
  proxy.refuse = false
  await once(ws as any, 'reconnected')
  t.equal(ws.session, id, 'resumed')
  // Its expiry, had it been kept, fell TTL after the disconnect: wait well past it.
  await sleep(TTL + 300)
  t.equal(app.wsStats.sessions.expired, 0, 'no expiry while the client is connected')
  t.equal(session.ended, false)
  t.equal(session.connected, true)
  t.same(lost, [])

  // Away again, and this time for good: it expires once, at about TTL after the second disconnect.
  proxy.refuse = true
  proxy.cut()
  await waitFor(() => !session.connected, 2000, 'the second disconnect')
  await waitFor(() => session.ended, TTL + 3000, 'expiry')
  await sleep(100)
  t.equal(app.wsStats.sessions.expired, 1, 'expired once')
  t.equal(app.wsStats.sessions.active, 0)
  ws.close()
})

t.test('acknowledgements free the bytes a session holds: 1 MiB goes through a 64 KiB session as the client acknowledges it', async (t) => {
  const LIMIT = 64 * 1024
  const { app, port } = await sessionServer(t, { maxBufferedBytes: LIMIT })
  const { ws, received } = client(`ws://127.0.0.1:${port}/s`)
  await once(ws as any, 'open')
  const session = app.wsSessions.get(ws.session!)!
  const message = 'x'.repeat(512)
  // The client acknowledges every 64 messages: 32 KiB at a time, half the limit.
  let refused = 0
  let held = 0
  for (let batch = 0; batch < 32; batch++) {
    for (let i = 0; i < 64; i++) refused += session.send(message) ? 0 : 1
    if (refused > 0) break
    await waitFor(() => session.unacknowledged === 0, 3000, `batch ${batch} acknowledged`)
    // The session's own count (not in the public types).
    held += (session as unknown as { bufferedBytes: number }).bufferedBytes
  }
  t.equal(refused, 0, 'every message accepted')
  t.equal(held, 0, 'nothing held once acknowledged')
  t.equal(received.length, 32 * 64, '1 MiB delivered')
  t.equal(app.wsStats.sessions.overflowed, 0)
  t.equal(app.wsStats.sessions.bufferedBytes, 0, "the instance's budget got every byte back")
  ws.close()
})

t.test('maxBufferedBytes: a session may hold exactly its limit; one more byte, or one message larger than what is left, ends it with 4800', async (t) => {
  const LIMIT = 1000
  const { app, port } = await sessionServer(t, { maxBufferedBytes: LIMIT })
  const open = async (): Promise<{ raw: WebSocket, session: any }> => {
    // A raw client on the subprotocol never acknowledges: what the session sends stays held.
    const raw = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
    const [welcome] = await once(raw, 'message')
    return { raw, session: app.wsSessions.get(JSON.parse(welcome.toString().slice(1)).session)! }
  }
  const first = await open()
  t.ok(first.session.send('a'.repeat(600)))
  t.ok(first.session.send(Buffer.alloc(LIMIT - 600)), 'up to the limit exactly')
  t.equal(first.session.bufferedBytes, LIMIT)
  const closed = closeEvent(first.raw)
  t.notOk(first.session.send('b'), 'one byte more is refused')
  t.equal(first.session.ended, true)
  t.equal((await closed).code, 4800)

  const second = await open()
  t.ok(second.session.send('é'.repeat(300)), '600 bytes of UTF-8 (300 characters)')
  t.notOk(second.session.send('c'.repeat(401)), 'a message larger than the 400 bytes left ends it')
  t.equal(second.session.ended, true)
  t.equal((await closeEvent(second.raw)).code, 4800)
  t.equal(app.wsStats.sessions.overflowed, 2)
})

t.test('a session that overflows while its client is away ends once: it does not expire later, and the counts stay whole', async (t) => {
  const TTL = 100
  const { app, port } = await sessionServer(t, { ttlMs: TTL, maxBufferedMessages: 2 })
  const raw = new WebSocket(`ws://127.0.0.1:${port}/s`, PROTOCOL)
  const [welcome] = await once(raw, 'message')
  const away = app.wsSessions.get(JSON.parse(welcome.toString().slice(1)).session)!
  raw.terminate()
  await waitFor(() => !away.connected, 2000, 'the server to notice')
  t.ok(away.send('1'))
  t.ok(away.send('2'))
  t.notOk(away.send('3'), 'overflow while away')
  t.equal(app.wsStats.sessions.active, 0)
  // Past the expiry it had been scheduled for.
  await sleep(TTL * 4)
  const stats = app.wsStats.sessions
  t.equal(stats.expired, 0, 'no expiry after the overflow')
  t.equal(stats.overflowed, 1)
  t.equal(stats.active, 0, 'never below zero')
  t.equal(stats.bufferedBytes, 0)
})

t.test('what an app sends through a session counts in messagesSent once, replays not again', async (t) => {
  const { app, port } = await sessionServer(t)
  const proxy = await proxied(t, port)
  const { ws, received } = client(proxy.url('/s'))
  await once(ws as any, 'open')
  const session = app.wsSessions.get(ws.session!)!
  const socket = [...app.websocketServer.clients][0] as any
  session.send('one')
  session.sendJSON({ two: 2 })
  socket.send('three')
  await waitFor(() => received.length === 3, 2000, 'three messages')
  proxy.refuse = true
  proxy.cut()
  await waitFor(() => !session.connected, 2000, 'the disconnect')
  session.send('four')
  proxy.refuse = false
  await once(ws as any, 'reconnected')
  await waitFor(() => received.length === 4, 2000, 'the fourth, replayed with any unacknowledged')
  t.equal(app.wsStats.messages.sent, 4)
  t.equal(app.wsStats.routes['/s'].messagesSent, 4)
  ws.close()
})

t.test('the client acknowledges every 64 messages of a session', async (t) => {
  const { app, port } = await sessionServer(t)
  const { ws, received } = client(`ws://127.0.0.1:${port}/s`)
  await once(ws as any, 'open')
  const session = app.wsSessions.get(ws.session!)!
  for (let i = 0; i < 63; i++) session.send(`m${i}`)
  await waitFor(() => received.length === 63, 2000, '63 messages')
  await sleep(50)
  t.equal(session.unacknowledged, 63, 'no acknowledgement before the 64th')
  for (let i = 63; i < 130; i++) session.send(`m${i}`)
  await waitFor(() => received.length === 130, 2000, '130 messages')
  await waitFor(() => session.unacknowledged === 2, 2000, 'acknowledgements at 64 and 128')
  await sleep(50)
  t.equal(session.unacknowledged, 2, 'the last two wait for the next acknowledgement')
  ws.close()
})

t.test('a lost session reports as unconfirmed what was sent and not acknowledged; what was queued and never sent goes to the new session', async (t) => {
  const { app, port, received } = await sessionServer(t, { ttlMs: 100 })
  const proxy = await proxied(t, port)
  const { ws, lost } = client(proxy.url('/s'))
  await once(ws as any, 'open')
  ws.send('written')
  await waitFor(() => received.length === 1, 2000, 'the first message')
  proxy.refuse = true
  proxy.cut()
  await once(ws as any, 'close')
  ws.send('queued')
  await waitFor(() => app.wsStats.sessions.expired === 1, 3000, 'expiry')
  proxy.refuse = false
  await once(ws as any, 'reconnected')
  await waitFor(() => received.length === 2, 2000, 'the queued message')
  t.equal(lost.length, 1)
  t.same(lost[0].unconfirmed, ['written'], 'only what was written is of unknown fate')
  t.same(received, ['written', 'queued'], 'the queued message went, once, in the new session')
  ws.close()
})

t.test('the client refuses an acknowledgement of messages it never sent: a welcome claiming more loses the session', async (t) => {
  const server = await subprotocolServer(t)
  const id = 'a'.repeat(32)
  let connections = 0
  server.on('connection', (socket) => {
    const resumed = ++connections > 1
    // The resumed welcome says 3 of the client's messages arrived: it only ever sent one.
    socket.send(`\u0000{"t":"welcome","session":"${id}","token":"${'c'.repeat(32)}","resumed":${resumed},"n":${resumed ? 3 : 0}}`)
    socket.on('message', (data) => {
      if (data.toString() === 'm1') socket.close(1012)
    })
  })
  const { ws, lost } = client(`ws://127.0.0.1:${(server.address() as any).port}/`)
  await once(ws as any, 'open')
  ws.send('m1')
  await once(ws as any, 'reconnected')
  t.equal(lost.length, 1, "'sessionlost'")
  t.same(lost[0].unconfirmed, ['m1'], 'the message it did send is of unknown fate, not taken as acknowledged')
  ws.close()
})
