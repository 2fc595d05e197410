import t from 'tap'
import type { WebSocket } from 'ws'
import { OPCODE, RawPeer, buildFrame, sleep, start, waitFor } from './helpers'

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
