import t from 'tap'
import type { WebSocket } from 'ws'
import { OPCODE, RawPeer, buildFrame, sleep, start, waitFor } from '../helpers/helpers'

// Behaviours that mutation testing found unchecked (docs/testing.md).

t.test("a socket the application paused stays paused when messages over the rate arrive: the limiter's yield does not resume it", async (t) => {
  const received: string[] = []
  let paused: WebSocket | null = null
  const { app, port } = await start({ heartbeat: false, limits: { messagesPerSecond: 1, burst: 1, onRateLimit: 'drop' } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => {
        received.push(data.toString())
        socket.pause()
        paused = socket
      })
    })
  })
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws')
  t.teardown(() => peer.destroy())
  // One TCP write: ws parses every frame of the chunk it has read, paused or not, so the rest are refused after the pause.
  peer.socket.write(Buffer.concat(['m0', 'm1', 'm2', 'm3'].map((payload) => buildFrame({ opcode: OPCODE.text, payload }))))
  await waitFor(() => app.wsStats.limits.rateLimited === 3, 3000, 'three refused')
  await sleep(30)
  t.same(received, ['m0'])
  t.equal(paused!.isPaused, true, 'still paused, as the application left it')
})

t.test('over its rate a peer is read one chunk per turn of the event loop: paused after the chunk, read again on the next turn', async (t) => {
  const received: string[] = []
  // Whether the socket was paused once ws had parsed each TCP chunk.
  const pausedAfterChunk: boolean[] = []
  const { app, port } = await start({ heartbeat: false, limits: { messagesPerSecond: 1, burst: 1, onRateLimit: 'drop' } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      // Added after ws's own 'data' listener: runs once ws has parsed the chunk.
      ;(socket as any)._socket.on('data', () => { pausedAfterChunk.push(socket.isPaused) })
      socket.on('message', (data) => { received.push(data.toString()) })
    })
  })
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws')
  t.teardown(() => peer.destroy())
  peer.socket.write(Buffer.concat(['m0', 'm1', 'm2'].map((payload) => buildFrame({ opcode: OPCODE.text, payload }))))
  await waitFor(() => app.wsStats.limits.rateLimited === 2, 3000, 'two refused')
  t.equal(pausedAfterChunk[0], true, 'paused right after the chunk that went over the rate')
  // A second later the bucket has a message again: the socket was resumed, so it is read.
  await sleep(1050)
  peer.send(OPCODE.text, 'later')
  await waitFor(() => received.length === 2, 3000, 'the message sent within the rate')
  t.same(received, ['m0', 'later'])
})
