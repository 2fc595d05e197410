import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { ConnectionLimiter } from '../../lib/limits/connection-limiter'
import type { Route, ReliableSocket } from '../../lib/core/shapes'
import { kIp } from '../../lib/core/symbols'
import { closeEvent, connect, sleep, start, waitFor } from '../helpers/helpers'
import WebSocket from 'ws'

interface Attempt { status: number, retryAfter?: string, body?: string, ws?: WebSocket }

/** An upgrade attempt: 101 with the open client, or the status, Retry-After and body it was refused with. */
function attempt (url: string, headers: Record<string, string> = {}): Promise<Attempt> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers })
    ws.on('open', () => resolve({ status: 101, ws }))
    ws.on('unexpected-response', (_request, response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => {
        resolve({ status: response.statusCode!, retryAfter: response.headers['retry-after'] as string, body })
        ws.terminate()
      })
    })
    ws.on('error', (err) => { if (!/closed before the connection/.test(err.message)) reject(err) })
  })
}

function route (app: FastifyInstance, path = '/ws', limits: object = {}): void {
  app.get(path, { websocket: true, config: { reliable: { limits } } }, () => {})
}

t.test('over maxConnections an upgrade is answered 503 with Retry-After, before the handshake', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnections: 2 } }, (app) => route(app))
  t.teardown(() => app.close())
  const a = await attempt(url('/ws'))
  const b = await attempt(url('/ws'))
  t.same([a.status, b.status], [101, 101])
  const refused = await attempt(url('/ws'))
  t.equal(refused.status, 503)
  t.equal(refused.retryAfter, '5')
  t.same(JSON.parse(refused.body!), { statusCode: 503, error: 'Service Unavailable', message: 'Too many connections' })
  let stats = app.wsStats
  t.equal(stats.limits.maxConnectionsRejected, 1)
  t.equal(stats.connections.rejected, 1)
  t.equal(stats.connections.opened, 2)
  a.ws!.close()
  await waitFor(() => app.wsStats.connections.active === 1)
  const again = await attempt(url('/ws'))
  t.equal(again.status, 101, 'a freed place is taken again')
  stats = app.wsStats
  t.equal(stats.connections.active, 2)
  const plain = await app.inject('/ws')
  t.equal(plain.statusCode, 404, 'a plain GET of a full websocket route is not an upgrade: not refused, not counted')
  t.equal(app.wsStats.limits.maxConnectionsRejected, 1)
  b.ws!.terminate()
  again.ws!.terminate()
})

t.test('concurrent upgrades behind a slow auth hook never overshoot maxConnections', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnections: 5 } }, (app) => {
    app.addHook('preValidation', async () => { await sleep(Math.random() * 30) })
    route(app)
  })
  t.teardown(() => app.close())
  const results = await Promise.all(Array.from({ length: 20 }, () => attempt(url('/ws'))))
  t.equal(results.filter((r) => r.status === 101).length, 5)
  t.equal(results.filter((r) => r.status === 503).length, 15)
  t.equal(app.wsStats.connections.peak, 5)
  for (const r of results) r.ws?.terminate()
})

t.test('over maxConnectionsPerIp an upgrade is answered 429 with Retry-After; the address is request.ip (trustProxy)', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnectionsPerIp: 2 } }, (app) => {
    route(app, '/a')
    route(app, '/b')
  }, { trustProxy: true })
  t.teardown(() => app.close())
  const alice = { 'x-forwarded-for': '203.0.113.7' }
  const first = await attempt(url('/a'), alice)
  const second = await attempt(url('/b'), alice)
  t.same([first.status, second.status], [101, 101])
  const third = await attempt(url('/a'), alice)
  t.equal(third.status, 429, 'the count spans routes')
  t.equal(third.retryAfter, '5')
  t.same(JSON.parse(third.body!), { statusCode: 429, error: 'Too Many Requests', message: 'Too many connections from this address' })
  t.equal((await attempt(url('/a'), { 'x-forwarded-for': '198.51.100.1' })).status, 101, 'another address is not affected')
  const stats = app.wsStats
  t.equal(stats.limits.perIpRejected, 1)
  t.equal(stats.connections.rejected, 1)
  const closed = closeEvent(first.ws!)
  first.ws!.close()
  await closed
  await waitFor(() => app.wsStats.connections.active === 2)
  t.equal((await attempt(url('/a'), alice)).status, 101, 'a closed socket frees its place')
})

t.test('without trustProxy, X-Forwarded-For is ignored: every client here is 127.0.0.1', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnectionsPerIp: 1 } }, (app) => route(app))
  t.teardown(() => app.close())
  const first = await attempt(url('/ws'), { 'x-forwarded-for': '203.0.113.7' })
  const second = await attempt(url('/ws'), { 'x-forwarded-for': '198.51.100.1' })
  t.same([first.status, second.status], [101, 429])
  first.ws!.terminate()
})

t.test('a route may set its own threshold: a low-priority route is shed first', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnections: 3 } }, (app) => {
    route(app, '/important')
    route(app, '/feed', { maxConnections: 1 })
  })
  t.teardown(() => app.close())
  const important = await attempt(url('/important'))
  t.equal((await attempt(url('/feed'))).status, 503, 'one socket open: /feed is already full')
  const more = [await attempt(url('/important')), await attempt(url('/important'))]
  t.same(more.map((r) => r.status), [101, 101])
  t.equal((await attempt(url('/important'))).status, 503)
  t.equal(app.wsStats.limits.maxConnectionsRejected, 2)
  for (const r of [important, ...more]) r.ws!.terminate()
})

t.test('an opted-out route is neither limited nor counted', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnections: 1 } }, (app) => {
    route(app, '/ws')
    app.get('/plain', { websocket: true, config: { reliable: false } }, () => {})
  })
  t.teardown(() => app.close())
  const reliable = await connect(url('/ws'))
  const plain = [await attempt(url('/plain')), await attempt(url('/plain'))]
  t.same(plain.map((r) => r.status), [101, 101])
  t.equal(app.wsStats.connections.active, 1)
  reliable.terminate()
  for (const r of plain) r.ws!.terminate()
})

t.test('the per-address map forgets an address with its last socket', async (t) => {
  const limiter = new ConnectionLimiter()
  limiter.useLimits({ limits: { maxConnectionsPerIp: 10 } } as unknown as Route)
  const sockets = Array.from({ length: 1000 }, (_, i) => ({ [kIp]: `10.0.${i % 250}.${i % 3}` }) as unknown as ReliableSocket)
  for (const socket of sockets) limiter.opened(socket[kIp]!)
  t.equal(limiter.addresses, 750)
  t.equal(limiter.countOf('10.0.0.0'), 2)
  for (const socket of sockets) limiter.closed(socket)
  t.equal(limiter.addresses, 0, 'no entry is left behind at zero')
  t.equal(limiter.countOf('10.0.0.0'), 0)
})

t.test('without a per-address limit no address is kept at all', async (t) => {
  const limiter = new ConnectionLimiter()
  limiter.useLimits({ limits: { maxConnectionsPerIp: Infinity } } as unknown as Route)
  const socket = { [kIp]: '10.0.0.1' } as unknown as ReliableSocket
  limiter.opened(socket[kIp]!)
  t.equal(limiter.addresses, 0)
  limiter.closed(socket)
  t.equal(limiter.addresses, 0)
})
