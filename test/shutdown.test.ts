import { performance } from 'node:perf_hooks'
import t from 'tap'
import Fastify from 'fastify'
import WebSocket from 'ws'
import reliableWs = require('../index')
import { RawPeer, closeEvent, connect, start, waitFor } from './helpers'

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
