import { once } from 'node:events'
import net from 'node:net'
import t from 'tap'
import type { FastifyInstance, FastifyReply } from 'fastify'
import WebSocket from 'ws'
import { OPCODE, RawPeer, buildFrame, closeEvent, collect, connect, rawExchange, start, upgradeRequest, waitFor } from '../helpers/helpers'
import type { FrameFields } from '../helpers/helpers'

// Every case: the bad peer gets the right close code, the plugin counts it, and a good client on the same server
// is still echoed.

function echo (app: FastifyInstance): void {
  app.post('/form', async () => 'posted')
  app.get('/ws', { websocket: true, config: { reliable: { limits: { maxPayload: 1024 } } } }, (socket) => {
    socket.on('message', (data) => socket.send(data.toString()))
  })
}

async function server (t: tap.Test) {
  const started = await start({ heartbeat: false }, echo, { logger: { level: 'fatal' } })
  t.teardown(() => started.app.close())
  const good = await connect(started.url('/ws'))
  t.teardown(() => good.terminate())
  return { ...started, good }
}

async function stillServed (t: tap.Test, good: WebSocket, text: string): Promise<void> {
  const replies = collect(good)
  const before = replies.length
  good.send(text)
  await waitFor(() => replies.length === before + 1, 3000, 'the good client\'s echo')
  t.equal(replies[before], text, 'a good client on the same server is still served')
}

const closeFrame = (code: number): Buffer => {
  const payload = Buffer.alloc(2)
  payload.writeUInt16BE(code)
  return payload
}

const protocolErrors: Array<[string, FrameFields[], number]> = [
  ['invalid UTF-8 in a text frame', [{ opcode: OPCODE.text, payload: Buffer.from([0x68, 0xff, 0xfe]) }], 1007],
  ['an unmasked client frame', [{ opcode: OPCODE.text, payload: 'hi', mask: false }], 1002],
  ['a reserved data opcode (0x3)', [{ opcode: 0x3, payload: 'x' }], 1002],
  ['a reserved control opcode (0xB)', [{ opcode: 0xb }], 1002],
  ['RSV1 without a negotiated extension', [{ opcode: OPCODE.text, payload: 'x', rsv: 4 }], 1002],
  ['RSV2 set', [{ opcode: OPCODE.text, payload: 'x', rsv: 2 }], 1002],
  ['RSV3 set', [{ opcode: OPCODE.text, payload: 'x', rsv: 1 }], 1002],
  ['a fragmented control frame', [{ opcode: OPCODE.ping, fin: false }], 1002],
  ['a control frame over 125 bytes', [{ opcode: OPCODE.ping, payload: Buffer.alloc(126) }], 1002],
  ['a continuation with no message to continue', [{ opcode: 0x0, payload: 'x' }], 1002],
  ['a new message inside a fragmented one', [{ opcode: OPCODE.text, payload: 'a', fin: false }, { opcode: OPCODE.text, payload: 'b' }], 1002],
  ['a close code no endpoint may send (1005)', [{ opcode: OPCODE.close, payload: closeFrame(1005) }], 1002],
  ['a close code out of range (999)', [{ opcode: OPCODE.close, payload: closeFrame(999) }], 1002],
  ['a one-byte close payload', [{ opcode: OPCODE.close, payload: Buffer.from([0x03]) }], 1002],
  ['invalid UTF-8 in a close reason', [{ opcode: OPCODE.close, payload: Buffer.concat([closeFrame(1000), Buffer.from([0xff])]) }], 1007]
]

for (const [name, frames, code] of protocolErrors) {
  t.test(`${name}: closed with ${code} and counted as a protocol error`, async (t) => {
    const { app, port, good } = await server(t)
    const bad = await RawPeer.connect(port, '/ws')
    bad.socket.write(Buffer.concat(frames.map(buildFrame)))
    await waitFor(() => bad.ended, 3000, 'the bad peer to be closed')
    t.equal(bad.closeCode(), code)
    await waitFor(() => app.wsStats.connections.active === 1)
    const stats = app.wsStats
    t.equal(stats.limits.protocolErrors, 1)
    t.equal(stats.limits.payloadTooLarge, 0)
    t.equal(stats.errors, 1)
    t.same(stats.closeCodes, { [code]: 1 }, 'recorded with the code ws sent')
    await stillServed(t, good, name)
  })
}

t.test('a frame declaring more than the route maxPayload is refused with 1009 before its payload arrives', async (t) => {
  const { app, port, good } = await server(t)
  // The server-wide limit is the 1 MiB default: only the route's lower limit can refuse this frame.
  t.equal(app.websocketServer.options.maxPayload, 1024 * 1024)
  const bad = await RawPeer.connect(port, '/ws')
  bad.socket.write(buildFrame({ opcode: OPCODE.binary, length: 1025 }).subarray(0, 8))
  await waitFor(() => bad.ended, 3000, 'the oversized peer to be closed')
  t.equal(bad.closeCode(), 1009)
  const exact = await RawPeer.connect(port, '/ws')
  exact.send(OPCODE.text, 'x'.repeat(1024))
  await waitFor(() => exact.count(OPCODE.text) === 1, 3000, 'the echo of a message of exactly maxPayload')
  await waitFor(() => app.wsStats.connections.active === 2)
  t.equal(app.wsStats.limits.payloadTooLarge, 1)
  t.equal(app.wsStats.limits.protocolErrors, 0)
  exact.destroy()
  await stillServed(t, good, 'after 1009')
})

t.test('a fragmented message whose fragments add up past maxPayload is refused with 1009', async (t) => {
  const { app, port, good } = await server(t)
  const bad = await RawPeer.connect(port, '/ws')
  bad.socket.write(Buffer.concat([
    buildFrame({ opcode: OPCODE.text, payload: 'a'.repeat(1000), fin: false }),
    buildFrame({ opcode: 0x0, payload: 'a'.repeat(100) })
  ]))
  await waitFor(() => bad.ended, 3000, 'the peer to be closed')
  t.equal(bad.closeCode(), 1009)
  await waitFor(() => app.wsStats.limits.payloadTooLarge === 1)
  await stillServed(t, good, 'after fragments')
})

t.test('a 64-bit length beyond 2^53 is refused with 1009', async (t) => {
  const { app, port, good } = await server(t)
  const bad = await RawPeer.connect(port, '/ws')
  const header = Buffer.from([0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
  bad.socket.write(header)
  await waitFor(() => bad.ended, 3000, 'the peer to be closed')
  t.equal(bad.closeCode(), 1009)
  await waitFor(() => app.wsStats.limits.payloadTooLarge === 1)
  await stillServed(t, good, 'after 2^53')
})

t.test('with permessage-deflate, a route maxPayload also bounds the inflated message', async (t) => {
  const started = await start({ heartbeat: false, compression: true }, echo, { logger: { level: 'fatal' } })
  t.teardown(() => started.app.close())
  const ws = new WebSocket(started.url('/ws'), { perMessageDeflate: true })
  ws.on('error', () => {})
  const closed = closeEvent(ws)
  await new Promise((resolve) => ws.once('open', resolve))
  t.match(ws.extensions, /permessage-deflate/)
  ws.send('x'.repeat(1024))
  await waitFor(() => collect(ws).length === 1, 3000, 'the echo of exactly maxPayload, inflated')
  // 4 KiB of one byte compresses to a few dozen: only the inflated size can exceed the limit.
  ws.send('x'.repeat(4096))
  t.equal((await closed).code, 1009)
  await waitFor(() => started.app.wsStats.limits.payloadTooLarge === 1)
})

t.test('a peer that hangs up inside a frame is counted as a truncated frame; one that hangs up between frames is not', async (t) => {
  const { app, port, good } = await server(t)
  const cut = await RawPeer.connect(port, '/ws')
  cut.socket.end(buildFrame({ opcode: OPCODE.text, payload: 'hello world' }).subarray(0, 9))
  const midMessage = await RawPeer.connect(port, '/ws')
  midMessage.socket.end(buildFrame({ opcode: OPCODE.text, payload: 'first half', fin: false }))
  const clean = await RawPeer.connect(port, '/ws')
  clean.send(OPCODE.text, 'whole')
  await waitFor(() => clean.count(OPCODE.text) === 1)
  clean.socket.end()
  await waitFor(() => app.wsStats.connections.active === 1, 3000, 'the three peers to be gone')
  const stats = app.wsStats
  t.equal(stats.limits.protocolErrors, 2)
  t.equal(stats.closeCodes['1006'], 3, 'none sent a close frame')
  await stillServed(t, good, 'after truncation')
})

t.test('garbage instead of a handshake gets 400 and is counted; so do a bad Sec-WebSocket-Key and Version', async (t) => {
  const { app, port, good } = await server(t)
  const garbage = await rawExchange(port, Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]))
  t.match(garbage, /^HTTP\/1\.1 400 /)
  t.equal(app.wsStats.limits.protocolErrors, 1)

  const badKey = await rawExchange(port, upgradeRequest(port, '/ws').replace(/Sec-WebSocket-Key: .*\r\n/, 'Sec-WebSocket-Key: not-a-key\r\n'))
  t.match(badKey, /^HTTP\/1\.1 400 Bad Request\r\n/)
  t.match(badKey, /\r\n\r\nMissing or invalid Sec-WebSocket-Key header$/, 'ws\'s description of the fault, nothing else')
  t.notMatch(badKey, /at |node_modules|\.js/, 'no stack trace or path')

  t.match(badKey, /\r\nContent-Type: text\/html\r\n/, 'as ws answers it')

  const badVersion = await rawExchange(port, upgradeRequest(port, '/ws').replace('Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: 12'))
  t.match(badVersion, /^HTTP\/1\.1 400 Bad Request\r\n/)
  t.match(badVersion, /\r\nSec-WebSocket-Version: 13, 8\r\n/, 'the versions the server speaks')

  const noKey = await rawExchange(port, upgradeRequest(port, '/ws').replace(/Sec-WebSocket-Key: .*\r\n/, ''))
  t.match(noKey, /^HTTP\/1\.1 400 /)
  t.notMatch(noKey, /Sec-WebSocket-Version: 13, 8/)

  const stats = app.wsStats
  t.equal(stats.limits.protocolErrors, 4)
  t.equal(stats.connections.rejected, 3, 'the three upgrade requests were refused')
  t.equal(stats.connections.active, 1)
  await stillServed(t, good, 'after bad handshakes')
})

t.test('a connection reset in the middle of a request is not malformed input', async (t) => {
  const { app, port } = await server(t)
  const net = await import('node:net')
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /ws HTTP/1.1\r\nHost: x\r\n')
  await new Promise((resolve) => setTimeout(resolve, 20))
  socket.resetAndDestroy()
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(app.wsStats.limits.protocolErrors, 0)
})

t.test('an upgrade request with another method than GET gets ws\'s 405, counted', async (t) => {
  const { app, port, good } = await server(t)
  const post = await rawExchange(port, upgradeRequest(port, '/form').replace(/^GET /, 'POST '))
  t.match(post, /^HTTP\/1\.1 405 Method Not Allowed\r\n/)
  t.match(post, /\r\n\r\nInvalid HTTP method$/)
  t.equal(app.wsStats.limits.protocolErrors, 1)
  t.equal(app.wsStats.connections.rejected, 1)
  await stillServed(t, good, 'after a POST upgrade')
})

t.test('an app that listens for wsClientError answers refused upgrades itself; the plugin only counts them', async (t) => {
  const { app, port } = await start({ heartbeat: false }, echo)
  t.teardown(() => app.close())
  // Added after the plugin's own listener (which is added when the app is ready).
  app.websocketServer.on('wsClientError', (err, socket) => {
    socket.end(`HTTP/1.1 418 I'm a Teapot\r\nConnection: close\r\nContent-Length: ${err.message.length}\r\n\r\n${err.message}`)
  })
  const badKey = await rawExchange(port, upgradeRequest(port, '/ws').replace(/Sec-WebSocket-Key: .*\r\n/, 'Sec-WebSocket-Key: not-a-key\r\n'))
  t.equal(badKey, "HTTP/1.1 418 I'm a Teapot\r\nConnection: close\r\nContent-Length: 43\r\n\r\nMissing or invalid Sec-WebSocket-Key header", 'one answer, the app\'s')
  t.equal(app.wsStats.limits.protocolErrors, 1)
  t.equal(app.wsStats.connections.rejected, 1)
})

// (A path parameter over maxParamLength is answered 414 the same way by later Fastify 5 releases; 5.0.0 routes it to
// its 404 handler, hooks and all.)
t.test('an upgrade request Fastify answers without hooks (a URL it cannot decode) is closed after the answer and counted', async (t) => {
  const { app, port, good } = await server(t)
  t.match(await answeredAndClosed(port, '/w%'), /^HTTP\/1.1 400 /, '/w% answered 400')
  t.equal(app.wsStats.connections.rejected, 1)
  t.equal(app.wsStats.limits.protocolErrors, 1)
  await stillServed(t, good, 'after bad URLs')
})

t.test('an application frameworkErrors that answers a bad URL later, as it likes, still has the socket closed after the answer', async (t) => {
  const { app, port } = await start({ heartbeat: false }, echo, {
    logger: { level: 'fatal' },
    frameworkErrors: async (_err: Error, _request: unknown, reply: FastifyReply) => {
      await new Promise((resolve) => setTimeout(resolve, 20))
      return reply.code(503).send('not now')
    }
  })
  t.teardown(() => app.close())
  t.match(await answeredAndClosed(port, '/w%'), /^HTTP\/1.1 503 [^]*not now$/)
  t.equal(app.wsStats.connections.rejected, 1)
  t.equal(app.wsStats.limits.protocolErrors, 0, 'the application chose 503: not counted as malformed')
})

/** Sends an upgrade request on a bare socket; what the server answered, once the server has closed the socket. */
async function answeredAndClosed (port: number, path: string): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  let answer = ''
  socket.on('data', (chunk: Buffer) => { answer += chunk.toString() })
  socket.on('error', () => {})
  socket.write(upgradeRequest(port, path))
  const closed = once(socket, 'close')
  // Without the guard the server answers, then keeps the socket open for as long as the peer does.
  try {
    await waitFor(() => socket.closed, 2000, `the server to close the socket after its answer to ${path}`)
  } finally {
    socket.destroy()
  }
  await closed
  return answer
}
