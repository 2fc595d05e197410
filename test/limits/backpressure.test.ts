import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import type WebSocket from 'ws'
import { closeEvent, connect, sleep, start, waitFor } from '../helpers/helpers'

const HIGH = 256 * 1024
const LOW = 64 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 7)
// Far more than loopback's kernel buffers hold, so the server's own buffer must fill.
const FLOOD = 400

interface Flood { accepted: number, refused: number, errorCodes: string[], maxBuffered: number, drained: boolean }

function floodRoute (flood: Flood) {
  return (app: import('fastify').FastifyInstance) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('drain', () => { flood.drained = true })
      socket.on('message', () => {
        for (let i = 0; i < FLOOD; i++) {
          const accepted = socket.send(CHUNK, (err) => { if (err) flood.errorCodes.push((err as any).code) })
          if (accepted) flood.accepted++
          else flood.refused++
          flood.maxBuffered = Math.max(flood.maxBuffered, socket.bufferedAmount)
        }
      })
    })
  }
}

function newFlood (): Flood {
  return { accepted: 0, refused: 0, errorCodes: [], maxBuffered: 0, drained: false }
}

/** A client that asks for the flood, then stops reading its TCP socket. */
async function stalledClient (url: string): Promise<{ ws: WebSocket, received: () => number }> {
  const ws = await connect(url)
  let received = 0
  ws.on('message', () => received++)
  ws.send('go')
  ;(ws as any)._socket.pause()
  return { ws, received: () => received }
}

t.test("onLimit 'drop': messages above highWaterMark are dropped, memory stays bounded, 'drain' follows", async (t) => {
  const flood = newFlood()
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: LOW } }, floodRoute(flood))
  t.teardown(() => app.close())
  const { ws, received } = await stalledClient(url('/ws'))
  await waitFor(() => flood.accepted + flood.refused === FLOOD, 5000, 'the flood')

  t.ok(flood.refused > 0, `${flood.refused} of ${FLOOD} messages refused`)
  t.ok(flood.accepted > 0, `${flood.accepted} accepted`)
  t.ok(flood.maxBuffered <= HIGH + CHUNK.length * 2, `server buffer peaked at ${flood.maxBuffered} bytes`)
  await waitFor(() => flood.errorCodes.length === flood.refused, 1000, 'drop callbacks')
  t.same([...new Set(flood.errorCodes)], ['FST_RELIABLE_WS_DROPPED'], 'each dropped send calls back with a coded error')
  let stats = app.wsStats
  t.equal(stats.messages.dropped, flood.refused)
  t.equal(stats.messages.sent, flood.accepted)
  t.equal(stats.backpressure.events, 1, 'one crossing of highWaterMark')
  t.ok(stats.backpressure.bufferedBytes > HIGH && stats.backpressure.bufferedBytes <= HIGH + CHUNK.length * 2)
  t.notOk(flood.drained, 'no drain while the peer is stalled')

  ;(ws as any)._socket.resume()
  await waitFor(() => flood.drained, 5000, "'drain'")
  await waitFor(() => received() === flood.accepted, 5000, 'every accepted message')
  stats = app.wsStats
  t.equal(stats.backpressure.bufferedBytes, 0)
  t.equal(stats.connections.active, 1, 'the connection stayed open')
  ws.close()
})

t.test("onLimit 'close': the slow consumer gets 1013 after the data it was sent", async (t) => {
  const flood = newFlood()
  const disconnects: any[] = []
  const { app, url } = await start({
    heartbeat: false,
    backpressure: { highWaterMark: HIGH, lowWaterMark: LOW, onLimit: 'close' },
    shutdown: { timeoutMs: 3000 },
    onDisconnect: (_socket, info) => { disconnects.push(info) }
  }, floodRoute(flood))
  t.teardown(() => app.close())
  const { ws, received } = await stalledClient(url('/ws'))
  const closed = closeEvent(ws)
  await waitFor(() => flood.accepted + flood.refused === FLOOD, 5000, 'the flood')
  t.ok(flood.refused > 0)
  await sleep(50)
  ;(ws as any)._socket.resume()
  const { code, reason } = await closed
  t.equal(code, 1013)
  t.equal(reason, 'Slow consumer')
  t.equal(received(), flood.accepted, 'every accepted message arrived before the close frame')
  await waitFor(() => disconnects.length === 1)
  t.equal(disconnects[0].cause, 'backpressure')
  const stats = app.wsStats
  t.equal(stats.backpressure.slowConsumersClosed, 1)
  t.equal(stats.closeCodes['1013'], 1)
})

t.test("onLimit 'close': a consumer that never reads again is terminated after shutdown.timeoutMs", async (t) => {
  const flood = newFlood()
  const disconnects: any[] = []
  const TIMEOUT = 200
  const { app, url } = await start({
    heartbeat: false,
    backpressure: { highWaterMark: HIGH, lowWaterMark: LOW, onLimit: 'close' },
    shutdown: { timeoutMs: TIMEOUT },
    onDisconnect: (_socket, info) => { disconnects.push({ info, at: performance.now() }) }
  }, floodRoute(flood))
  t.teardown(() => app.close())
  const { ws } = await stalledClient(url('/ws'))
  await waitFor(() => flood.accepted + flood.refused === FLOOD, 5000, 'the flood')
  const refusedAt = performance.now()
  await waitFor(() => disconnects.length === 1, 3000, 'termination')
  const elapsed = disconnects[0].at - refusedAt
  t.ok(elapsed < TIMEOUT + 500, `terminated ${Math.round(elapsed)} ms after the close`)
  t.equal(disconnects[0].info.cause, 'backpressure')
  t.equal(disconnects[0].info.code, 1006)
  t.equal(app.wsStats.connections.active, 0)
  ws.terminate()
})

t.test('a route overrides backpressure field by field', async (t) => {
  const flood = newFlood()
  const { app, url } = await start({ heartbeat: false, backpressure: { lowWaterMark: LOW } }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { backpressure: { highWaterMark: HIGH } } } }, (socket) => {
      socket.on('message', () => {
        for (let i = 0; i < FLOOD; i++) {
          if (socket.send(CHUNK)) flood.accepted++
          else flood.refused++
          flood.maxBuffered = Math.max(flood.maxBuffered, socket.bufferedAmount)
        }
      })
    })
  })
  t.teardown(() => app.close())
  const { ws } = await stalledClient(url('/ws'))
  await waitFor(() => flood.accepted + flood.refused === FLOOD, 5000, 'the flood')
  t.ok(flood.refused > 0)
  t.ok(flood.maxBuffered <= HIGH + CHUNK.length * 2, 'the route limit applied, not the plugin default of 1 MiB')
  ws.terminate()
})

t.test('with permessage-deflate the queue inside ws counts too, and waiting for the drain does not starve compression', async (t) => {
  const flood = newFlood()
  const random = randomBytes(64 * 1024)
  const { app, url } = await start({
    heartbeat: false,
    backpressure: { highWaterMark: HIGH, lowWaterMark: LOW },
    compression: true
  }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('drain', () => { flood.drained = true })
      socket.on('message', () => {
        for (let i = 0; i < 50; i++) {
          if (socket.send(random)) flood.accepted++
          else flood.refused++
          flood.maxBuffered = Math.max(flood.maxBuffered, socket.bufferedAmount)
        }
      })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'), { perMessageDeflate: true })
  let received = 0
  ws.on('message', () => received++)
  let ticks = 0
  const ticker = setInterval(() => ticks++, 5)
  t.teardown(() => clearInterval(ticker))
  ws.send('go')
  await waitFor(() => flood.accepted + flood.refused === 50, 5000, 'the flood')
  t.ok(flood.refused > 0, `${flood.refused} refused while ws was still compressing`)
  t.ok(flood.maxBuffered <= HIGH + random.length)
  const ticksBefore = ticks
  await waitFor(() => flood.drained, 5000, "'drain'")
  await waitFor(() => received === flood.accepted, 5000, 'every accepted message')
  await sleep(30)
  t.ok(ticks > ticksBefore, 'timers kept running')
  t.equal(app.wsStats.backpressure.bufferedBytes, 0)
  ws.close()
})

t.test("lowWaterMark 0: 'drain' comes once everything is flushed", async (t) => {
  const flood = newFlood()
  let bufferedAtDrain = -1
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: 0 } }, floodRoute(flood))
  t.teardown(() => app.close())
  const { ws } = await stalledClient(url('/ws'))
  await waitFor(() => flood.accepted + flood.refused === FLOOD, 5000, 'the flood')
  t.ok(flood.refused > 0)
  const [socket] = app.websocketServer.clients
  socket.once('drain', () => { bufferedAtDrain = socket.bufferedAmount })
  ;(ws as any)._socket.resume()
  await waitFor(() => flood.drained, 5000, "'drain'")
  t.equal(bufferedAtDrain, 0)
  ws.close()
})

t.test("a 'drain' listener that throws closes that socket with 1011; the process and other sockets carry on", async (t) => {
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: LOW } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('drain', () => { throw new Error('bug in a drain listener') })
      socket.on('message', (data) => {
        if (data.toString() !== 'go') return socket.send(data)
        for (let i = 0; i < FLOOD && socket.send(CHUNK); i++);
      })
    })
  })
  t.teardown(() => app.close())
  const { ws } = await stalledClient(url('/ws'))
  const other = await connect(url('/ws'))
  await waitFor(() => app.wsStats.messages.dropped === 1, 5000, 'the flood')
  const closed = closeEvent(ws)
  ;(ws as any)._socket.resume()
  t.equal((await closed).code, 1011)
  t.equal(app.wsStats.errors, 1)
  const echoed = new Promise((resolve) => other.once('message', (data) => resolve(data.toString())))
  other.send('still here')
  t.equal(await echoed, 'still here')
  other.close()
})

t.test('a message sent in fragments is never cut by the policy, and the next one is refused', async (t) => {
  const results: boolean[] = []
  // Enough that the kernel's socket buffers cannot absorb it all.
  const FRAGMENTS = 150
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: LOW } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => {
        if (data.toString() !== 'go') return socket.send(data)
        for (let i = 0; i < FRAGMENTS; i++) results.push(socket.send(CHUNK, { fin: i === FRAGMENTS - 1 }))
        results.push(socket.send('after'))
      })
    })
  })
  t.teardown(() => app.close())
  const { ws } = await stalledClient(url('/ws'))
  await waitFor(() => results.length === FRAGMENTS + 1, 5000, 'the sends')
  t.ok(FRAGMENTS * CHUNK.length > HIGH * 2, 'the message is far above highWaterMark')
  t.same(results, [...Array(FRAGMENTS).fill(true), false], 'every fragment accepted, the message after it refused')
  const messages: Buffer[] = []
  ws.on('message', (data) => messages.push(data as Buffer))
  const closed = closeEvent(ws)
  ;(ws as any)._socket.resume()
  await waitFor(() => messages.length > 0, 5000, 'the whole message')
  t.equal(messages.length, 1, 'the refused message never went out')
  t.equal(messages[0].length, FRAGMENTS * CHUNK.length)
  ws.send('again')
  await waitFor(() => messages.length === 2, 5000, 'a message after it')
  t.equal(messages[1].length, 5)
  t.equal(app.wsStats.errors, 0)
  ws.close()
  t.equal((await closed).code, 1005, 'the stream stayed well-formed to the end')
})

t.test('send on a closing socket refuses at once: false, a coded error, nothing buffered', async (t) => {
  let result: { accepted: boolean, buffered: number, code?: string } | null = null
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.close(1000)
      const accepted = socket.send('too late', (err) => {
        result = { accepted, buffered: socket.bufferedAmount, code: (err as any)?.code }
      })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  await closeEvent(ws)
  await waitFor(() => result !== null)
  t.same(result, { accepted: false, buffered: 0, code: 'FST_RELIABLE_WS_NOT_OPEN' })
  t.equal(app.wsStats.messages.sent, 0)
  t.equal(app.wsStats.backpressure.bufferedBytes, 0)
})

t.test("'drain' comes after every backpressure episode, not only the first", async (t) => {
  const flood = newFlood()
  let drains = 0
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: LOW } }, floodRoute(flood))
  t.teardown(() => app.close())
  app.websocketServer.once('connection', (socket) => { socket.on('drain', () => { drains++ }) })
  const { ws, received } = await stalledClient(url('/ws'))
  for (let episode = 1; episode <= 2; episode++) {
    await waitFor(() => flood.accepted + flood.refused === FLOOD * episode, 5000, `flood ${episode}`)
    t.equal(app.wsStats.backpressure.events, episode, `episode ${episode}: highWaterMark crossed`)
    ;(ws as any)._socket.resume()
    await waitFor(() => drains === episode, 5000, `'drain' ${episode}`)
    await waitFor(() => received() === flood.accepted, 5000, `episode ${episode}: every accepted message`)
    if (episode === 2) break
    // Stalled again, and asked for another flood.
    ;(ws as any)._socket.pause()
    ws.send('again')
  }
  t.equal(drains, 2, "one 'drain' per episode")
  t.ok(flood.refused >= 2, `${flood.refused} refused over two episodes`)
  ws.close()
})
