import t from 'tap'
import WebSocket from 'ws'
import { closeEvent, collect, connect, start, waitFor } from '../helpers/helpers'

const INVALID = '{"type":"error","message":"Invalid message"}'

/** Wire size of one frame with a payload under 126 bytes: clients mask (4 more bytes), servers do not. */
function frame (payload: string, masked: boolean): number {
  const length = Buffer.byteLength(payload)
  if (length >= 126) throw new Error('keep scripted payloads short')
  return 2 + (masked ? 4 : 0) + length
}
function closeFrame (reason: string, masked: boolean): number {
  return 2 + (masked ? 4 : 0) + 2 + Buffer.byteLength(reason)
}

t.test('exact wsStats after a scripted scenario', async (t) => {
  const { app, url, port } = await start({ heartbeat: false }, (app) => {
    app.get('/rooms/:id', { websocket: true, config: { reliable: { json: true } } }, (socket) => {
      socket.on('json', (message) => socket.sendJSON({ echo: message }))
    })
    app.get('/echo', { websocket: true }, (socket) => {
      socket.on('message', (data) => socket.send(data.toString()))
    })
    app.get('/stats', (_request, reply) => { reply.send(app.wsStats) })
  })
  t.teardown(() => app.close())

  const empty = app.wsStats
  t.same(empty.connections, { active: 0, peak: 0, opened: 0, closed: 0, rejected: 0 })
  t.same(empty.messages, { received: 0, sent: 0, dropped: 0, invalid: 0 })
  t.same(empty.bytes, { received: 0, sent: 0 })

  const a = await connect(url('/rooms/1'))
  const b = await connect(url('/rooms/2'))
  const c = await connect(url('/echo'))
  const [repliesA, repliesC] = [collect(a), collect(c)]

  a.send('{"a":1}')
  a.send('bad')
  a.send('{"b":2}')
  c.send('hi')
  await waitFor(() => repliesA.length === 3 && repliesC.length === 1)

  const closedB = closeEvent(b)
  const closedC = closeEvent(c)
  b.close(4000, 'bye')
  c.close(1000)
  await Promise.all([closedB, closedC])
  await waitFor(() => app.wsStats.connections.active === 1)

  const stats = app.wsStats
  t.same(stats.connections, { active: 1, peak: 3, opened: 3, closed: 2, rejected: 0 })
  t.same(stats.messages, { received: 4, sent: 4, dropped: 0, invalid: 1 })
  t.same(stats.closeCodes, { 1000: 1, 4000: 1 })
  t.same(stats.routes, {
    '/rooms/:id': { active: 1, opened: 2, messagesReceived: 3, messagesSent: 3 },
    '/echo': { active: 0, opened: 1, messagesReceived: 1, messagesSent: 1 }
  }, 'routes are keyed by the declared path, not the request URL')
  t.same(stats.heartbeat, { pingsSent: 0, pongsReceived: 0, timeouts: 0, latencyMs: { p50: null, p99: null } })
  t.same(stats.backpressure, { events: 0, bufferedBytes: 0, slowConsumersClosed: 0 })
  t.equal(stats.errors, 0)
  t.equal(stats.draining, false)
  t.type(stats.uptimeMs, 'number')

  const received = frame('{"a":1}', true) + frame('bad', true) + frame('{"b":2}', true) + frame('hi', true) +
    closeFrame('bye', true) + closeFrame('', true)
  const sent = frame('{"echo":{"a":1}}', false) + frame(INVALID, false) + frame('{"echo":{"b":2}}', false) + frame('hi', false) +
    closeFrame('bye', false) + closeFrame('', false)
  t.same(stats.bytes, { received, sent }, 'wire bytes after the handshake, frame headers included')

  const served = await (await fetch(`http://127.0.0.1:${port}/stats`)).json()
  t.same(served.connections, stats.connections, 'reply.send(app.wsStats) works')
  t.same(JSON.parse(JSON.stringify(stats)), stats, 'a plain JSON-serialisable object')
  t.not(app.wsStats, app.wsStats, 'a fresh snapshot on every read')
  a.close()
})

t.test('an upgrade refused by a hook counts as rejected', async (t) => {
  let responses = 0
  const { app, url } = await start({}, (app) => {
    app.get('/private', {
      websocket: true,
      onResponse: (_request, _reply, done) => { responses++; done() },
      onRequest: (request, reply, done) => {
        if (request.headers.authorization === 'Bearer ok') return done()
        reply.code(401).send({ error: 'Unauthorized' })
      }
    }, (socket) => { socket.send('welcome') })
  })
  t.teardown(() => app.close())
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(url('/private'))
    ws.on('unexpected-response', (_req, res) => { resolve(res.statusCode!); res.resume() })
    ws.on('error', () => {})
  })
  t.equal(status, 401)
  const ws = await connect(url('/private'), { headers: { authorization: 'Bearer ok' } })
  await waitFor(() => collect(ws).length === 1)
  await waitFor(() => app.wsStats.connections.rejected === 1)
  t.same(app.wsStats.connections, { active: 1, peak: 1, opened: 1, closed: 0, rejected: 1 })
  t.equal(responses, 1, "the route's own onResponse hook still runs")
  ws.close()
})
