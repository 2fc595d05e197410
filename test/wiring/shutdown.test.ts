import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import t from 'tap'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import reliableWs = require('../../index')
import { RawPeer, closeEvent, connect, sleep, start, waitFor } from '../helpers/helpers'
import { PROTOCOL, decodeControl } from '../../lib/protocol/protocol'

function routes (app: import('fastify').FastifyInstance): void {
  app.get('/ws', { websocket: true }, (socket) => {
    socket.on('message', (data) => socket.send(data))
  })
  app.get('/plain', { websocket: true, config: { reliable: false } }, () => {})
}

/** Handles a test leaves behind would keep a real process alive; Node frees the listening handle a tick after close(). */
async function noHandlesLeft (): Promise<string[]> {
  const ours = (): string[] => process.getActiveResourcesInfo().filter((name) => /^(TCPServerWrap|TCPSocketWrap|Timeout)$/.test(name))
  await waitFor(() => ours().length === 0, 500, 'handles to be released').catch(() => {})
  return ours()
}

t.test('close() sends 1001 to every client and resolves with no handle left', async (t) => {
  const disconnects: any[] = []
  const { app, url } = await start({ heartbeat: { intervalMs: 1000 }, onDisconnect: (_s, info) => { disconnects.push(info) } }, routes)
  const clients = await Promise.all([connect(url('/ws')), connect(url('/ws')), connect(url('/ws')), connect(url('/plain'))])
  const closes = clients.map(closeEvent)
  await app.close()
  for (const { code, reason } of await Promise.all(closes)) {
    t.equal(code, 1001)
    t.equal(reason, 'Server shutting down')
  }
  t.same(disconnects.map((info) => info.cause), ['shutdown', 'shutdown', 'shutdown'], 'reported for the three reliable sockets')
  const stats = app.wsStats
  t.equal(stats.connections.active, 0)
  t.equal(stats.closeCodes['1001'], 3)
  t.equal(stats.draining, true)
  t.same(await noHandlesLeft(), [])
})

t.test('the moments told to reliable clients cover shutdown.reconnectWindowMs whatever other sockets the server holds', async (t) => {
  const WINDOW = 1000
  const { app, url } = await start({ shutdown: { reconnectWindowMs: WINDOW } }, routes)
  const framed = 10
  const moments: number[] = []
  await Promise.all(Array.from({ length: framed }, async () => {
    const ws = new WebSocket(url('/ws'), PROTOCOL)
    ws.on('message', (data) => {
      const control = decodeControl(data.toString().slice(1))
      if (control?.t === 'retry') moments.push(control.ms as number)
    })
    await once(ws, 'open')
    return ws
  }))
  // As many sockets that are told nothing: off the subprotocol, and off the plugin.
  await Promise.all(Array.from({ length: framed / 2 }, () => connect(url('/ws'))))
  await Promise.all(Array.from({ length: framed / 2 }, () => connect(url('/plain'))))
  await app.close()
  t.equal(moments.length, framed, 'every reliable client was told a moment')
  // One slot of WINDOW / framed each: the last is in the last tenth of the window.
  t.ok(Math.max(...moments) >= WINDOW * (framed - 1) / framed, `the latest moment, ${Math.max(...moments)} ms, is in the last slot`)
})

t.test('shutdown.closeCode and reason are configurable', async (t) => {
  const { app, url } = await start({ shutdown: { closeCode: 1012, reason: 'Restarting' } }, routes)
  const ws = await connect(url('/ws'))
  const closed = closeEvent(ws)
  await app.close()
  t.same(await closed, { code: 1012, reason: 'Restarting' })
})

t.test('a peer that ignores the close frame is terminated after shutdown.timeoutMs', async (t) => {
  const TIMEOUT = 200
  const disconnects: any[] = []
  const { app, port } = await start({ shutdown: { timeoutMs: TIMEOUT }, onDisconnect: (_s, info) => { disconnects.push(info) } }, routes)
  const peer = await RawPeer.connect(port, '/ws')
  const startedAt = performance.now()
  await app.close()
  const elapsed = performance.now() - startedAt
  t.ok(elapsed >= TIMEOUT * 0.9 && elapsed < TIMEOUT + 500, `close() took ${Math.round(elapsed)} ms`)
  const closeFrame = peer.frames.find((frame) => frame.opcode === 0x8)
  t.ok(closeFrame, 'the peer was sent a close frame')
  t.equal(closeFrame!.payload.readUInt16BE(0), 1001)
  await waitFor(() => peer.ended)
  t.same(disconnects.map((info) => [info.cause, info.code]), [['shutdown', 1006]])
  t.same(await noHandlesLeft(), [])
})

t.test('during shutdown new upgrades get 503 before the handshake, and health answers 503 draining', async (t) => {
  const { app, port, url } = await start({ shutdown: { timeoutMs: 1000 }, health: { path: '/health/ws' } }, routes)
  const ok = await fetch(`http://127.0.0.1:${port}/health/ws`)
  t.equal(ok.status, 200)
  const okBody = await ok.json()
  t.equal(okBody.status, 'ok')
  t.equal(okBody.draining, false)
  t.equal(okBody.connections.active, 0)

  // A peer that ignores the close frame holds the drain open.
  const holder = await RawPeer.connect(port, '/ws')
  const closing = app.close()
  await waitFor(() => app.wsStats.draining, 1000, 'draining')

  const status = await new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(url('/ws'))
    ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode!); res.resume() })
    ws.on('open', () => reject(new Error('upgraded during shutdown')))
    ws.on('error', () => {})
  })
  t.equal(status, 503, 'upgrade refused with 503')

  const draining = await fetch(`http://127.0.0.1:${port}/health/ws`)
  t.equal(draining.status, 503)
  const body = await draining.json()
  t.equal(body.status, 'draining')
  t.equal(body.draining, true)
  t.equal(body.connections.active, 1, 'the body carries wsStats')
  t.equal(body.connections.rejected, 1, 'the refused upgrade is counted')
  const withQuery = await fetch(`http://127.0.0.1:${port}/health/ws?probe=lb`)
  t.equal((await withQuery.json()).status, 'draining', 'a query string is still the health route')
  const post = await fetch(`http://127.0.0.1:${port}/health/ws`, { method: 'POST' })
  t.equal(post.status, 503, "other requests get Fastify's own 503")
  t.notOk((await post.json()).status)

  holder.destroy()
  await closing
})

t.test('health is off by default, and a health route can be added at any path', async (t) => {
  const off = await start({}, routes)
  t.equal((await fetch(`http://127.0.0.1:${off.port}/health/ws`)).status, 404)
  await off.app.close()
  const on = await start({ health: { path: '/status/ws' } }, routes)
  t.teardown(() => on.app.close())
  const res = await fetch(`http://127.0.0.1:${on.port}/status/ws?verbose=1`)
  t.equal(res.status, 200)
  t.match(await res.json(), { status: 'ok', connections: { active: 0 }, heartbeat: {}, messages: {}, routes: { '/ws': {} } })
})

t.test('close() without ever listening resolves', async (t) => {
  const app = Fastify()
  await app.register(reliableWs)
  app.get('/ws', { websocket: true }, () => {})
  await app.ready()
  await t.resolves(app.close())
})

const key = readFileSync(join(__dirname, '..', 'fixtures', 'localhost-key.pem'))
const cert = readFileSync(join(__dirname, '..', 'fixtures', 'localhost-cert.pem'))
// The first bytes of a ClientHello: a handshake record announcing 512 bytes, of which these few ever come.
const PARTIAL_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
const REQUEST = 'GET /http HTTP/1.1\r\nHost: x\r\n\r\n'
const HALF_REQUEST = 'GET /http HTTP/1.1\r\nHost: x\r\n'
// Bounds, not timings: a noisy 2-core machine.
const MARGIN = 500

/** A client that sends `data` (if any) and then nothing; it reads what comes, so it sees the server end it. */
async function hold (port: number, data?: string | Buffer): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  socket.resume()
  await once(socket, 'connect')
  if (data !== undefined) socket.write(data)
  return socket
}

/** A TLS client that has sent `request`, then holds the connection. */
async function holdTls (port: number, request: string): Promise<tls.TLSSocket> {
  const socket = tls.connect({ port, host: '127.0.0.1', ca: cert })
  socket.on('error', () => {})
  await once(socket, 'secureConnect')
  socket.write(request)
  return socket
}

/** Waits for the answer to the request `socket` has sent; then it sends `next`, if any. */
async function answered<S extends net.Socket> (socket: S, next?: string): Promise<S> {
  await once(socket, 'data')
  if (next !== undefined) socket.write(next)
  return socket
}

/** How long close() took, or null if it had not resolved `limitMs` after it was called. */
async function timeClose (app: FastifyInstance, limitMs: number): Promise<number | null> {
  const startedAt = performance.now()
  let limit: NodeJS.Timeout | undefined
  const closed = await Promise.race([
    app.close().then(() => true),
    new Promise<false>((resolve) => { limit = setTimeout(resolve, limitMs, false) })
  ])
  clearTimeout(limit)
  return closed ? performance.now() - startedAt : null
}

function took (elapsed: number | null): string {
  return elapsed === null ? 'close() had not resolved in time' : `close() took ${Math.round(elapsed)} ms`
}

function httpRoutes (app: FastifyInstance): void {
  routes(app)
  app.get('/http', async () => ({ ok: true }))
}

t.test('close() resolves within shutdown.timeoutMs whatever HTTP clients hold, and they are destroyed', async (t) => {
  const TIMEOUT = 200
  const { app, port } = await start({ heartbeat: false, shutdown: { timeoutMs: TIMEOUT } }, httpRoutes)
  const clients = {
    'a half-sent request': await hold(port, HALF_REQUEST),
    'a connection that sends nothing': await hold(port),
    'a kept-alive idle connection': await answered(await hold(port, REQUEST)),
    'a kept-alive connection half-way through its second request': await answered(await hold(port, REQUEST), HALF_REQUEST)
  }
  const peer = await RawPeer.connect(port, '/ws')
  // A websocket that reads nothing more: the close frame stays unread, no answer comes.
  peer.socket.pause()
  // Whatever happens, the test must not hang.
  t.teardown(() => { for (const socket of [...Object.values(clients), peer.socket]) socket.destroy() })
  const elapsed = await timeClose(app, TIMEOUT + MARGIN)
  t.ok(elapsed !== null && elapsed >= TIMEOUT * 0.9 && elapsed < TIMEOUT + MARGIN, took(elapsed))
  for (const [name, socket] of Object.entries(clients)) {
    await waitFor(() => socket.destroyed, 1000, name).catch(() => {})
    t.ok(socket.destroyed, `${name} was ended`)
  }
  t.equal(app.wsStats.limits.handshakeTimeouts, 0, 'not counted as handshake timeouts: shutdown cut them short')
  t.equal(app.wsStats.connections.active, 0, 'the websocket was terminated')
  // The peer's own end, which reads nothing, never learns.
  peer.destroy()
  t.same(await noHandlesLeft(), [])
})

t.test('close() resolves within shutdown.timeoutMs whatever TLS clients hold, handshakes in progress included', async (t) => {
  const TIMEOUT = 200
  const app = Fastify({ https: { key, cert } })
  // No handshake timeout: only shutdown can end these.
  await app.register(reliableWs, { heartbeat: false, shutdown: { timeoutMs: TIMEOUT }, limits: { handshakeTimeoutMs: Infinity } })
  httpRoutes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as net.AddressInfo).port
  const clients = {
    'a partial ClientHello': await hold(port, PARTIAL_CLIENT_HELLO),
    'a TCP connection that never starts its TLS handshake': await hold(port),
    'a half-sent request over TLS': await holdTls(port, HALF_REQUEST),
    'a kept-alive idle TLS connection': await answered(await holdTls(port, REQUEST)),
    'a kept-alive TLS connection half-way through its second request': await answered(await holdTls(port, REQUEST), HALF_REQUEST)
  }
  t.teardown(() => { for (const socket of Object.values(clients)) socket.destroy() })
  const elapsed = await timeClose(app, TIMEOUT + MARGIN)
  t.ok(elapsed !== null && elapsed >= TIMEOUT * 0.9 && elapsed < TIMEOUT + MARGIN, took(elapsed))
  for (const [name, socket] of Object.entries(clients)) {
    await waitFor(() => socket.destroyed, 1000, name).catch(() => {})
    t.ok(socket.destroyed, `${name} was ended`)
  }
  t.equal(app.wsStats.limits.handshakeTimeouts, 0)
  t.same(await noHandlesLeft(), [])
})

t.test('past shutdown.timeoutMs, a connection made while an app\'s own preClose hook still runs is refused', async (t) => {
  const TIMEOUT = 100
  const { app, port } = await start({ heartbeat: false, shutdown: { timeoutMs: TIMEOUT } }, (app) => {
    routes(app)
    // Runs after the plugin's: Fastify closes the server only once it is done.
    app.addHook('preClose', async () => { await sleep(TIMEOUT * 3) })
  })
  const sockets: net.Socket[] = []
  t.teardown(() => { for (const socket of sockets) socket.destroy() })
  const closing = timeClose(app, TIMEOUT * 3 + MARGIN)
  await sleep(TIMEOUT * 2)
  const late = await hold(port, 'GET / HTTP/1.1\r\n')
  sockets.push(late)
  await waitFor(() => late.destroyed, 100, 'the late connection to be refused').catch(() => {})
  t.ok(late.destroyed, 'refused at once')
  const elapsed = await closing
  t.ok(elapsed !== null && elapsed < TIMEOUT * 3 + MARGIN, took(elapsed))
})

t.test('websocket.options.server: past shutdown.timeoutMs the app\'s server keeps its own pending connections', async (t) => {
  const TIMEOUT = 100
  const other = http.createServer((_req, res) => res.end('other'))
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { other.closeAllConnections(); other.close() })
  const otherPort = (other.address() as net.AddressInfo).port
  const { app } = await start({
    heartbeat: false,
    shutdown: { timeoutMs: TIMEOUT },
    limits: { handshakeTimeoutMs: Infinity },
    websocket: { options: { server: other } }
  }, routes)
  // Ignores the close frame: holds close() until the deadline.
  const peer = await RawPeer.connect(otherPort, '/ws')
  const pending = await hold(otherPort, 'GET / HTTP/1.1\r\n')
  let answer = ''
  pending.on('data', (chunk: Buffer) => { answer += chunk.toString() })
  t.teardown(() => { peer.destroy(); pending.destroy() })
  const elapsed = await timeClose(app, TIMEOUT + MARGIN)
  t.ok(elapsed !== null && elapsed >= TIMEOUT * 0.9, took(elapsed))
  await waitFor(() => peer.ended, 1000, 'the websocket to be terminated')
  await sleep(50)
  t.notOk(pending.destroyed, 'close() does not wait for that server: its connections are the app\'s business')
  pending.write('Host: x\r\n\r\n')
  await waitFor(() => answer.endsWith('other'), 1000, 'the answer')
  t.match(answer, /^HTTP\/1\.1 200 OK[^]*other$/, 'and the app\'s server still answers it')
})
