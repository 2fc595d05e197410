import t from 'tap'
import { OPCODE, RawPeer, closeEvent, collect, connect, sleep, start, waitFor } from '../helpers/helpers'

t.test('onConnect runs before the handler and onDisconnect reports how the socket ended', async (t) => {
  const events: string[] = []
  const infos: any[] = []
  const { app, url } = await start({
    heartbeat: false,
    onConnect (socket, request) { events.push(`connect ${request.url} ${typeof socket.id}`) },
    onDisconnect (socket, info) { events.push(`disconnect ${socket.id.length}`); infos.push(info) }
  }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      events.push('handler')
      socket.on('message', (data) => { if (data.toString() === 'bye') socket.close(4001, 'server says bye') })
    })
  })
  t.teardown(() => app.close())
  const client = await connect(url('/ws'))
  const server = await connect(url('/ws'))
  const closedByClient = closeEvent(client)
  client.close(4000, 'done')
  await closedByClient
  const closedByServer = closeEvent(server)
  server.send('bye')
  t.same(await closedByServer, { code: 4001, reason: 'server says bye' })
  await waitFor(() => infos.length === 2)
  t.same(events.slice(0, 4), ['connect /ws string', 'handler', 'connect /ws string', 'handler'])
  t.match(infos[0], { code: 4000, reason: 'done', cause: 'client' })
  t.match(infos[1], { code: 4001, reason: 'server says bye', cause: 'server' })
  t.type(infos[0].durationMs, 'number')
  t.ok(infos[0].durationMs >= 0)
})

t.test('a peer gone before an async onConnect settles never reaches the handler', async (t) => {
  let handlerRan = false
  let connected = 0
  const { app, url } = await start({
    heartbeat: false,
    // Far longer than the peer's close takes to reach the server, even on a loaded machine.
    async onConnect () { connected++; await sleep(500) }
  }, (app) => {
    app.get('/ws', { websocket: true }, () => { handlerRan = true })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.terminate()
  await waitFor(() => app.wsStats.connections.active === 0)
  await sleep(550)
  t.equal(connected, 1)
  t.notOk(handlerRan)
})

t.test('app.close() during an async onConnect completes the closing handshake once the hook settles', async (t) => {
  let handlerRan = false
  const { app, url } = await start({
    heartbeat: false,
    // The socket is paused while onConnect runs; left paused, it would wait out this timeout for the peer's close frame.
    shutdown: { timeoutMs: 10_000 },
    async onConnect () { await sleep(200) }
  }, (app) => {
    app.get('/ws', { websocket: true }, () => { handlerRan = true })
  })
  const ws = await connect(url('/ws'))
  const closed = closeEvent(ws)
  const startedAt = Date.now()
  await app.close()
  const elapsed = Date.now() - startedAt
  t.equal((await closed).code, 1001)
  t.ok(elapsed < 2000, `close() resolved in ${elapsed} ms`)
  t.notOk(handlerRan, 'a socket already closing never reaches the handler')
})

t.test('while an async onConnect is pending, a peer that stops answering is still found by the heartbeat and idle timeout', async (t) => {
  for (const [options, cause] of [[{ heartbeat: { intervalMs: 50, timeoutMs: 50 } }, 'heartbeat'], [{ heartbeat: false, limits: { idleTimeoutMs: 100 } }, 'idle']] as const) {
    const infos: any[] = []
    const { app, port } = await start({
      ...options,
      onConnect: () => new Promise(() => {}),
      onDisconnect: (_socket, info) => { infos.push(info) }
    }, (app) => { app.get('/ws', { websocket: true }, () => {}) })
    t.teardown(() => app.close())
    // A raw peer answers no ping and sends nothing: dead, as far as the server can tell.
    const peer = await RawPeer.connect(port, '/ws')
    if (cause === 'idle') await waitFor(() => peer.closeCode() !== null, 2000, 'the idle close').then(() => peer.socket.destroy())
    await waitFor(() => infos.length === 1, 2000, `the ${cause} close`)
    t.equal(infos[0].cause, cause)
  }
})

t.test('an async onConnect holds messages until the handler listens', async (t) => {
  const received: string[] = []
  const { app, url } = await start({
    heartbeat: false,
    async onConnect () { await sleep(50) }
  }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => { received.push(data.toString()) })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.send('sent right after open')
  await waitFor(() => received.length === 1, 2000, 'the early message')
  t.same(received, ['sent right after open'])
  ws.close()
})

for (const [name, onConnect] of [
  ['throws', () => { throw new Error('/secret/path/to/file.js: no token') }],
  ['rejects', async () => { throw new Error('no token') }]
] as const) {
  t.test(`an onConnect that ${name} refuses the connection with 1008`, async (t) => {
    let handlerRan = false
    // A socket left paused would not read the peer's answering close frame and would wait out this timeout.
    const { app, url } = await start({ heartbeat: false, onConnect, shutdown: { timeoutMs: 10_000 } }, (app) => {
      app.get('/ws', { websocket: true }, () => { handlerRan = true })
    })
    t.teardown(() => app.close())
    const startedAt = Date.now()
    const ws = await connect(url('/ws'))
    const { code, reason } = await closeEvent(ws)
    t.equal(code, 1008)
    t.equal(reason, 'Connection refused', 'the error message stays on the server')
    t.notOk(handlerRan)
    await waitFor(() => app.wsStats.connections.active === 0, 9000)
    const elapsed = Date.now() - startedAt
    t.ok(elapsed < 2000, `the closing handshake completed at once (${elapsed} ms)`)
    t.equal(app.wsStats.closeCodes['1008'], 1)
  })
}

t.test('a handler that throws or rejects closes its socket with 1011 and counts an error', async (t) => {
  const infos: any[] = []
  const { app, url } = await start({ heartbeat: false, onDisconnect: (_s, info) => { infos.push(info) } }, (app) => {
    app.get('/sync', { websocket: true }, () => { throw new Error('sync bug') })
    app.get('/async', { websocket: true }, async () => { throw new Error('async bug') })
    app.get('/fine', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(d.toString())) })
  })
  t.teardown(() => app.close())
  const fine = await connect(url('/fine'))
  for (const path of ['/sync', '/async']) {
    const ws = await connect(url(path))
    t.same(await closeEvent(ws), { code: 1011, reason: 'Internal server error' }, path)
  }
  await waitFor(() => infos.length === 2)
  t.same(infos.map((info) => info.cause), ['error', 'error'])
  t.equal(app.wsStats.errors, 2)
  fine.send('still fine')
  await waitFor(() => collect(fine).length === 1)
  t.same(collect(fine), ['still fine'], 'other clients are not affected')
  fine.close()
})

t.test('a throwing or rejecting onDisconnect is logged, not fatal', async (t) => {
  const logs: any[] = []
  let calls = 0
  const { app, url } = await start({
    heartbeat: false,
    onDisconnect () {
      calls++
      if (calls === 1) throw new Error('sync hook bug')
      return Promise.reject(new Error('async hook bug'))
    }
  }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  }, {
    logger: { level: 'error', stream: { write: (line: string) => logs.push(JSON.parse(line)) } }
  })
  t.teardown(() => app.close())
  for (let i = 0; i < 2; i++) {
    const ws = await connect(url('/ws'))
    ws.close()
    await closeEvent(ws)
  }
  await waitFor(() => logs.length === 2)
  t.same(logs.map((log) => log.err.message), ['sync hook bug', 'async hook bug'])
  t.ok(logs.every((log) => typeof log.socketId === 'string'), 'logged with the socket id')
})

t.test('terminate() by the app reports cause server; an opted-out route keeps the default error handling', async (t) => {
  const infos: any[] = []
  const { app, url } = await start({ heartbeat: false, onDisconnect: (_s, info) => { infos.push(info) } }, (app) => {
    app.get('/kill', { websocket: true }, (socket) => { socket.terminate() })
    app.get('/plain', { websocket: true, config: { reliable: false } }, () => { throw new Error('plain bug') })
  }, { logger: { level: 'fatal' } })
  t.teardown(() => app.close())
  const killed = await connect(url('/kill'))
  t.equal((await closeEvent(killed)).code, 1006)
  await waitFor(() => infos.length === 1)
  t.equal(infos[0].cause, 'server')
  const plain = await connect(url('/plain'))
  t.equal((await closeEvent(plain)).code, 1006, "@fastify/websocket's default: log and terminate")
  t.equal(app.wsStats.errors, 0, 'not counted')
})

t.test("the app's own websocket.errorHandler still sees errors, and they are counted", async (t) => {
  const seen: string[] = []
  const { app, url } = await start({
    heartbeat: false,
    websocket: {
      errorHandler (error, socket) {
        seen.push(error.message)
        socket.close(4500, 'custom')
      }
    }
  }, (app) => {
    app.get('/ws', { websocket: true }, () => { throw new Error('boom') })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  t.same(await closeEvent(ws), { code: 4500, reason: 'custom' })
  t.same(seen, ['boom'])
  t.equal(app.wsStats.errors, 1)
})

t.test('websocket.errorHandler: null or false means none, as for @fastify/websocket: a throwing handler gets 1011', async (t) => {
  for (const errorHandler of [null, false]) {
    const { app, url } = await start({ heartbeat: false, websocket: { errorHandler: errorHandler as any } }, (app) => {
      app.get('/ws', { websocket: true }, () => { throw new Error('boom') })
    }, { logger: { level: 'fatal' } })
    t.teardown(() => app.close())
    const ws = await connect(url('/ws'))
    t.same(await closeEvent(ws), { code: 1011, reason: 'Internal server error' }, String(errorHandler))
    t.equal(app.wsStats.errors, 1)
  }
})

t.test('websocket.options reach ws: maxPayload closes an oversized message with 1009', async (t) => {
  const infos: any[] = []
  const { app, url } = await start({
    heartbeat: false,
    websocket: { options: { maxPayload: 1024 } },
    onDisconnect: (_s, info) => { infos.push(info) }
  }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(d)) })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.on('error', () => {})
  ws.send(Buffer.alloc(2048))
  const { code } = await closeEvent(ws)
  t.equal(code, 1009)
  await waitFor(() => infos.length === 1)
  t.equal(infos[0].cause, 'error')
  t.equal(app.wsStats.errors, 1)
})

t.test('maxPayload defaults to 1 MiB', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(`${(d as Buffer).length}`)) })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.on('error', () => {})
  ws.send(Buffer.alloc(1024 * 1024))
  await waitFor(() => collect(ws).length === 1)
  t.same(collect(ws), [1024 * 1024], 'exactly 1 MiB is accepted')
  ws.send(Buffer.alloc(1024 * 1024 + 1))
  t.equal((await closeEvent(ws)).code, 1009)
})

t.test('a protocol error from one peer closes it with 1002, counted, and others carry on', async (t) => {
  const { app, url, port } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(d.toString())) })
  }, { logger: { level: 'fatal' } })
  t.teardown(() => app.close())
  const good = await connect(url('/ws'))
  const bad = await RawPeer.connect(port, '/ws')
  // An unmasked client frame: RFC 6455 requires the server to fail the connection.
  bad.socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]))
  await waitFor(() => bad.ended, 2000, 'the bad peer to be closed')
  const close = bad.frames.find((frame) => frame.opcode === OPCODE.close)
  t.equal(close?.payload.readUInt16BE(0), 1002)
  await waitFor(() => app.wsStats.connections.active === 1)
  t.equal(app.wsStats.errors, 1)
  t.same(app.wsStats.closeCodes, { 1002: 1 }, 'the code ws sent, although it read no answer (its close event says 1006)')
  good.send('still here')
  await waitFor(() => collect(good).length === 1)
  t.same(collect(good), ['still here'])
  good.close()
})

t.test('an error once the socket is closing is logged at warn; a frame ws refused, at info', async (t) => {
  const logs: any[] = []
  const { app, url, port } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.close(4000, 'done')
      throw new Error('after close')
    })
    app.get('/echo', { websocket: true }, () => {})
  }, { logger: { level: 'info', stream: { write: (line: string) => logs.push(JSON.parse(line)) } } })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  t.equal((await closeEvent(ws)).code, 4000, 'the close already started keeps its code')
  const bad = await RawPeer.connect(port, '/echo')
  bad.socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]))
  await waitFor(() => bad.ended)
  await waitFor(() => logs.filter((log) => log.msg === 'websocket connection error').length === 2)
  const errors = logs.filter((log) => log.msg === 'websocket connection error')
  t.same(errors.map((log) => [log.level, log.err.message]), [[40, 'after close'], [30, 'Invalid WebSocket frame: MASK must be set']])
  t.ok(errors.every((log) => typeof log.socketId === 'string'))
})
