import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import t from 'tap'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import reliableWs = require('../../index')
import { OPCODE, RawPeer, closeEvent, collect, connect, loopDelay, sleep, start, waitFor, watch } from '../helpers/helpers'

// Bounds, not timings: the scheduler's tick plus a noisy 2-core machine.
const MARGIN = 250

function silent (app: FastifyInstance): void {
  app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (data) => socket.send(data.toString())) })
}

/** A TCP connection that sends `partial` and then nothing; resolves with the time it was closed by the server. */
async function stall (port: number, partial: string | Buffer): Promise<{ socket: net.Socket, closed: Promise<number> }> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  if (partial.length > 0) socket.write(partial)
  return { socket, closed: once(socket, 'close').then(() => performance.now()) }
}

t.test('idleTimeoutMs: a socket that sends nothing is closed with 1000 "Idle timeout"', async (t) => {
  const lag = loopDelay()
  const infos: any[] = []
  const { app, port } = await start({
    heartbeat: false,
    limits: { idleTimeoutMs: 100 },
    onDisconnect: (_socket, info) => { infos.push(info) }
  }, silent)
  t.teardown(() => app.close())
  const startedAt = performance.now()
  const peer = await RawPeer.connect(port, '/ws')
  await waitFor(() => peer.closeCode() !== null, 2000, 'the close frame')
  const elapsed = performance.now() - startedAt
  const held = lag()
  t.ok(elapsed >= 100 && elapsed < 100 + MARGIN + held, `closed after ${Math.round(elapsed)} ms`)
  const close = peer.frames.find((frame) => frame.opcode === OPCODE.close)!
  t.equal(close.payload.readUInt16BE(0), 1000)
  t.equal(close.payload.subarray(2).toString(), 'Idle timeout')
  peer.send(OPCODE.close, close.payload)
  await waitFor(() => infos.length === 1)
  t.match(infos[0], { code: 1000, reason: 'Idle timeout', cause: 'idle' })
  t.equal(app.wsStats.limits.idleTimeouts, 1)
})

t.test('every message moves the idle deadline; pings and pongs do not', async (t) => {
  const lag = loopDelay()
  // No rate limit: the idle deadline is tracked on its own.
  const { app, url, port } = await start({ heartbeat: { intervalMs: 30 }, limits: { idleTimeoutMs: 150, messagesPerSecond: Infinity } }, silent)
  t.teardown(() => app.close())
  const talker = await connect(url('/ws'))
  const talked = watch(talker)
  // The ws client answers every heartbeat ping with a pong, and this peer pings the server too: neither is a message.
  const ponger = await connect(url('/ws'))
  const ponged = watch(ponger)
  const pinger = await RawPeer.connect(port, '/ws')
  const startedAt = performance.now()
  const pinging = setInterval(() => { pinger.send(OPCODE.ping) }, 20)
  t.teardown(() => clearInterval(pinging))
  let lastSentAt = 0
  while (performance.now() - startedAt < 400) {
    talker.send('still here')
    lastSentAt = performance.now()
    await sleep(40)
  }
  t.notOk(talked.closed, 'a socket sending a message every 40 ms outlives three idle timeouts')
  t.ok(ponged.closed, 'answering pings does not keep a socket open')
  t.ok(ponged.pings >= 2, `the heartbeat kept pinging it (${ponged.pings} pings)`)
  t.ok(pinger.closeCode() === 1000, 'pinging the server does not either')
  const closed = closeEvent(talker)
  t.equal((await closed).code, 1000)
  const elapsed = performance.now() - lastSentAt
  const held = lag()
  t.ok(elapsed >= 150 && elapsed < 150 + MARGIN + held, `closed ${Math.round(elapsed)} ms after its last message`)
  t.equal(app.wsStats.limits.idleTimeouts, 3)
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  pinger.destroy()
})

t.test('a route may set its own idle timeout; by default there is none', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    silent(app)
    app.get('/short', { websocket: true, config: { reliable: { limits: { idleTimeoutMs: 50 } } } }, () => {})
  })
  t.teardown(() => app.close())
  const long = await connect(url('/ws'))
  const short = await connect(url('/short'))
  t.same(await closeEvent(short), { code: 1000, reason: 'Idle timeout' })
  await sleep(100)
  long.send('alive')
  await waitFor(() => collect(long).length === 1)
  t.same(collect(long), ['alive'])
  long.close()
})

t.test('handshakeTimeoutMs: a connection stalled mid-request is destroyed and counted; one that says nothing too', async (t) => {
  const { app, port, url } = await start({ heartbeat: false, limits: { handshakeTimeoutMs: 100 } }, silent)
  t.teardown(() => app.close())
  const good = await connect(url('/ws'))
  const startedAt = performance.now()
  const slowloris = await stall(port, 'GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock')
  const mute = await stall(port, '')
  const [slowAt, muteAt] = await Promise.all([slowloris.closed, mute.closed])
  for (const [name, at] of [['slowloris', slowAt], ['mute', muteAt]] as const) {
    const elapsed = at - startedAt
    t.ok(elapsed >= 90 && elapsed < 100 + MARGIN, `${name} destroyed after ${Math.round(elapsed)} ms`)
  }
  t.equal(app.wsStats.limits.handshakeTimeouts, 2)
  await sleep(50)
  good.send('the upgraded socket is not touched')
  await waitFor(() => collect(good).length === 1)
  t.equal(app.wsStats.connections.active, 1)
  good.close()
})

t.test('handshakeTimeoutMs ends with the first request: kept-alive HTTP connections are left alone', async (t) => {
  const { app, port } = await start({ heartbeat: false, limits: { handshakeTimeoutMs: 60 } }, (app) => {
    silent(app)
    app.get('/http', async () => ({ ok: true }))
  })
  t.teardown(() => app.close())
  const socket = net.connect(port, '127.0.0.1')
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString() })
  await once(socket, 'connect')
  socket.write('GET /http HTTP/1.1\r\nHost: x\r\n\r\n')
  await waitFor(() => received.includes('{"ok":true}'))
  await sleep(150)
  t.notOk(socket.destroyed, 'still open after twice the timeout')
  socket.write('GET /http HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  await once(socket, 'close')
  t.equal(received.match(/\{"ok":true\}/g)?.length, 2, 'both requests answered on one connection')
  t.equal(app.wsStats.limits.handshakeTimeouts, 0)
})

t.test('handshakeTimeoutMs: Infinity turns it off', async (t) => {
  const { app, port } = await start({ heartbeat: false, limits: { handshakeTimeoutMs: Infinity } }, silent)
  t.teardown(() => app.close())
  const { socket } = await stall(port, 'GET /ws HTTP/1.1\r\n')
  await sleep(150)
  t.notOk(socket.destroyed)
  socket.destroy()
  t.equal(app.wsStats.limits.handshakeTimeouts, 0)
})

const key = readFileSync(join(__dirname, '..', 'fixtures', 'localhost-key.pem'))
const cert = readFileSync(join(__dirname, '..', 'fixtures', 'localhost-cert.pem'))

async function startTls (handshakeTimeoutMs: number): Promise<{ app: FastifyInstance, port: number }> {
  const app = Fastify({ https: { key, cert } })
  await app.register(reliableWs, { heartbeat: false, limits: { handshakeTimeoutMs } })
  silent(app)
  app.get('/http', async () => ({ ok: true }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, port: (app.server.address() as net.AddressInfo).port }
}

/** `promise`'s value, or `fallback` if it has not settled within `ms`: a missing fix fails the test instead of hanging it. */
async function within<T> (promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<T>((resolve) => { timer = setTimeout(resolve, ms, fallback) })
  const value = await Promise.race([promise, late])
  clearTimeout(timer)
  return value
}

t.test('behind TLS the deadline covers the TLS handshake and the request head', async (t) => {
  // Long enough for a starved machine to finish the good clients' TLS handshakes inside it (100 ms was not, at times).
  const { app, port } = await startTls(400)
  t.teardown(() => app.close())
  const good = new WebSocket(`wss://127.0.0.1:${port}/ws`, { ca: cert })
  collect(good)
  await once(good, 'open')
  const startedAt = performance.now()
  const stalled = tls.connect({ port, host: '127.0.0.1', ca: cert })
  stalled.on('error', () => {})
  await once(stalled, 'secureConnect')
  stalled.write('GET /ws HTTP/1.1\r\n')
  await once(stalled, 'close')
  const elapsed = performance.now() - startedAt
  t.ok(elapsed < 400 + MARGIN, `destroyed after ${Math.round(elapsed)} ms`)
  t.equal(app.wsStats.limits.handshakeTimeouts, 1)
  good.send('over TLS')
  await waitFor(() => collect(good).length === 1)
  t.same(collect(good), ['over TLS'])
  good.close()
})

t.test('behind TLS the deadline runs from TCP accept: a TLS handshake that never finishes is destroyed and counted', async (t) => {
  const { app, port } = await startTls(100)
  t.teardown(() => app.close())
  const startedAt = performance.now()
  // The first bytes of a ClientHello (a handshake record announcing 512 bytes), and a connection that says nothing.
  const partialHello = await stall(port, Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]))
  const mute = await stall(port, '')
  t.teardown(() => { partialHello.socket.destroy(); mute.socket.destroy() })
  // A TLS connection whose first request came in time stays open for more: its TCP connection was released.
  const keptAlive = tls.connect({ port, host: '127.0.0.1', ca: cert })
  keptAlive.on('error', () => {})
  await once(keptAlive, 'secureConnect')
  let received = ''
  keptAlive.on('data', (chunk: Buffer) => { received += chunk.toString() })
  keptAlive.write('GET /http HTTP/1.1\r\nHost: x\r\n\r\n')
  for (const [name, { closed }] of [['partial ClientHello', partialHello], ['mute', mute]] as const) {
    const at = await within(closed, 1000, Infinity)
    const elapsed = at - startedAt
    t.ok(elapsed >= 90 && elapsed < 100 + MARGIN, `${name} destroyed after ${Math.round(elapsed)} ms`)
  }
  t.equal(app.wsStats.limits.handshakeTimeouts, 2)
  await sleep(150)
  t.notOk(keptAlive.destroyed, 'the kept-alive TLS connection is still open after twice the timeout')
  keptAlive.write('GET /http HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  await within(once(keptAlive, 'close'), 1000, null)
  t.equal(received.match(/\{"ok":true\}/g)?.length, 2, 'both requests answered on one connection')
  t.equal(app.wsStats.limits.handshakeTimeouts, 2)
})

t.test('idleTimeoutMs: a socket the app has paused is not closed idle while messages may be waiting unread', async (t) => {
  const lag = loopDelay()
  const sockets: WebSocket[] = []
  const received: string[] = []
  const { app, url } = await start({ heartbeat: false, limits: { idleTimeoutMs: 60 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      sockets.push(socket)
      socket.pause()
      socket.on('message', (data) => received.push(data.toString()))
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.send('waiting')
  await sleep(300)
  t.equal(ws.readyState, WebSocket.OPEN, 'kept while paused')
  t.equal(app.wsStats.limits.idleTimeouts, 0)
  const resumedAt = performance.now()
  sockets[0].resume()
  const close = await closeEvent(ws)
  t.same(received, ['waiting'], 'the message read once resumed')
  t.same(close, { code: 1000, reason: 'Idle timeout' }, 'then idle again: closed')
  const elapsed = performance.now() - resumedAt
  // The message read after resume() is activity: a full idle timeout from then, never less.
  const held = lag()
  t.ok(elapsed >= 60 && elapsed < 60 + MARGIN + held, `closed ${Math.round(elapsed)} ms after resume(): the idle timeout and a tick`)
  t.equal(app.wsStats.limits.idleTimeouts, 1)
})

t.test('idleTimeoutMs with the heartbeat on: after a pause past the idle timeout, resume() gives a full idle timeout from the last restart', async (t) => {
  const lag = loopDelay()
  const IDLE_MS = 1000
  const sockets: WebSocket[] = []
  let resumedAt = 0
  const { app, url } = await start({ heartbeat: { intervalMs: 40 }, limits: { idleTimeoutMs: IDLE_MS } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      sockets.push(socket)
      socket.pause()
      // Resumed 300 ms after the idle deadline, which restarted the idle clock as the socket was paused.
      setTimeout(() => { resumedAt = performance.now(); socket.resume() }, IDLE_MS + 300)
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const close = closeEvent(ws)
  await waitFor(() => resumedAt > 0, IDLE_MS + 3000, 'the resume')
  // The heartbeat visits every 40 ms: a clock left at the connection's start would close it at the first one.
  await sleep(300)
  t.equal(ws.readyState, WebSocket.OPEN, 'open 300 ms after resume()')
  t.same(await close, { code: 1000, reason: 'Idle timeout' })
  const elapsed = performance.now() - resumedAt
  const held = lag()
  t.ok(elapsed < IDLE_MS + MARGIN + held, `closed idle ${Math.round(elapsed)} ms after resume()`)
  t.equal(app.wsStats.heartbeat.timeouts, 0)
})
