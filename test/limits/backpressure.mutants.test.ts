import { performance } from 'node:perf_hooks'
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type WebSocket from 'ws'
import { connect, sleep, start, waitFor } from '../helpers/helpers'

// Behaviours that mutation testing found unchecked (docs/testing.md).

const HIGH = 256 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 7)

/** A route that sends `count` chunks when asked, recording 'drain' events. */
function sender (count: number, drains: { n: number }) {
  return (app: import('fastify').FastifyInstance) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('drain', () => { drains.n++ })
      socket.on('message', () => { for (let i = 0; i < count; i++) socket.send(CHUNK) })
    })
  }
}

t.test("sends that stay below highWaterMark are no backpressure: no event counted, no 'drain'", async (t) => {
  const drains = { n: 0 }
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: 0 } }, sender(1, drains))
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  let received = 0
  ws.on('message', () => received++)
  for (let i = 0; i < 5; i++) {
    ws.send('go')
    await waitFor(() => received === i + 1, 3000, `message ${i + 1}`)
  }
  await sleep(30)
  t.equal(app.wsStats.backpressure.events, 0)
  t.equal(drains.n, 0)
  ws.terminate()
})

t.test('waiting for the drain of a stalled peer leaves the event loop idle (no polling)', async (t) => {
  const drains = { n: 0 }
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: 0 } }, sender(400, drains))
  t.teardown(() => app.close())
  const ws: WebSocket = await connect(url('/ws'))
  ws.send('go')
  ;(ws as any)._socket.pause()
  await waitFor(() => app.wsStats.backpressure.events === 1, 3000, 'the crossing')
  await sleep(50)
  const before = performance.eventLoopUtilization()
  await sleep(300)
  const { utilization } = performance.eventLoopUtilization(before)
  // Waiting on the kernel costs nothing; checking again every turn of the loop keeps it busy all the time.
  t.ok(utilization < 0.5, `event loop busy ${(utilization * 100).toFixed(0)} % of the wait`)
  t.equal(drains.n, 0, 'no drain while the peer is stalled')
  ;(ws as any)._socket.resume()
  await waitFor(() => drains.n === 1, 5000, "'drain'")
  ws.terminate()
})

t.test("with permessage-deflate, 'drain' waits for ws's own queue to fall to lowWaterMark, not for the next turn of the loop", async (t) => {
  // While ws compresses, messages wait in its queue and the TCP buffer may be empty: the check then runs on the
  // next turn of the event loop, when most of the queue is still there.
  const random = randomBytes(64 * 1024)
  const atDrain: number[] = []
  let accepted = 0
  const { app, url } = await start({
    heartbeat: false,
    backpressure: { highWaterMark: HIGH, lowWaterMark: 0 },
    compression: true
  }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('drain', () => { atDrain.push(socket.bufferedAmount) })
      socket.on('message', () => {
        for (let i = 0; i < 20; i++) if (socket.send(random)) accepted++
      })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'), { perMessageDeflate: true })
  let received = 0
  ws.on('message', () => received++)
  ws.send('go')
  await waitFor(() => atDrain.length > 0, 5000, "'drain'")
  await waitFor(() => received === accepted, 5000, 'every accepted message')
  t.ok(accepted > HIGH / random.length, `${accepted} accepted: the mark was crossed`)
  t.equal(app.wsStats.backpressure.events, 1)
  t.same(atDrain, [0], "one 'drain', with nothing left to send")
  ws.close()
})

t.test("a socket closed while it waits for the drain never emits 'drain'", async (t) => {
  const drains = { n: 0 }
  let closed = false
  const { app, url } = await start({ heartbeat: false, backpressure: { highWaterMark: HIGH, lowWaterMark: HIGH / 4 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('drain', () => { drains.n++ })
      socket.on('close', () => { closed = true })
      socket.on('message', () => {
        for (let i = 0; i < 400; i++) socket.send(CHUNK)
        // Over the mark, the check for the drain waits on the flush of what is buffered; the close frame follows it.
        socket.close(1000, 'done')
      })
    })
  })
  t.teardown(() => app.close())
  const ws: WebSocket = await connect(url('/ws'))
  let received = 0
  ws.on('message', () => received++)
  ;(ws as any)._socket.pause()
  ws.send('go')
  await waitFor(() => app.wsStats.backpressure.events === 1, 3000, 'the crossing')
  const [code] = await Promise.all([
    new Promise<number>((resolve) => ws.once('close', resolve)),
    (ws as any)._socket.resume()
  ])
  await waitFor(() => closed, 3000, 'the server side closed')
  await sleep(30)
  t.equal(code, 1000, 'the close frame came after everything buffered: the flush completed')
  t.ok(received > HIGH / CHUNK.length, `${received} messages received before the close`)
  t.equal(drains.n, 0, "no 'drain' on a closing socket")
})
