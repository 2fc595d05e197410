import { once } from 'node:events'
import http from 'node:http'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import type { WebSocket } from 'ws'
import { OPCODE, RawPeer, collect, connect, loopDelay, rawExchange, sleep, start, upgradeRequest, waitFor } from '../helpers/helpers'

t.test('a route heartbeat override merges over the plugin: a timeout left out follows the route interval', async (t) => {
  const lag = loopDelay()
  // The plugin's 30 s timeout would exceed the route's 60 ms interval, so the route's timeout becomes 60 ms.
  const { app, port } = await start({ heartbeat: { intervalMs: 30_000, timeoutMs: 30_000 } }, (app) => {
    app.get('/fast', { websocket: true, config: { reliable: { heartbeat: { intervalMs: 60 } } } }, () => {})
    app.get('/slow', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const startedAt = performance.now()
  const fast = await RawPeer.connect(port, '/fast')
  const slow = await RawPeer.connect(port, '/slow')
  await waitFor(() => fast.ended, 2000, 'the /fast peer to be terminated')
  const elapsed = performance.now() - startedAt
  const held = lag()
  t.ok(elapsed < 60 * 2 + 250 + held, `terminated after ${Math.round(elapsed)} ms`)
  t.notOk(slow.ended, 'the plugin default still applies elsewhere')
  t.equal(slow.count(OPCODE.ping), 0)
  slow.destroy()
})

t.test('a route timeout left out keeps the plugin timeout when it fits the route interval', async (t) => {
  const lag = loopDelay()
  const { app, port } = await start({ heartbeat: { intervalMs: 1000, timeoutMs: 40 } }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { heartbeat: { intervalMs: 500 } } } }, () => {})
  })
  t.teardown(() => app.close())
  const startedAt = performance.now()
  const peer = await RawPeer.connect(port, '/ws')
  await waitFor(() => peer.ended, 2000, 'termination')
  const elapsed = performance.now() - startedAt
  const held = lag()
  t.ok(elapsed < 500 + 40 + 250 + held, `terminated after ${Math.round(elapsed)} ms, within the route interval plus the plugin's 40 ms`)
  t.equal(peer.count(OPCODE.ping), 1)
})

t.test('heartbeat can be turned off for one route, or on for one route', async (t) => {
  const { app, port } = await start({ heartbeat: false }, (app) => {
    app.get('/on', { websocket: true, config: { reliable: { heartbeat: { intervalMs: 30 } } } }, () => {})
    app.get('/off', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const on = await RawPeer.connect(port, '/on')
  const off = await RawPeer.connect(port, '/off')
  await waitFor(() => on.ended, 2000, 'the /on peer to be terminated')
  t.notOk(off.ended)
  t.equal(off.count(OPCODE.ping), 0)
  off.destroy()
})

t.test('config.reliable: false is a plain @fastify/websocket route', async (t) => {
  const results: unknown[] = []
  const { app, port, url } = await start({ heartbeat: { intervalMs: 30 } }, (app) => {
    app.get('/plain', { websocket: true, config: { reliable: false } }, (socket) => {
      socket.on('message', (data) => { results.push(socket.send(data.toString())) })
    })
  })
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/plain')
  await sleep(200)
  t.equal(peer.count(OPCODE.ping), 0, 'no heartbeat')
  t.notOk(peer.ended)
  peer.destroy()
  const ws = await connect(url('/plain'))
  const replies = collect(ws)
  ws.send('hello')
  await waitFor(() => replies.length === 1)
  t.same(replies, ['hello'])
  t.same(results, [true], "send is ws's own (no policy), and says whether the socket was open")
  const stats = app.wsStats
  t.equal(stats.connections.opened, 0, 'not counted')
  t.equal(stats.messages.received, 0)
  t.same(stats.routes, {})
  ws.close()
})

t.test('a handler written for @fastify/websocket 11 works unchanged', async (t) => {
  const { app, url } = await start({}, (app) => {
    app.get('/echo', { websocket: true }, (socket, request) => {
      socket.on('message', (message) => {
        socket.send(`${request.query ? 'echo' : ''}: ${message.toString()}`)
      })
      socket.on('close', () => {})
    })
    app.register(async function (scoped) {
      scoped.get('/async', { websocket: true }, async (socket) => {
        socket.send('hi from an async handler')
      })
    }, { prefix: '/scoped' })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/echo'))
  const replies = collect(ws)
  ws.send('ping?')
  await waitFor(() => replies.length === 1)
  t.same(replies, ['echo: ping?'])
  ws.close()
  const scoped = await connect(url('/scoped/async'))
  const scopedReplies = collect(scoped)
  await waitFor(() => scopedReplies.length === 1)
  t.same(scopedReplies, ['hi from an async handler'])
  t.same(app.wsStats.routes['/scoped/async'], { active: 1, opened: 1, messagesReceived: 0, messagesSent: 1 },
    'a route in a child plugin is reliable too, keyed with its prefix')
  scoped.close()
})

t.test('a route declared with a method array', async (t) => {
  const { app, url } = await start({}, (app) => {
    app.route({ method: ['GET', 'HEAD'], url: '/multi', websocket: true, handler: (socket: any) => { socket.sendJSON({ multi: true }) } } as any)
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/multi'))
  await waitFor(() => collect(ws).length === 1)
  t.same(collect(ws), [{ multi: true }])
  t.equal(app.wsStats.routes['/multi'].opened, 1)
  ws.close()
})

t.test('a route with both an HTTP handler and a wsHandler', async (t) => {
  const { app, url, port } = await start({}, (app) => {
    app.route({
      method: 'GET',
      url: '/both',
      handler: (_request, reply) => { reply.send({ http: true }) },
      wsHandler: (socket) => { socket.sendJSON({ ws: true }) }
    })
  })
  t.teardown(() => app.close())
  t.same(await (await fetch(`http://127.0.0.1:${port}/both`)).json(), { http: true })
  const ws = await connect(url('/both'))
  const replies = collect(ws)
  await waitFor(() => replies.length === 1)
  t.same(replies, [{ ws: true }])
  t.equal(app.wsStats.routes['/both'].opened, 1)
  ws.close()
})

t.test('socket extensions: id, isAlive, latencyMs, sendJSON', async (t) => {
  const sockets: WebSocket[] = []
  const { app, url } = await start({}, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      sockets.push(socket)
      socket.sendJSON({ id: socket.id, isAlive: socket.isAlive, latencyMs: socket.latencyMs })
    })
  })
  t.teardown(() => app.close())
  const a = await connect(url('/ws'))
  const b = await connect(url('/ws'))
  const [ra, rb] = [collect(a), collect(b)] as any[][]
  await waitFor(() => ra.length === 1 && rb.length === 1)
  t.match(ra[0], { id: /^[0-9a-f]{32}$/, isAlive: true, latencyMs: null })
  t.not(ra[0].id, rb[0].id, 'ids are unique')
  t.throws(() => sockets[0].sendJSON(undefined), { code: 'FST_RELIABLE_WS_NOT_JSON' })
  t.throws(() => sockets[0].sendJSON({ big: 1n }), TypeError, 'a value JSON cannot represent throws')
  a.close()
  b.close()
  await waitFor(() => sockets.every((s) => s.readyState === s.CLOSED))
  t.equal(sockets[0].send('late'), false, 'a send after close is refused')
})

t.test('routes with very different intervals share the one scheduler', async (t) => {
  const { app, url } = await start({ heartbeat: { intervalMs: 2000 } }, (app) => {
    app.get('/fast', { websocket: true, config: { reliable: { heartbeat: { intervalMs: 20 } } } }, () => {})
    app.get('/slow', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const fast = await connect(url('/fast'))
  const slows = await Promise.all(Array.from({ length: 10 }, () => connect(url('/slow'))))
  let fastPings = 0
  const slowPings = slows.map(() => 0)
  fast.on('ping', () => fastPings++)
  slows.forEach((ws, i) => ws.on('ping', () => slowPings[i]++))
  // Long enough for the wheel to come round many times past the slow sockets' slots,
  // and for the slow sockets to reach their first ping (one 2 s interval after connecting).
  await sleep(2600)
  t.ok(fastPings >= 40, `${fastPings} pings on the 20 ms route`)
  t.same(slowPings, slows.map(() => 1), 'each slow socket pinged once in its 2 s interval')
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  t.equal(app.wsStats.connections.active, 11)
  for (const ws of [fast, ...slows]) ws.close()
})

t.test('websocket.options.server: upgrades come from that server, guarded there; Fastify\'s own answers them as HTTP', async (t) => {
  const other = http.createServer((req, res) => {
    if (req.url !== '/slow') return res.end('other')
    res.flushHeaders()
    setTimeout(() => res.end('late'), 100)
  })
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { other.closeAllConnections(); other.close() })
  const otherPort = (other.address() as net.AddressInfo).port
  const { app, port } = await start({ heartbeat: false, limits: { handshakeTimeoutMs: 100 }, websocket: { options: { server: other } } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(`echo:${String(d)}`)) })
    app.get('/plain', async () => 'plain')
  })
  t.teardown(() => app.close())
  const ws = await connect(`ws://127.0.0.1:${otherPort}/ws`)
  ws.send('a')
  await waitFor(() => collect(ws).length === 1)
  t.same(collect(ws), ['echo:a'])
  ws.close()
  // Without an 'upgrade' listener on Fastify's server, Node hands an upgrade request to Fastify like any request.
  const raw = net.connect(port, '127.0.0.1')
  raw.write(upgradeRequest(port, '/plain'))
  const [head] = await once(raw, 'data') as [Buffer]
  t.match(head.toString(), /^HTTP\/1\.1 200 OK/)
  raw.destroy()
  // Malformed HTTP there gets Node's own answers, as it would without the plugin, and is counted.
  t.match(await rawExchange(otherPort, 'NOT HTTP AT ALL\r\n\r\n'), /^HTTP\/1\.1 400 Bad Request\r\nConnection: close\r\n\r\n$/)
  t.match(await rawExchange(otherPort, `GET /ws HTTP/1.1\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`), /^HTTP\/1\.1 431 /)
  // Not in the middle of a response already on its way: its head is all the peer gets.
  const cut = await rawExchange(otherPort, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n')
  t.match(cut, /^HTTP\/1\.1 200 OK\r\n/)
  t.notMatch(cut, /400|late/)
  t.equal(app.wsStats.limits.protocolErrors, 3)
  // The handshake timeout watches the server the upgrades come to.
  const silent = net.connect(otherPort, '127.0.0.1')
  silent.on('error', () => {})
  await once(silent, 'close')
  t.equal(app.wsStats.limits.handshakeTimeouts, 1)
})

t.test('a route @fastify/websocket refuses is refused as it would be, and never counted in wsStats', async (t) => {
  const { app } = await start({}, (app) => {
    t.throws(() => app.get('/not-a-function', { websocket: true }, 'nope' as any), /invalid wsHandler function/)
    t.throws(() => app.route({ method: 'POST', url: '/post', handler: async () => 'x', wsHandler: () => {} }), /websocket handler can only be declared in GET method/)
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  t.same(Object.keys(app.wsStats.routes), ['/ws'])
})
