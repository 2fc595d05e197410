import net from 'node:net'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import t from 'tap'
import type WebSocket from 'ws'
import reliableWs = require('../../index')
import type { Options } from '../helpers/helpers'
import { sleep, waitFor } from '../helpers/helpers'

// @fastify/websocket's injectWS: an upgrade with no TCP connection behind it, the usual way to test a route.
async function inject (t: { teardown: (fn: () => unknown) => void }, options: Options, init?: (ws: WebSocket) => void): Promise<{ app: FastifyInstance, ws: WebSocket }> {
  const app = Fastify()
  await app.register(reliableWs, options)
  app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(`echo:${String(d)}`)) })
  await app.ready()
  t.teardown(() => app.close())
  const ws = await app.injectWS('/ws', {}, { onInit: init })
  return { app, ws }
}

t.test('app.injectWS reaches a reliable route: messages and the close are counted, bytes stay numbers', async (t) => {
  const { app, ws } = await inject(t, { heartbeat: false })
  const reply = new Promise((resolve) => ws.once('message', (d) => resolve(String(d))))
  ws.send('hi')
  t.equal(await reply, 'echo:hi')
  const stats = app.wsStats
  t.same(stats.connections, { active: 1, peak: 1, opened: 1, closed: 0, rejected: 0 })
  t.same(stats.messages, { received: 1, sent: 1, dropped: 0, invalid: 0 })
  // Nothing counts bytes on an in-memory stream: 0, never NaN (null in JSON) poisoning every later total.
  t.same(stats.bytes, { received: 0, sent: 0 })
  // injectWS's streams carry no close from the client to the server (bare @fastify/websocket never sees it either).
  for (const socket of app.websocketServer.clients) socket.terminate()
  await waitFor(() => app.wsStats.connections.active === 0)
  t.same(app.wsStats.closeCauses, { server: 1 })
  t.same(app.wsStats.bytes, { received: 0, sent: 0 }, 'still numbers once a closed socket has been added in')
})

t.test("the heartbeat pings an injectWS client; as injectWS's client does not answer pings itself, one that does stays", async (t) => {
  const heartbeat = { intervalMs: 30, timeoutMs: 30 }
  const answering = await inject(t, { heartbeat }, (ws) => ws.on('ping', () => ws.pong()))
  const silent = await inject(t, { heartbeat })
  await waitFor(() => silent.app.wsStats.connections.active === 0, 2000, 'the silent client to be terminated')
  t.same(silent.app.wsStats.closeCauses, { heartbeat: 1 }, 'terminated for missing its heartbeat')
  await sleep(200)
  t.equal(answering.ws.readyState, answering.ws.OPEN, 'still open after several intervals')
  t.ok(answering.app.wsStats.heartbeat.pongsReceived >= 2, `${answering.app.wsStats.heartbeat.pongsReceived} pongs`)
  t.equal(answering.app.wsStats.heartbeat.timeouts, 0)
  answering.ws.terminate()
})

t.test('an injectWS upgrade that brings its own socket object (for request.ip) leaves the handshake guard alone', async (t) => {
  const app = Fastify()
  await app.register(reliableWs, { heartbeat: false, limits: { handshakeTimeoutMs: 100 } })
  const ips: string[] = []
  app.get('/ws', { websocket: true }, (_socket, request) => { ips.push(request.ip) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  // A real connection that never sends a request: the guard must still destroy it on time.
  const silent = net.connect((app.server.address() as net.AddressInfo).port, '127.0.0.1')
  silent.on('error', () => {})
  const closed = new Promise((resolve) => silent.once('close', resolve))
  const ws = await app.injectWS('/ws', { socket: { remoteAddress: '10.0.0.1' } } as any)
  t.same(ips, ['10.0.0.1'])
  await closed
  t.equal(app.wsStats.limits.handshakeTimeouts, 1, 'the silent connection timed out')
  for (const socket of app.websocketServer.clients) socket.terminate()
  ws.terminate()
})
