import t from 'tap'
import type { FastifyInstance } from 'fastify'
import WebSocket from 'ws'
import { closeEvent, collect, connect, rawExchange, start, upgradeRequest, waitFor } from '../helpers/helpers'

/** Resolves with the HTTP status an upgrade attempt was refused with, or 101. */
function upgradeStatus (url: string, headers: Record<string, string> = {}): Promise<{ status: number, headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers })
    ws.on('open', () => { ws.terminate(); resolve({ status: 101, headers: {} }) })
    ws.on('unexpected-response', (_request, response) => {
      resolve({ status: response.statusCode!, headers: response.headers })
      response.resume()
      ws.terminate()
    })
    ws.on('error', (err) => { if (!/closed before the connection/.test(err.message)) reject(err) })
  })
}

function echo (app: FastifyInstance, path = '/ws', config: object = {}): void {
  app.get(path, { websocket: true, config: { reliable: config } }, (socket) => {
    socket.on('message', (data) => socket.send(data.toString()))
  })
}

t.test('allowedOrigins: an upgrade from another origin is answered 403 before the handshake, and counted', async (t) => {
  const { app, url, port } = await start({ heartbeat: false, allowedOrigins: ['https://app.example.com', 'http://localhost:3000'] }, (app) => echo(app))
  t.teardown(() => app.close())
  t.equal((await upgradeStatus(url('/ws'), { origin: 'https://evil.example' })).status, 403)
  t.equal((await upgradeStatus(url('/ws'), { origin: 'https://app.example.com.evil.example' })).status, 403)
  t.equal((await upgradeStatus(url('/ws'), { origin: 'null' })).status, 403, 'a sandboxed page sends "null"')
  t.equal((await upgradeStatus(url('/ws'), { origin: 'https://app.example.com' })).status, 101)
  t.equal((await upgradeStatus(url('/ws'), { origin: 'http://localhost:3000' })).status, 101)
  // ws sends no Origin unless told to: a client that is not a browser.
  t.equal((await upgradeStatus(url('/ws'))).status, 101, 'no Origin header: not a browser, let through')
  const response = await rawExchange(port, upgradeRequest(port, '/ws', ['Origin: https://evil.example']))
  t.notMatch(response, /101 Switching Protocols/)
  await waitFor(() => app.wsStats.connections.active === 0)
  const stats = app.wsStats
  t.equal(stats.limits.originRejected, 4)
  t.equal(stats.connections.rejected, 4)
  t.equal(stats.connections.opened, 3)
  const http = await app.inject({ url: '/ws', headers: { origin: 'https://evil.example' } })
  t.equal(http.statusCode, 404, 'a plain GET is not an upgrade: not counted')
  t.equal(app.wsStats.limits.originRejected, 4)
})

t.test('allowedOrigins as a function sees the origin and the request; a route replaces the plugin policy', async (t) => {
  const seen: Array<[string | undefined, string]> = []
  const { app, url } = await start({
    heartbeat: false,
    allowedOrigins (origin, request) {
      seen.push([origin, request.url])
      return origin !== undefined && origin.endsWith('.example.com')
    }
  }, (app) => {
    echo(app, '/ws')
    echo(app, '/public', { allowedOrigins: ['https://anyone.test'] })
  })
  t.teardown(() => app.close())
  t.equal((await upgradeStatus(url('/ws'), { origin: 'https://a.example.com' })).status, 101)
  t.equal((await upgradeStatus(url('/ws'))).status, 403, 'the function decides about a missing Origin too')
  t.same(seen, [['https://a.example.com', '/ws'], [undefined, '/ws']])
  t.equal((await upgradeStatus(url('/public'), { origin: 'https://anyone.test' })).status, 101)
  t.equal((await upgradeStatus(url('/public'), { origin: 'https://a.example.com' })).status, 403, 'the route list replaces the function')
  t.equal(seen.length, 2, 'the plugin function never ran for /public')
  t.equal(app.wsStats.limits.originRejected, 2)
})

t.test('auth with a Fastify hook: onRequest answers 401 before the upgrade; the identity reaches the handler', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.decorateRequest('user', null)
    app.register(async function authenticated (app) {
      app.addHook('onRequest', async (request, reply) => {
        const token = (request.query as { token?: string }).token
        if (token !== 'secret') return reply.code(401).send({ message: 'Unauthorized' })
        ;(request as unknown as { user: string }).user = 'alice'
      })
      app.get('/me', { websocket: true }, (socket, request) => {
        socket.send(JSON.stringify({ user: (request as unknown as { user: string }).user }))
      })
    })
  })
  t.teardown(() => app.close())
  const refused = await upgradeStatus(url('/me?token=wrong'))
  t.equal(refused.status, 401)
  t.equal((await upgradeStatus(url('/me'))).status, 401)
  const ws = await connect(url('/me?token=secret'))
  await waitFor(() => collect(ws).length === 1)
  t.same(collect(ws), [{ user: 'alice' }])
  const stats = app.wsStats
  t.equal(stats.connections.rejected, 2)
  t.equal(stats.connections.opened, 1, 'a refused upgrade never opened a socket')
  ws.close()
})

t.test('auth in preValidation works the same way, with a header', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', {
      websocket: true,
      preValidation (request, reply, done) {
        if (request.headers.authorization === 'Bearer ok') return done()
        reply.code(401).send()
      }
    }, (socket) => { socket.send('welcome') })
  })
  t.teardown(() => app.close())
  t.equal((await upgradeStatus(url('/ws'))).status, 401)
  const ws = await connect(url('/ws'), { headers: { authorization: 'Bearer ok' } })
  await waitFor(() => collect(ws).length === 1)
  t.same(collect(ws), ['welcome'])
  t.equal(app.wsStats.connections.rejected, 1)
  ws.close()
})

t.test('onConnect may refuse after the upgrade: 1008 with a generic reason, the error stays in the log', async (t) => {
  const logs: any[] = []
  const { app, url } = await start({
    heartbeat: false,
    onConnect (_socket, request) {
      if (request.headers['x-banned'] !== undefined) throw new Error('banned user 42 at /srv/app/bans.js:17')
    }
  }, (app) => echo(app), { logger: { level: 'warn', stream: { write: (line: string) => logs.push(JSON.parse(line)) } } })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'), { headers: { 'x-banned': '1' } })
  t.same(await closeEvent(ws), { code: 1008, reason: 'Connection refused' })
  await waitFor(() => logs.length === 1)
  t.equal(logs[0].err.message, 'banned user 42 at /srv/app/bans.js:17')
  t.type(logs[0].socketId, 'string', 'logged by a child logger carrying the socket id')
})
